"""The pre-labelling tests' project and run, made with no training (see test_prelabel.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from src.cli import main
from src.core.layout import CLASS_THRESHOLDS
from src.data.demo import CLASSES
from src.data.reader import list_items

MODEL = "rtmdet_tiny_8xb32-300e_coco"
LOW, HIGH = 0.005, 0.5  # a threshold under the initial head's scores, one above them
UNLABELLED = ("train/extra/", "val/")  # the datasets whose images lose their labels here


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """A small nested demo project, every image labelled (the run is composed on it)."""
    from src.data.demo import DemoOptions, make_demo_project

    return make_demo_project(
        tmp_path_factory.mktemp("prelabel") / "labelled",
        DemoOptions(images=10, seed=4, nested=True, size=(160, 128)),
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory, labelled) -> Path:
    """The same project, its ``val`` and ``train/extra`` images without labels."""
    path = tmp_path_factory.mktemp("prelabel") / "project"
    shutil.copytree(labelled, path)
    for name, ann_path in list_items(path):
        if name.startswith(UNLABELLED):
            ann = json.loads(ann_path.read_text())
            ann["objects"] = []
            ann_path.write_text(json.dumps(ann))
    return path


@pytest.fixture(scope="module")
def app_data(tmp_path_factory, labelled) -> Path:
    """App data holding run ``r1``: the composed config and an initial-weights checkpoint named
    as a best one, with thresholds LOW for the first class and HIGH for the others."""
    import torch

    from src.config.text import load_config_file
    from tests.engine.test_onnx_export import _initial_weights

    root = tmp_path_factory.mktemp("prelabel_run")
    work = root / "app" / "r1"
    work.mkdir(parents=True)
    config = work / "config.py"
    code = main([
        "train", "--project", str(labelled), "--model", MODEL, "--from-scratch", "--epochs", "1",
        "--batch-size", "2", "--input-size", "128", "--no-evaluate", "--device", "cpu",
        "--app-data", str(root / "scratch"), "--team-files", str(root / "tf"), "--run-id", "r1",
        "--no-cache", "--dry-run", "--dump-config", str(config),
    ])  # fmt: skip
    assert code == 0
    weights = _initial_weights(load_config_file(config), root)
    checkpoint = torch.load(weights, weights_only=False)
    thresholds = {c: (LOW if c == CLASSES[0] else HIGH) for c in CLASSES}
    checkpoint["meta"] = {CLASS_THRESHOLDS: thresholds}
    torch.save(checkpoint, work / "best_coco_bbox_mAP_epoch_1.pth")
    return root / "app"
