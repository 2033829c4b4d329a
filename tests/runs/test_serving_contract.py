"""An uploaded run is what Supervisely's serving app and Experiments page read.

Replays Serve MMDetection 3.0 (supervisely-ecosystem/serve-mmdetection-v3, ``src/main.py`` at
commit 834e9d2: ``load_model`` and ``load_model_meta``) in a process that cannot import our
``src`` package and registers only a stand-in of the serving app's own
``SuperviselyDatasetSplit`` — as on the platform, where the serving app has its own environment.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What serve-mmdetection-v3 does with a custom model (src/main.py, load_model + load_model_meta),
# step by step; only the Supervisely API calls (downloads, Team Files ids) are left out.
SERVING_REPLAY = r"""
import importlib.util, json, sys
assert importlib.util.find_spec("src") is None, "the serving app cannot import our src package"
import numpy as np
from mmengine.config import Config
from mmdet.apis import inference_detector, init_detector
from mmdet.datasets import BaseDetDataset
from mmdet.registry import DATASETS


@DATASETS.register_module()
class SuperviselyDatasetSplit(BaseDetDataset):  # the serving app registers its own; never built
    pass


config_path, checkpoint_path, image_path, use_custom_checkpoint_path = sys.argv[1:5]
# load_model
cfg = Config.fromfile(config_path)
if "pretrained" in cfg.model:
    cfg.model.pretrained = None
elif "init_cfg" in cfg.model.backbone:
    cfg.model.backbone.init_cfg = None
cfg.model.train_cfg = None
model = init_detector(cfg, checkpoint=checkpoint_path, device="cpu", palette=[])
# load_model_meta("Custom models", cfg, checkpoint_name)
arch_type = cfg.sly_metadata.architecture_name
if use_custom_checkpoint_path == "1" and cfg.dataset_type != "SuperviselyDatasetSplit":
    classes = model.dataset_meta.get("classes", [])  # classes from .pth
    dataset_name = cfg.dataset_type
    task_type = None  # the deploy request gives it
else:
    classes = cfg.train_dataloader.dataset.selected_classes
    dataset_name = cfg.sly_metadata.project_name
    task_type = cfg.sly_metadata.task_type.replace("_", " ")
model.test_cfg["score_thr"] = 0.45  # default confidence_threshold
model_name = cfg.sly_metadata.model_name
# predict: inference_detector on an RGB image, labels index the class names
image = np.ascontiguousarray(__import__("cv2").imread(image_path)[:, :, ::-1])
prediction = inference_detector(model, image)
labels = prediction.pred_instances.labels.tolist()
masks = getattr(prediction.pred_instances, "masks", None)
print(json.dumps(dict(
    classes=list(classes), arch_type=arch_type, dataset_name=dataset_name, task_type=task_type,
    model_name=model_name, dataset_type=cfg.dataset_type, labels=labels,
    names=[classes[i] for i in labels], has_masks=masks is not None,
    checkpoint_classes=list(model.dataset_meta.get("classes", [])),
)))
"""


def _train(project: Path, tmp_path: Path, model: str, task: str) -> Path:
    """A short CLI run uploaded to the local Team Files stand-in; returns the run folder."""
    team_files = tmp_path / "team_files"
    result = subprocess.run(
        [sys.executable, "-m", "src.cli", "train", "--project", str(project), "--model", model,
         "--task", task, "--from-scratch", "--epochs", "2", "--batch-size", "4",
         "--val-batch-size", "4",
         "--input-size", "192", "--lr", "0.004", "--workers", "0", "--seed", "0",
         "--classes", "circle,square,triangle", "--team-files", str(team_files),
         "--app-data", str(tmp_path / "app_data"), "--run-id", "7",
         "--export", "onnx",  # the run as uploaded with an export folder (issue 25)
         # the segmentation run is class-balanced: mmdet's ClassBalancedDataset wraps its train
         # set, and the serving app still reads train_dataloader.dataset.selected_classes
         *(["--class-balance", "0.5"] if task == "instance-segmentation" else []),
         # the detection run is sliced (issue 27): its config names our SlicedCocoMetric and the
         # dataset's slicing, neither of which the serving app builds
         *(["--slice-size", "128"] if task == "object-detection" else [])],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    [run_dir] = (team_files / "mmdetection-3").iterdir()
    return run_dir


def _serve(run_dir: Path, image: Path, tmp_path: Path, custom_path: bool) -> dict:
    [checkpoint] = sorted(run_dir.glob("best_*.pth"))[:1] or sorted(run_dir.glob("*.pth"))[:1]
    result = subprocess.run(
        [sys.executable, "-I", "-c", SERVING_REPLAY, str(run_dir / "config.py"), str(checkpoint),
         str(image), "1" if custom_path else "0"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "task"),
    [
        ("rtmdet_tiny_8xb32-300e_coco", "object-detection"),
        ("rtmdet-ins_tiny_8xb32-300e_coco", "instance-segmentation"),
    ],
)
def test_serve_mmdetection_v3_loads_the_uploaded_run(demo_project, tmp_path, model, task):
    run_dir = _train(demo_project, tmp_path, model, task)
    assert any((run_dir / "export").glob("*.onnx"))  # the serving app's load path ignores it
    if task == "object-detection":
        assert "SlicedCocoMetric" in (run_dir / "config.py").read_text()
    image = next((demo_project / "val" / "img").iterdir())
    order = ["circle", "square", "triangle"]  # the label order the run was given

    table = _serve(run_dir, image, tmp_path, custom_path=False)  # picked in the runs table
    assert table["classes"] == order
    assert table["arch_type"] == ("RTMDet" if task == "object-detection" else "RTMDet-Ins")
    assert table["task_type"] == task.replace("-", " ")
    assert table["dataset_name"] == demo_project.name
    assert table["model_name"] == model
    assert table["checkpoint_classes"] == order  # meta.dataset_meta.classes, label order
    assert all(0 <= label < len(order) for label in table["labels"])
    assert table["has_masks"] is (task == "instance-segmentation")

    by_path = _serve(run_dir, image, tmp_path, custom_path=True)  # a checkpoint given by path
    assert by_path["dataset_type"] != "SuperviselyDatasetSplit"
    assert by_path["classes"] == order
