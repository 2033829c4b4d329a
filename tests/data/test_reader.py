"""SuperviselyDataset reads what the SDK's own COCO export says is there, fast and cached."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from src.data.geometry import crop_to_rle, object_to_instance
from src.data.reader import (
    DatasetError,
    list_datasets,
    load_split,
    read_instances,
    to_coco,
)

CLASSES = ["triangle", "square", "circle"]  # not the meta order: labels must follow this one


def _area(rle: dict) -> float:
    counts = rle["counts"]
    rle = {"size": rle["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
    return float(mask_utils.area(rle))


def _sdk_coco_instances(project: Path, tmp_path: Path) -> dict[str, dict[str, list[dict]]]:
    """dataset short name -> image file name -> instances, via sly to_coco + mmdet CocoDataset."""
    import supervisely as sly
    from mmdet.datasets import CocoDataset

    out = tmp_path / "coco"
    sly.Project(str(project), sly.OpenMode.READ).to_coco(str(out), log_progress=False)
    result = {}
    for ann_file in sorted(out.glob("*/annotations/coco_instances.json")):
        dataset = CocoDataset(
            ann_file=str(ann_file),
            data_prefix=dict(img=""),
            metainfo=dict(classes=tuple(CLASSES)),
            test_mode=True,
            pipeline=[],
        )
        # mmdet numbers labels by sorted category id, whatever the class order: compare names
        coco_json = json.loads(ann_file.read_text())
        names = {c["id"]: c["name"] for c in coco_json["categories"]}
        images = {}
        for i in range(len(dataset)):
            info = dataset.get_data_info(i)
            for inst in info["instances"]:
                inst["class_name"] = names[dataset.cat_ids[inst["bbox_label"]]]
            images[Path(info["img_path"]).name] = info["instances"]
        # CocoDataset leaves out images without annotations of the selected classes
        for image in coco_json["images"]:
            images.setdefault(image["file_name"], [])
        result[ann_file.parent.parent.name] = images
    return result


def _key(inst: dict) -> tuple:
    name = inst.get("class_name") or CLASSES[inst["bbox_label"]]
    return (name, round(inst["bbox"][0]), round(inst["bbox"][1]))


@pytest.mark.parametrize("task", ["object-detection", "instance-segmentation"])
def test_instances_match_the_sdk_coco_export(hard_project, tmp_path, task):
    """Same boxes (to 1 px), labels and mask areas (to 1%) as sly.Project.to_coco + CocoDataset."""
    reference = _sdk_coco_instances(hard_project, tmp_path)
    datasets = list_datasets(hard_project)
    assert "train/extra" in datasets  # nested datasets are read
    compared_objects = compared_masks = 0
    for name in datasets:
        ours, _ = read_instances(hard_project, CLASSES, task, datasets=[name])
        theirs = reference[name.split("/")[-1]]
        assert len(ours) == len(theirs), name
        for info in ours:
            expected = theirs[Path(info["img_path"]).name]
            if task == "instance-segmentation":
                expected = [e for e in expected if e.get("mask")]  # rectangles have no mask
            assert len(info["instances"]) == len(expected), info["img_path"]
            for mine, ref in zip(
                sorted(info["instances"], key=_key), sorted(expected, key=_key), strict=True
            ):
                assert CLASSES[mine["bbox_label"]] == ref["class_name"]
                assert np.allclose(mine["bbox"], ref["bbox"], atol=1.0), (mine["bbox"], ref["bbox"])
                compared_objects += 1
                if task == "instance-segmentation":
                    ref_mask = ref["mask"]
                    h, w = info["height"], info["width"]
                    if isinstance(ref_mask, list):
                        ref_rle = mask_utils.merge(mask_utils.frPyObjects(ref_mask, h, w))
                    else:
                        ref_rle = mask_utils.frPyObjects(ref_mask, h, w)
                    ref_area = float(mask_utils.area(ref_rle))
                    assert _area(mine["mask"]) == pytest.approx(ref_area, rel=0.01)
                    compared_masks += 1
    assert compared_objects > 40
    if task == "instance-segmentation":
        assert compared_masks > 20


def test_hard_cases_are_counted_not_lost(hard_project):
    data, stats = read_instances(hard_project, CLASSES, "object-detection")
    assert stats.images == len(data) == 28
    assert stats.images_without_objects >= 3
    assert all(info["instances"] or info["img_id"] for info in data)
    # the point objects are of a class we did not select: ignored silently
    _, stats_k = read_instances(hard_project, [*CLASSES, "keypoint"], "object-detection")
    assert stats_k.skipped["geometry 'point' is not used for training"] >= 1
    # rectangles have no mask: skipped and counted for segmentation
    _, seg_stats = read_instances(hard_project, CLASSES, "instance-segmentation")
    assert seg_stats.skipped["rectangle has no mask (instance segmentation)"] >= 1
    # drop images without objects on request
    dropped, dstats = read_instances(
        hard_project, CLASSES, "object-detection", keep_empty_images=False
    )
    assert len(dropped) == stats.images - stats.images_without_objects
    assert dstats.dropped_empty_images == stats.images_without_objects
    assert [d["img_id"] for d in dropped] == list(range(1, len(dropped) + 1))


def test_class_selection_keeps_only_chosen_classes(hard_project):
    data, stats = read_instances(hard_project, ["circle"], "object-detection")
    assert set(stats.objects_per_class) == {"circle"}
    assert all(i["bbox_label"] == 0 for d in data for i in d["instances"])


@pytest.mark.parametrize("seed", range(6))
def test_crop_rle_equals_full_size_encoding(seed):
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(5, 40)), int(rng.integers(5, 40))
    h, w = int(rng.integers(1, height + 3)), int(rng.integers(1, width + 3))
    crop = rng.random((h, w)) > 0.5
    x0, y0 = int(rng.integers(-3, width)), int(rng.integers(-3, height))
    if seed == 0:  # a crop covering whole columns: runs touch across column boundaries
        crop, x0, y0 = np.ones((height, 3), bool), 1, 0
    full = np.zeros((height, width), bool)
    ys, xs = np.nonzero(crop)
    ys, xs = ys + y0, xs + x0
    inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
    full[ys[inside], xs[inside]] = True
    ours = crop_to_rle(crop, x0, y0, height, width)
    assert np.array_equal(mask_utils.decode(ours).astype(bool), full)


def test_rectangle_beyond_the_border_is_clipped():
    obj = {
        "geometryType": "rectangle",
        "points": {"exterior": [[-5, 10], [30, 300]], "interior": []},
    }
    box, rle = object_to_instance(obj, 100, 50, with_mask=False)
    assert box == [0.0, 10.0, 31.0, 100.0]
    assert rle is None
    outside = {"geometryType": "rectangle", "points": {"exterior": [[60, 10], [70, 20]]}}
    assert object_to_instance(outside, 100, 50, with_mask=False) == "object outside the image"


def test_polygon_holes_are_cut_out():
    ext = [[0, 0], [20, 0], [20, 20], [0, 20]]
    hole = [[5, 5], [15, 5], [15, 15], [5, 15]]
    obj = {"geometryType": "polygon", "points": {"exterior": ext, "interior": [hole]}}
    _, with_hole = object_to_instance(obj, 30, 30, with_mask=True)
    obj["points"]["interior"] = []
    _, solid = object_to_instance(obj, 30, 30, with_mask=True)
    assert _area(with_hole) == pytest.approx(_area(solid) - 100, abs=25)


def test_unreadable_annotation_names_the_file(demo_project, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(demo_project, broken)
    bad = sorted((broken / "train" / "ann").glob("*.json"))[0]
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match=bad.name):
        read_instances(broken, CLASSES, "object-detection")


def test_missing_project_and_unknown_dataset(tmp_path, demo_project):
    with pytest.raises(DatasetError, match="does not exist"):
        read_instances(tmp_path / "nope", CLASSES, "object-detection")
    with pytest.raises(DatasetError, match="not in"):
        read_instances(demo_project, CLASSES, "object-detection", datasets=["test"])


def test_cache_is_used_and_invalidated_by_a_changed_file(demo_project, tmp_path, caplog):
    import shutil
    import time

    project = tmp_path / "p"
    shutil.copytree(demo_project, project)
    cache = tmp_path / "cache"
    first = load_split(project, CLASSES, "instance-segmentation", cache_dir=cache)
    assert len(list(cache.glob("split_*.pkl"))) == 1
    second = load_split(project, CLASSES, "instance-segmentation", cache_dir=cache)
    assert second[0] == first[0]
    ann = sorted((project / "train" / "ann").glob("*.json"))[0]
    data = json.loads(ann.read_text())
    data["objects"] = []
    time.sleep(0.01)
    ann.write_text(json.dumps(data))
    third = load_split(project, CLASSES, "instance-segmentation", cache_dir=cache)
    assert len(list(cache.glob("split_*.pkl"))) == 2
    assert third[1].objects < first[1].objects
    # a corrupt cache file is rebuilt, not trusted
    for path in cache.glob("split_*.pkl"):
        path.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        again = load_split(project, CLASSES, "instance-segmentation", cache_dir=cache)
    assert again[0] == third[0]
    assert "unreadable" in caplog.text


def test_coco_ground_truth_comes_from_the_same_instances(demo_project):
    data, stats = read_instances(demo_project, CLASSES, "instance-segmentation", datasets=["val"])
    coco = to_coco(data, CLASSES)
    assert [c["name"] for c in coco["categories"]] == CLASSES
    assert len(coco["images"]) == len(data)
    assert len(coco["annotations"]) == stats.objects
    first = data[0]["instances"][0]
    ann = coco["annotations"][0]
    x1, y1, x2, y2 = first["bbox"]
    assert ann["bbox"] == [x1, y1, x2 - x1, y2 - y1]
    assert ann["category_id"] == first["bbox_label"] + 1
    assert ann["area"] == _area(first["mask"])


def test_dataset_builds_through_mmdet_registry_and_writes_gt(demo_project, tmp_path):
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    import src.data.mmdet_dataset  # noqa: F401

    init_default_scope("mmdet")
    gt = tmp_path / "gt.json"
    dataset = DATASETS.build(
        dict(
            type="SuperviselyDataset",
            project_dir=str(demo_project),
            classes=CLASSES,
            task="instance-segmentation",
            datasets=["val"],
            coco_gt_file=str(gt),
            test_mode=True,
            pipeline=[
                dict(type="LoadImageFromFile"),
                dict(type="LoadAnnotations", with_bbox=True, with_mask=True),
                dict(type="PackDetInputs"),
            ],
        )
    )
    assert dataset.metainfo["classes"] == tuple(CLASSES)
    sample = dataset[0]
    instances = sample["data_samples"].gt_instances
    assert len(instances) == len(dataset.get_data_info(0)["instances"])
    assert instances.masks.masks.shape[1:] == sample["inputs"].shape[1:]
    assert json.loads(gt.read_text())["categories"][0]["name"] == "triangle"
    with pytest.raises(DatasetError, match="no classes"):
        DATASETS.build(dict(type="SuperviselyDataset", project_dir=str(demo_project), classes=[]))


def test_split_by_tags_and_by_datasets(demo_project, tmp_path):
    import shutil

    from src.data.project import dataset_split, open_local_project, tag_split

    project_dir = tmp_path / "tagged"
    shutil.copytree(demo_project, project_dir)
    meta = json.loads((project_dir / "meta.json").read_text())
    meta["tags"] = [
        {"name": n, "value_type": "none", "color": "#FF0000"} for n in ("trainset", "valset")
    ]
    (project_dir / "meta.json").write_text(json.dumps(meta))
    anns = sorted(project_dir.rglob("ann/*.json"))
    for i, path in enumerate(anns):
        ann = json.loads(path.read_text())
        ann["tags"] = [{"name": "valset" if i % 4 == 0 else "trainset"}]
        path.write_text(json.dumps(ann))
    project = open_local_project(project_dir)
    split = tag_split(project, "trainset", "valset")
    assert len(split.val_items) == 4 and len(split.train_items) == 12
    assert not set(split.train_items) & set(split.val_items)
    with pytest.raises(DatasetError, match="two different tags"):
        tag_split(project, "trainset", "trainset")
    with pytest.raises(DatasetError, match="both train and val"):
        dataset_split(project, ["train"], ["train"])
    data, _ = read_instances(project_dir, CLASSES, "object-detection", items=split.val_items)
    assert len(data) == 4
