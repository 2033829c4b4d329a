"""An uploaded run is what Supervisely's serving app and Experiments page read.

Replays Serve MMDetection 3.0 (supervisely-ecosystem/serve-mmdetection-v3, ``src/main.py`` at
commit 834e9d2: ``load_model`` and ``load_model_meta``) in a process that cannot import our
``src`` package and registers only a stand-in of the serving app's own
``SuperviselyDatasetSplit`` — as on the platform, where the serving app has its own environment.
"""

from __future__ import annotations

import json
import re
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


TASKS = {
    "object-detection": "rtmdet_tiny_8xb32-300e_coco",
    "instance-segmentation": "rtmdet-ins_tiny_8xb32-300e_coco",
}


@pytest.fixture(scope="module", params=list(TASKS))
def uploaded(request, demo_project, tmp_path_factory) -> tuple[Path, str, str]:
    """One uploaded run per task, read by every consumer replayed here (the serving app,
    mmdet's inferencers with their defaults, SAHI)."""
    task = request.param
    run_dir = _train(demo_project, tmp_path_factory.mktemp("uploaded"), TASKS[task], task)
    return run_dir, TASKS[task], task


@pytest.mark.slow
def test_serve_mmdetection_v3_loads_the_uploaded_run(demo_project, tmp_path, uploaded):
    run_dir, model, task = uploaded
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


# The field's own tools on the run, in one process where no code of ours is importable: mmdet
# 3.3.0's inference API with every default (palette 'none': the config's test dataset is built
# for its metainfo), DetInferencer as its demo/image_demo.py calls it (drawing into an out dir,
# saving predictions), SAHI 0.12.8 (requirements-dev's pin) unpatched, sliced and whole; then the
# three programs of the run's README, each as its own __main__.
FIELD_TOOLS_REPLAY = r"""
import contextlib, importlib.util, io, json, runpy, sys
assert importlib.util.find_spec("src") is None, "no code of ours is importable"
from mmdet.apis import DetInferencer, inference_detector, init_detector
from sahi import AutoDetectionModel
from sahi.predict import get_prediction, get_sliced_prediction

config, checkpoint, image, out_dir = sys.argv[1:5]
programs = json.loads(sys.argv[5])
model = init_detector(config, checkpoint, device="cpu")
pred = inference_detector(model, image).pred_instances
inferencer = DetInferencer(model=config, weights=checkpoint, device="cpu")
[found] = inferencer(image, out_dir=out_dir, pred_score_thr=0.3, no_save_pred=False)["predictions"]
sahi = AutoDetectionModel.from_pretrained(
    model_type="mmdet", model_path=checkpoint, config_path=config, device="cpu",
    confidence_threshold=0.0,
)
sliced = get_sliced_prediction(image, sahi, slice_height=128, slice_width=128,
                               overlap_height_ratio=0.25, overlap_width_ratio=0.25, verbose=0)
whole = get_prediction(image, sahi).object_prediction_list
printed = {}
for way, path in programs.items():
    sys.argv = [path, image]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        runpy.run_path(path, run_name="__main__")
    printed[way] = out.getvalue().splitlines()
sys.argv = [sys.argv[0]]
print(json.dumps(dict(
    classes=list(model.dataset_meta["classes"]),
    palette=[list(c) for c in model.dataset_meta["palette"]],
    inferencer_palette=[list(c) for c in inferencer.model.dataset_meta["palette"]],
    labels=pred.labels.tolist(), scores=pred.scores.tolist(), has_masks="masks" in pred,
    inferencer_labels=found["labels"], inferencer_scores=found["scores"],
    inferencer_has_masks="masks" in found,
    sahi_category_names=list(sahi.category_names), sahi_has_mask=sahi.has_mask,
    sliced=len(sliced.object_prediction_list),
    sliced_masks=sum(p.mask is not None for p in sliced.object_prediction_list),
    whole=sorted(round(p.score.value, 4) for p in whole),
    mmdet=sorted(round(s, 4) for s in pred.scores.tolist() if s > 0),
    printed=printed,
)))
"""
ORDER = ["circle", "square", "triangle"]  # the label order the runs were given


def _readme_programs(readme: str) -> dict[str, str]:
    """The run README's three ways, by the tool each uses."""
    programs = [block.split("```", 1)[0] for block in readme.split("```python\n")[1:]]
    ways = {
        "init_detector": [p for p in programs if "init_detector(" in p and "batched_nms" not in p],
        "DetInferencer": [p for p in programs if "DetInferencer(" in p],
        "sahi": [p for p in programs if "from sahi" in p],
    }
    assert all(len(found) == 1 for found in ways.values()), ways
    return {way: found for way, [found] in ways.items()}


@pytest.fixture(scope="module")
def field_tools(uploaded, demo_project, tmp_path_factory) -> dict:
    """What the replay saw on the run (one process per task), where it worked, and the task."""
    run_dir, _, task = uploaded
    work = tmp_path_factory.mktemp("field_tools")
    [checkpoint] = sorted(run_dir.glob("best_*.pth"))[:1] or sorted(run_dir.glob("*.pth"))[:1]
    for name in ("config.py", *(p.name for p in run_dir.glob("*.pth"))):
        (work / name).symlink_to(run_dir / name)
    programs = _readme_programs((run_dir / "README.md").read_text())
    for way, program in programs.items():
        (work / f"{way}.py").write_text(program)
    image = next((demo_project / "val" / "img").iterdir())
    result = subprocess.run(
        [sys.executable, "-I", "-c", FIELD_TOOLS_REPLAY, "config.py", checkpoint.name,
         str(image), str(work / "out"), json.dumps({w: f"{w}.py" for w in programs})],
        capture_output=True, text=True, cwd=work, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]) | dict(
        work=work, image=image, task=task
    )


def _colors(project: Path, classes: list[str]) -> list[list[int]]:
    classes_meta = json.loads((project / "meta.json").read_text())["classes"]
    meta = {c["title"]: c["color"] for c in classes_meta}
    return [[int(meta[c].lstrip("#")[i : i + 2], 16) for i in (0, 2, 4)] for c in classes]


@pytest.mark.slow
def test_mmdets_inferencers_load_the_run_with_their_defaults(demo_project, field_tools):
    seen, image = field_tools, field_tools["image"]
    assert seen["classes"] == ORDER
    # the project's class colours, read from the config's test dataset (palette 'none')
    assert seen["palette"] == seen["inferencer_palette"] == _colors(demo_project, ORDER)
    # the inferencer (image_demo.py's path) predicts what init_detector's model predicts
    assert seen["inferencer_labels"] == seen["labels"]
    assert seen["inferencer_scores"] == pytest.approx(seen["scores"], abs=1e-5)
    segm = seen["task"] == "instance-segmentation"
    assert seen["has_masks"] is seen["inferencer_has_masks"] is segm
    assert (seen["work"] / "out" / "vis" / image.name).is_file()  # drawn, as image_demo.py does
    assert (seen["work"] / "out" / "preds" / f"{image.stem}.json").is_file()


@pytest.mark.slow
def test_sahi_predicts_the_run_sliced_unpatched(field_tools):
    seen = field_tools
    assert seen["sahi_category_names"] == ORDER
    # SAHI decides from the train pipeline whether the model has masks (a detection run that
    # says poly2mask=True is taken for a mask model and fails on its first detection)
    assert seen["sahi_has_mask"] is (seen["task"] == "instance-segmentation")
    if seen["task"] == "instance-segmentation":
        assert seen["sliced_masks"] == seen["sliced"]
    # its whole-image prediction is mmdet's, on the same weights
    assert seen["whole"] == pytest.approx(seen["mmdet"], abs=1e-4)


@pytest.mark.slow
def test_the_runs_readme_shows_three_ways_that_run_without_our_code(field_tools):
    seen = field_tools
    assert set(seen["printed"]) == {"init_detector", "DetInferencer", "sahi"}
    for way, lines in seen["printed"].items():  # "class score [x1, y1, x2, y2]" (and mmengine's)
        for line in lines:
            if re.fullmatch(r"\S+ \d\.\d\d \[.*\]", line):
                assert line.split()[0] in ORDER, (way, line)
    # the inferencer's program drew the image where its comment says
    assert (seen["work"] / "outputs" / "vis" / seen["image"].name).is_file()
