"""Pre-labelling with an instance segmentation run that was sliced (src/prelabel/model.py's
sliced path, masks merged by src/engine/tile_merge.py): RTMDet-Ins' initial weights under the
config ``train --dry-run --slice-size 96`` composes, on 160 x 128 images (so every image is cut
into tiles). No training; marked slow for its second composed run (about 20 s here) that covers
one path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from src.cli import main
from src.prelabel.labels import CONFIDENCE_TAG

MODEL = "rtmdet-ins_tiny_8xb32-300e_coco"


@pytest.fixture(scope="module")
def sliced_run(tmp_path_factory) -> tuple[Path, Path]:
    """(the project, app data holding run ``s1``)."""
    from src.config.text import load_config_file
    from src.data.demo import DemoOptions, make_demo_project
    from tests.engine.test_onnx_export import _initial_weights

    root = tmp_path_factory.mktemp("prelabel_masks")
    project = make_demo_project(root / "project", DemoOptions(images=4, seed=4, size=(160, 128)))
    work = root / "app" / "s1"
    work.mkdir(parents=True)
    code = main([
        "train", "--project", str(project), "--task", "instance-segmentation", "--model", MODEL,
        "--from-scratch", "--epochs", "1", "--batch-size", "2", "--input-size", "128",
        "--no-evaluate", "--device", "cpu", "--app-data", str(root / "scratch"),
        "--team-files", str(root / "tf"), "--run-id", "s1", "--no-cache", "--slice-size", "96",
        "--dry-run", "--dump-config", str(work / "config.py"),
    ])  # fmt: skip
    assert code == 0
    weights = _initial_weights(load_config_file(work / "config.py"), root)
    shutil.copy(weights, work / "best_coco_segm_mAP_epoch_1.pth")
    return project, root / "app"


@pytest.mark.slow
def test_a_sliced_segmentation_run_writes_bitmaps_the_sdk_reads(sliced_run, tmp_path, capsys):
    import supervisely as sly

    project, app_data = sliced_run
    out = tmp_path / "copy"
    code = main(["predict", "s1", "--project", str(project), "--out", str(out), "--datasets",
                 "val", "--overwrite-labelled", "--score-thr", "0.005",
                 "--app-data", str(app_data)])  # fmt: skip
    assert code == 0
    assert "sliced into the run's tiles" in capsys.readouterr().out
    copy = sly.Project(str(out), sly.OpenMode.READ)
    assert copy.meta.get_tag_meta(CONFIDENCE_TAG) is not None
    bitmaps = 0
    for dataset in copy.datasets:
        for item in dataset:
            ann = dataset.get_ann(item, copy.meta)
            height, width = ann.img_size
            for label in ann.labels:
                if label.tags.get(CONFIDENCE_TAG) is None:
                    continue
                assert dataset.name == "val" and label.geometry.geometry_name() == "bitmap"
                box = label.geometry.to_bbox()
                assert 0 <= box.left <= box.right < width and 0 <= box.top <= box.bottom < height
                bitmaps += 1
    assert bitmaps
