"""Ignore regions: objects of a class, or with a tag, the user names are regions that must not
count (crowds, "ignore" areas): mmdet's ignore_flag and COCO's iscrowd. Never trained as
objects, never a miss or a false positive in validation (COCO) or the evaluation (the SDK's
evaluators, which know no ignore regions: predictions in them are left out); counted in the dry
run; a name that is neither a class nor a tag is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from src.config.params import TrainParams
from src.data.eval_projects import write_eval_projects
from src.data.reader import read_instances, to_coco
from src.setup.prepare import RequestError, TrainRequest, prepare
from tests.test_cli import run_cli


@pytest.fixture(scope="module")
def crowd_project(tmp_path_factory, demo_project) -> Path:
    """The demo project with its triangles, and every other circle tagged "crowd"."""
    project = Path(shutil.copytree(demo_project, tmp_path_factory.mktemp("crowd") / "project"))
    meta = json.loads((project / "meta.json").read_text())
    meta["tags"] = [*meta.get("tags", []), {"name": "crowd", "value_type": "none",
                                            "color": "#FF00FF"}]  # fmt: skip
    (project / "meta.json").write_text(json.dumps(meta))
    seen = 0
    for ann_path in sorted(project.rglob("ann/*.json")):
        ann = json.loads(ann_path.read_text())
        for obj in ann["objects"]:
            if obj["classTitle"] == "circle":
                seen += 1
                if seen % 2:
                    obj["tags"] = [*obj.get("tags", []), {"name": "crowd", "value": None}]
        ann_path.write_text(json.dumps(ann))
    return project


def test_named_classes_and_tags_become_ignore_regions(crowd_project):
    classes = ["square", "circle"]
    data, stats = read_instances(crowd_project, classes, "object-detection", ["train"],
                                 ignore=["triangle", "crowd"])  # fmt: skip
    instances = [i for info in data for i in info["instances"]]
    ignored = [i for i in instances if i["ignore_flag"]]
    assert stats.ignore_regions["triangle"] > 0 and stats.ignore_regions["crowd"] > 0
    assert len(ignored) == sum(stats.ignore_regions.values())
    assert stats.objects == len(instances) - len(ignored)  # not counted as objects
    assert "triangle" not in stats.objects_per_class
    plain, _ = read_instances(crowd_project, classes, "object-detection", ["train"])
    # without ignore regions the tagged circles are objects again
    assert sum(len(info["instances"]) for info in plain) == (
        stats.objects + stats.ignore_regions["crowd"]
    )
    # COCO's ground truth marks them iscrowd
    coco = to_coco(data, classes)
    assert sum(a["iscrowd"] for a in coco["annotations"]) == len(ignored)


def test_mmdet_keeps_them_apart_from_the_objects_it_trains_on(crowd_project):
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    import src.data.mmdet_dataset  # noqa: F401

    init_default_scope("mmdet")
    pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", with_bbox=True),
                dict(type="PackDetInputs")]  # fmt: skip
    dataset = DATASETS.build(dict(
        type="SuperviselyDataset", project_dir=str(crowd_project), classes=["square", "circle"],
        datasets=["train"], ignore_regions=["triangle", "crowd"], pipeline=pipeline,
    ))  # fmt: skip
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    index = next(i for i, info in enumerate(infos)
                 if any(inst["ignore_flag"] for inst in info["instances"]))  # fmt: skip
    sample = dataset[index]["data_samples"]
    info = infos[index]
    assert len(sample.ignored_instances) == sum(i["ignore_flag"] for i in info["instances"])
    assert len(sample.gt_instances) == sum(not i["ignore_flag"] for i in info["instances"])
    # class balance counts an image's classes without its ignore regions
    labels = [i["bbox_label"] for i in info["instances"] if not i["ignore_flag"]]
    assert dataset.get_cat_ids(index) == labels


def _coco(ignore_flag: int, detect_the_region: bool) -> tuple[float, float]:
    """(mAP, recall) of pycocotools (what mmdet's CocoMetric runs) on an image with an object
    and a second region, detected: the object, and the region when asked."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    data = [{"img_id": 1, "item_name": "ds/a.png", "height": 100, "width": 100,
             "instances": [{"bbox": [10, 10, 40, 40], "bbox_label": 0, "ignore_flag": 0},
                           {"bbox": [60, 60, 95, 95], "bbox_label": 0,
                            "ignore_flag": ignore_flag}]}]  # fmt: skip
    gt = COCO()
    gt.dataset = to_coco(data, ["a"])
    gt.createIndex()
    found = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "score": 0.5}]
    if detect_the_region:
        found.append({"image_id": 1, "category_id": 1, "bbox": [62, 62, 30, 30], "score": 0.9})
    ev = COCOeval(gt, gt.loadRes(found), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return float(ev.stats[0]), float(ev.stats[8])


def test_validation_counts_no_miss_and_no_false_positive_in_them():
    """A detection on an ignore region is no false positive, the region undetected no miss;
    the same region as an object would be a miss when undetected."""
    assert _coco(ignore_flag=1, detect_the_region=True) == pytest.approx((1.0, 1.0))
    assert _coco(ignore_flag=1, detect_the_region=False) == pytest.approx((1.0, 1.0))
    assert _coco(ignore_flag=0, detect_the_region=False)[1] == pytest.approx(0.5)


def test_the_evaluation_leaves_out_predictions_in_ignore_regions(tmp_path):
    image = tmp_path / "a.png"
    __import__("cv2").imwrite(str(image), np.zeros((100, 100, 3), np.uint8))
    data = [{"img_id": 1, "item_name": "ds/a.png", "height": 100, "width": 100,
             "img_path": str(image),
             "instances": [{"bbox": [10, 10, 40, 40], "bbox_label": 0, "ignore_flag": 0},
                           {"bbox": [60, 60, 95, 95], "bbox_label": 0,
                            "ignore_flag": 1}]}]  # fmt: skip
    predictions = [
        {"image_id": 1, "category_id": 1, "bbox": box, "score": score}
        for box, score in (([10, 10, 30, 30], 0.5), ([62, 62, 30, 30], 0.9), ([50, 0, 40, 40], 0.7))
    ]
    gt_dir, pred_dir = write_eval_projects(data, ["a"], predictions, tmp_path / "p", False)
    gt = json.loads((gt_dir / "ds" / "ann" / "a.png.json").read_text())
    pred = json.loads((pred_dir / "ds" / "ann" / "a.png.json").read_text())
    assert len(gt["objects"]) == 1  # the region is no object to find
    scores = sorted(o["tags"][0]["value"] for o in pred["objects"])
    assert scores == [0.5, 0.7]  # the one inside the region left out; a false positive stays


def test_unknown_or_contradicting_names_are_refused_and_the_dry_run_counts_them(
    crowd_project, tmp_path
):
    def request(classes=None, **params):
        return TrainRequest(
            project_dir=str(crowd_project), app_data_dir=str(tmp_path / "app"),
            model="rtmdet_tiny_8xb32-300e_coco", classes=classes,
            params=TrainParams(weights="scratch", input_size=(128, 128), **params),
        )  # fmt: skip

    with pytest.raises(RequestError, match="neither classes nor tags of the project"):
        prepare(request(ignore=("crowds",)))
    with pytest.raises(RequestError, match="classes and ignore regions contradict"):
        prepare(request(["square", "triangle"], ignore=("triangle",)))
    prepared = prepare(request(ignore=("triangle", "crowd")))
    assert prepared.params.classes == ("square", "circle")  # all but the ignored class
    assert prepared.cfg.train_dataloader.dataset.ignore_regions == ["triangle", "crowd"]
    result = run_cli("train", "--project", str(crowd_project), "--model",
                     "rtmdet_tiny_8xb32-300e_coco", "--from-scratch", "--input-size", "128",
                     "--ignore", "triangle,crowd", "--dry-run",
                     "--app-data", str(tmp_path / "cli"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ignore regions (triangle " in result.stdout and "crowd " in result.stdout
    assert "classes      square, circle" in result.stdout
