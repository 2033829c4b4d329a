"""Sliced training end to end, on the images it is for: 4000x3000 photos with objects of 12 to
30 px. Resized whole to the model's 256 px input, an object is one or two pixels and nothing can
be learned; cut into 256 px tiles, the same model at the same input size finds them. Both runs
are measured here, on the same validation image, by recall at IoU 0.5.

The sliced run's validation merges its tiles' predictions on the whole image: an object cut by a
tile border is one box, and the evaluation after training (the platform's evaluators, on the
original project) gives the validation's mAP. Its README's sliced inference and ``predict
--onnx`` run on a large image."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from src.data.tiles import windows

ROOT = Path(__file__).resolve().parents[2]
MODEL = "rtmdet_tiny_8xb32-300e_coco"
CLASSES = ["square", "circle", "triangle"]  # the demo project's
TILE, OVERLAP = 256, 0.25


@pytest.fixture(scope="module")
def large_project(tmp_path_factory) -> Path:
    """Three 4000x3000 JPEGs (two to train, one to validate), about 100 objects of 12 to 30 px
    each, in a cluster as cars on a parking lot (so that a short run sees enough of them)."""
    from src.data.demo import LARGE_OPTIONS, DemoOptions, make_demo_project

    # the cluster is small enough that few tiles hold objects (each trained tile costs; a
    # 1100x800 cluster took twice the tiles for the same objects)
    options = dict(LARGE_OPTIONS) | dict(
        min_objects=100, max_objects=120, region=(1650, 1250, 2450, 1850)
    )
    path = tmp_path_factory.mktemp("large") / "project"
    return make_demo_project(path, DemoOptions(images=3, seed=2, **options))


def _train(project: Path, root: Path, run_id: str, *extra: str) -> Path:
    """A CLI run of 12 epochs at 256 px from scratch, validated once at the end; its folder."""
    result = subprocess.run(
        [sys.executable, "-m", "src.cli", "train", "--project", str(project), "--model", MODEL,
         "--from-scratch", "--epochs", "12", "--val-interval", "12", "--batch-size", "2",
         "--val-batch-size", "8", "--input-size", "256", "--lr", "0.004", "--seed", "0",
         "--app-data", str(root / "app_data"), "--team-files", str(root / "team_files"),
         "--run-id", run_id, *extra],
        capture_output=True, text=True, cwd=ROOT, timeout=1500,
        # one thread, as in `make test`: the same numbers however the test is run
        env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return root / "app_data" / run_id


@pytest.fixture(scope="module")
def runs(large_project, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sliced_runs")
    sliced = _train(
        large_project, root, "sliced", "--slice-size", str(TILE), "--slice-overlap", str(OVERLAP),
        "--slice-empty", "0.02", "--no-slice-full-image", "--export", "onnx",
    )  # fmt: skip
    whole = _train(large_project, root, "whole", "--no-evaluate")
    return sliced, whole


def _iou(a: list[float], b: list[float]) -> float:
    """COCO boxes (x, y, w, h)."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _objects_and_predictions(run: Path) -> tuple[list[dict], list[dict]]:
    truth = json.loads((run / "coco_gt_val.json").read_text())
    objects = [a for a in truth["annotations"] if not a["iscrowd"]]
    return objects, json.loads((run / "predictions" / "best.bbox.json").read_text())


def _recall(run: Path) -> float:
    """Objects of the validation image found by a prediction of their class scoring at least 0.1
    at IoU >= 0.5."""
    objects, predictions = _objects_and_predictions(run)
    predictions = [p for p in predictions if p["score"] >= 0.1]
    found = sum(
        any(p["category_id"] == o["category_id"] and _iou(p["bbox"], o["bbox"]) >= 0.5
            for p in predictions)
        for o in objects
    )  # fmt: skip
    return found / len(objects)


@pytest.mark.slow
def test_sliced_training_finds_small_objects_the_whole_image_run_cannot(runs):
    sliced, whole = runs
    sliced_recall, whole_recall = _recall(sliced), _recall(whole)
    print(f"recall@0.5 sliced {sliced_recall:.3f}, whole images {whole_recall:.3f}")
    assert whole_recall <= 0.05
    assert sliced_recall >= 0.4 and sliced_recall >= whole_recall + 0.35


def test_an_object_cut_by_a_tile_border_is_predicted_once(large_project):
    """The validation image's ~100 objects seen as a perfect model sees tiles: every object that
    is mostly inside a tile found there, clipped to it (an object across a border is found whole
    in one tile and cut in its neighbours). Sliced inference at the runs' tile size and overlap
    gives back each object once, whole. (What a trained model finds is
    ``test_sliced_training_finds_small_objects...``; this is the merge, on any machine.)"""
    import cv2
    import numpy as np

    from src.data.reader import read_instances
    from src.engine.tile_merge import predict_sliced

    [info], _ = read_instances(large_project, CLASSES, "object-detection", datasets=["val"])
    boxes = np.array([i["bbox"] for i in info["instances"]], float)
    labels = np.array([i["bbox_label"] for i in info["instances"]])
    image = cv2.imread(info["img_path"])
    height, width = image.shape[:2]
    tiles = iter(windows(width, height, TILE, OVERLAP))

    def oracle(crops):
        found = []
        for crop in crops:
            x1, y1, x2, y2 = next(tiles)
            assert crop.shape[:2] == (y2 - y1, x2 - x1)
            clipped = np.clip(boxes, [x1, y1, x1, y1], [x2, y2, x2, y2])
            visible = np.prod(clipped[:, 2:] - clipped[:, :2], axis=1)
            keep = visible >= 0.5 * np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
            found.append((clipped[keep] - [x1, y1, x1, y1], 0.5 + 0.5 * keep[keep], labels[keep]))
        return found

    merged = predict_sliced(oracle, image, TILE, OVERLAP, full_image=False)
    assert next(tiles, None) is None  # every tile was predicted
    cut = sum(
        any(
            0
            < (min(b[2], t[2]) - max(b[0], t[0])) * (min(b[3], t[3]) - max(b[1], t[1]))
            < (b[2] - b[0]) * (b[3] - b[1])
            for t in windows(width, height, TILE, OVERLAP)
            if b[0] < t[2] and b[2] > t[0] and b[1] < t[3] and b[3] > t[1]
        )
        for b in boxes
    )
    assert len(boxes) >= 100 and cut >= 10  # many objects cross a border
    assert len(merged.boxes) == len(boxes)  # one box an object
    for box, label in zip(boxes, labels, strict=True):
        same = merged.boxes[merged.labels == label]
        assert np.any(np.all(np.abs(same - box) < 1e-6, axis=1)), box  # whole, not a piece


@pytest.mark.slow
def test_the_evaluation_on_the_original_project_gives_the_validations_map(runs):
    sliced, _ = runs
    evaluation = json.loads((sliced / "evaluation" / "metrics.json").read_text())
    assert evaluation["reused_predictions"] is True  # the merged ones, on whole images
    # the same predictions, scored by the SDK's evaluators and by SlicedCocoMetric: both read AP
    # at 1000 detections an image (mmdet's CocoMetric read it at 100, pycocotools' summarize
    # default: 0.107 against the SDK's 0.113 on this run, issue 36); the validation's is rounded
    # to 3 decimals
    assert evaluation["metrics"]["mAP"] == pytest.approx(evaluation["validation_map"], abs=1e-3)
    assert evaluation["metrics"]["mAP"] > 0.02


@pytest.mark.slow
def test_the_runs_readme_and_predict_onnx_slice_a_large_image(runs, large_project, tmp_path):
    import cv2

    sliced, _ = runs
    [uploaded] = (sliced.parent.parent / "team_files" / "mmdetection-3").glob("sliced_*")
    readme = (uploaded / "README.md").read_text()
    assert f"tiles of {TILE} px" in readme
    program = readme.split("tiles of", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    # a large crop of the validation image (the whole one takes 300 tiles)
    [image_path] = (large_project / "val" / "img").iterdir()
    image = cv2.imread(str(image_path))[1000:2000, 1400:2700]
    crop = tmp_path / "crop.jpg"
    cv2.imwrite(str(crop), image)
    (tmp_path / "sliced.py").write_text(program)
    for name in ("config.py", *(p.name for p in uploaded.glob("*.pth"))):
        (tmp_path / name).symlink_to(uploaded / name)
    result = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "sliced.py"), str(crop)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(result.stdout.splitlines()) >= 3  # objects found on the crop

    [onnx] = (uploaded / "export").glob("*.onnx")
    result = subprocess.run(
        [sys.executable, "-m", "src.cli", "predict", "--onnx", str(onnx), str(crop),
         "--out", str(tmp_path / "drawn"), "--score-thr", "0.3"],  # not the per-class ones
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"sliced into tiles of {TILE} px" in result.stdout  # from the model file's metadata
    found = int(result.stdout.split(" objects above")[0].rsplit(" ", 1)[1])
    assert found >= 3
    assert (tmp_path / "drawn" / "crop.jpg").is_file()
