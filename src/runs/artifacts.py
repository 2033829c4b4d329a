"""Pack a finished (or stopped) run into the layout Supervisely's MMDetection 3 serving app reads.

``config.py`` and the ``*.pth`` files side by side; ``sly_metadata`` is the config's last key. The
checkpoints are inference exports (``state_dict`` + plain ``meta``), which mmdet's ``init_detector``
loads on any torch. ``resume/`` holds the run's resumable state (see ``src.runs.remote``), so a
stopped run can be continued in a later app session even after its app data is gone.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from src.core.export_formats import export_format, export_table
from src.core.layout import (
    APP_STATE,
    CLASS_THRESHOLDS,
    EVALUATION_DIR,
    EVALUATION_METRICS,
    EVALUATION_REPORT,
    EVALUATION_SPEED,
    EXPERIMENT_INFO,
    EXPORT_CLASSES,
    EXPORT_DIR,
    HYPERPARAMETERS,
    LOGS_DIR,
    MODEL_META,
    RESUME_DIR,
    RUN_CONFIG,
    RUN_METRICS,
    RUN_README,
    TENSORBOARD_DIR,
    TRAIN_VAL_SPLIT,
    log_files,
    scalars_files,
    tensorboard_files,
    uploaded_as_is,
)
from src.core.tasks import SEGMENTATION, platform_task
from src.runs.checkpoint_io import CheckpointError, export_for_inference
from src.runs.checkpoints import best_checkpoint, last_checkpoint
from src.runs.remote import snapshot_run_state

logger = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What the README of a run says and ``metrics.json`` holds."""

    run_id: str
    model_name: str
    task: str
    project_name: str
    classes: list[str]
    epochs_done: int
    state: str  # finished | stopped | failed
    best_metric: dict[str, float] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)  # {"train": [...], "val": [...]}
    # what the platform's Experiments page reads (experiment_info.json)
    remote_dir: str = ""  # where the run's artifacts are in Team Files
    project_id: int | None = None
    task_id: int | None = None  # the app's task on the platform; None headless
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # TrainParams
    split: dict[str, list[str]] = field(default_factory=dict)  # {"train": items, "val": items}
    class_colors: dict[str, list[int]] = field(default_factory=dict)
    started_at: float | None = None  # when the run started (unix time)


FRAMEWORK_NAME = "MMDetection 3.0"  # the platform's name for runs of this framework


def experiment_info(summary: RunSummary, checkpoints: list[str], best: str | None) -> dict:
    """The run as the platform's Experiments page reads it (the SDK's
    ``supervisely.nn.experiments.ExperimentInfo``; file paths relative to ``artifacts_dir``)."""
    started = time.localtime(summary.started_at) if summary.started_at else time.localtime()
    folder = summary.remote_dir.rstrip("/") + "/"
    return {
        "experiment_name": f"{summary.run_id} {summary.project_name} {summary.model_name}",
        "framework_name": FRAMEWORK_NAME,
        "model_name": summary.model_name,
        "task_type": platform_task(summary.task),
        "project_id": summary.project_id,
        "task_id": summary.task_id,
        "model_files": {"config": RUN_CONFIG},
        "model_meta": MODEL_META,
        "checkpoints": checkpoints,
        "best_checkpoint": best,
        "hyperparameters": HYPERPARAMETERS,
        "artifacts_dir": folder,
        "train_val_split": TRAIN_VAL_SPLIT,
        "train_size": len(summary.split.get("train", [])),
        "val_size": len(summary.split.get("val", [])),
        "datetime": time.strftime("%Y-%m-%d %H:%M:%S", started),
        "evaluation_report_id": None,
        "evaluation_report_link": None,
        "evaluation_metrics": {},
        "primary_metric": None,
        "logs": {"type": "mmengine", "link": f"{folder}{LOGS_DIR}/"},
    }


def _model_meta(summary: RunSummary) -> dict:
    """The classes as the serving app presents them: boxes, or bitmaps for segmentation."""
    import supervisely as sly

    shape = sly.Bitmap if summary.task == SEGMENTATION else sly.Rectangle
    classes = [
        sly.ObjClass(name, shape, color=summary.class_colors.get(name)) for name in summary.classes
    ]
    return sly.ProjectMeta(obj_classes=sly.ObjClassCollection(classes)).to_json()


def pack_run(
    work_dir: str | Path, config_text: str, out_dir: str | Path, summary: RunSummary
) -> Path:
    """Write the artifact folder for a run; returns it. Raises if there is no checkpoint at all."""
    work_dir, out_dir = Path(work_dir), Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    (out_dir / RUN_CONFIG).write_text(config_text, encoding="utf-8")
    best, exported = _export_checkpoints(work_dir, out_dir)
    try:
        snapshot_run_state(work_dir, out_dir / RESUME_DIR, summary.run_id)
    except CheckpointError as exc:
        logger.warning("the run cannot be resumed from its artifacts: %s", exc)
    _copy_logs(work_dir, out_dir)
    run_metrics = {
        "best": summary.best_metric,
        "epochs_done": summary.epochs_done,
        "state": summary.state,
        "history": summary.history,
    }
    _write_json(out_dir / RUN_METRICS, run_metrics)
    exports = _copy_exports(work_dir, out_dir)
    thresholds = _evaluated_thresholds(work_dir, best)
    (out_dir / RUN_README).write_text(
        _readme(summary, [p.name for p in exported], exports, thresholds), encoding="utf-8"
    )
    _write_json(out_dir / MODEL_META, _model_meta(summary))
    _write_json(out_dir / TRAIN_VAL_SPLIT, summary.split)
    (out_dir / HYPERPARAMETERS).write_text(
        yaml.safe_dump(summary.hyperparameters, sort_keys=False), encoding="utf-8"
    )
    best_name = best.name if best is not None else exported[-1].name
    info = experiment_info(summary, [p.name for p in exported], best_name)
    _copy_as_is(work_dir, out_dir)
    _name_app_state(out_dir, info)
    info["export"] = {export_format(fmt).runtime: path for fmt, path in exports.items()}
    evaluation = _evaluation_summary(out_dir)
    if evaluation is not None:
        info["evaluation_metrics"] = evaluation.get("metrics") or {}
        info["primary_metric"] = evaluation.get("primary_metric")
    if thresholds:  # (the SDK's ExperimentInfo reads the keys it knows, and skips this one)
        info[CLASS_THRESHOLDS] = thresholds["thresholds"]
    _write_json(out_dir / EXPERIMENT_INFO, info)
    return out_dir


def _export_checkpoints(work_dir: Path, out_dir: Path) -> tuple[Path | None, list[Path]]:
    """The run's best checkpoint (None: none) and the inference exports written of it and of
    the last one; raises when the run saved no checkpoint."""
    exported = []
    best = best_checkpoint(work_dir)
    last = last_checkpoint(work_dir)
    if best is not None:
        exported.append(export_for_inference(best, out_dir / best.name))
    if last is not None and last != best:
        exported.append(export_for_inference(last, out_dir / last.name))
    if not exported:
        raise FileNotFoundError(f"no checkpoint was saved in {work_dir}: nothing to upload")
    return best, exported


def _copy_logs(work_dir: Path, out_dir: Path) -> None:
    """The run's log files and scalars into ``logs/``, its TensorBoard events beside them (one
    TensorBoard run per session)."""
    logs_dir = out_dir / LOGS_DIR
    logs_dir.mkdir()
    for log in log_files(work_dir):
        shutil.copy2(log, logs_dir / log.name)
    for scalars in scalars_files(work_dir):
        shutil.copy2(scalars, logs_dir / f"{scalars.parent.parent.name}_scalars.json")
    for events in tensorboard_files(work_dir):
        target = out_dir / TENSORBOARD_DIR / events.parent.parent.name
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(events, target / events.name)


def _copy_as_is(work_dir: Path, out_dir: Path) -> None:
    """The run's files that are uploaded as they are (``src.core.layout.UPLOADED_AS_IS``: its
    settings, its evaluation) to the same paths in the artifacts, those the run has; an
    evaluation that left neither its metrics nor its speed test (it failed) stays behind."""
    evaluated = any(
        (work_dir / EVALUATION_DIR / name).is_file()
        for name in (EVALUATION_METRICS, EVALUATION_SPEED)
    )
    for name in uploaded_as_is():
        if name.startswith(f"{EVALUATION_DIR}/") and not evaluated:
            continue
        if (work_dir / name).is_file():
            (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(work_dir / name, out_dir / name)


def _name_app_state(out_dir: Path, info: dict[str, Any]) -> None:
    """The run's settings (what "train again" reads: src.setup.app_state) named in ``info`` with
    the project version they record; nothing when the run has none."""
    if not (out_dir / APP_STATE).is_file():
        return
    info["app_state"] = APP_STATE
    state = json.loads((out_dir / APP_STATE).read_text(encoding="utf-8"))
    info["project_version"] = (state.get("project") or {}).get("version_id")


def _evaluation_summary(out_dir: Path) -> dict[str, Any] | None:
    """The uploaded evaluation's summary (``src.evaluation.evaluate``'s metrics.json), or None
    when the run was not evaluated."""
    metrics = out_dir / EVALUATION_DIR / EVALUATION_METRICS
    return json.loads(metrics.read_text(encoding="utf-8")) if metrics.is_file() else None


def _evaluated_thresholds(work_dir: Path, best: Path | None) -> dict[str, Any] | None:
    """The class thresholds the evaluation chose for the best checkpoint on the validation
    split (``evaluation/metrics.json``; src.evaluation.class_thresholds), or None: not evaluated, no
    true positive to choose from, or the last evaluation was of another checkpoint or split."""
    path = work_dir / EVALUATION_DIR / EVALUATION_METRICS
    if best is None or not path.is_file():
        return None
    evaluation = json.loads(path.read_text(encoding="utf-8"))
    if evaluation.get("checkpoint") != best.name or evaluation.get("split") != "val":
        return None
    return evaluation.get(CLASS_THRESHOLDS) or None


def _copy_exports(work_dir: Path, out_dir: Path) -> dict[str, str]:
    """The run's exports (``src.export.formats``) into the artifacts: {format: path relative to the
    run folder}, as ``experiment_info.export`` lists them."""
    source = work_dir / EXPORT_DIR
    found = {fmt.name: sorted(source.glob("*" + fmt.suffix)) for fmt in export_table()}
    found = {fmt: paths[-1] for fmt, paths in found.items() if paths}
    if not found:
        return {}
    target = out_dir / EXPORT_DIR
    target.mkdir()
    for path in [*found.values(), source / EXPORT_CLASSES]:
        if path.is_file():
            shutil.copy2(path, target / path.name)
    return {fmt: f"{EXPORT_DIR}/{path.name}" for fmt, path in found.items()}


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1), encoding="utf-8")


def _readme(
    summary: RunSummary,
    checkpoints: list[str],
    exports: dict[str, str],
    thresholds: dict[str, Any] | None = None,
) -> str:
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in summary.best_metric.items()) or "none"
    lines = [
        f"# {summary.model_name} on {summary.project_name}",
        "",
        f"- run: {summary.run_id} ({summary.state} after {summary.epochs_done} epochs)",
        f"- task: {summary.task}",
        f"- classes: {', '.join(summary.classes)}",
        f"- best validation: {metrics}",
        f"- checkpoints (inference: state_dict + meta): {', '.join(checkpoints)}",
        "",
        *_thresholds_lines(thresholds),
        *_field_examples(summary.hyperparameters, checkpoints[0]),
        *_sliced_example(summary.hyperparameters, checkpoints[0]),
        *(_onnx_example(exports["onnx"]) if "onnx" in exports else []),
        f"`{LOGS_DIR}/` holds the training log and the logged scalars; `{RUN_METRICS}` the metric "
        "history.",
        f"`{RESUME_DIR}/` holds the full training state (optimizer, schedulers, RNG): the app's "
        "Resume",
        "tab, or `python -m src.cli runs --team-files`, continues the run from it.",
        "",
    ]
    return "\n".join(lines)


def _thresholds_lines(thresholds: dict[str, Any] | None) -> list[str]:
    """The README's table of the class thresholds, and what the serving app, which takes one
    confidence threshold for every class, can do with them."""
    if not thresholds:
        return []
    shared = thresholds["global_threshold"]
    rows = [
        f"| {name} | {c['threshold']:.3f}"
        + (" |" if c["source"] == "class" else " (the global one: no prediction matched) |")
        for name, c in thresholds["classes"].items()
    ]
    return [
        "Score thresholds per class, chosen on the validation split (each class's F1-optimal "
        f"score; the one for every class is {shared:.3f}; `{EVALUATION_DIR}/{EVALUATION_REPORT}` "
        "shows precision and recall at each):",
        "",
        "| class | threshold |",
        "|---|---|",
        *rows,
        "",
        f"The best checkpoint's `meta['{CLASS_THRESHOLDS}']`, the ONNX file's metadata and "
        f"`{EXPERIMENT_INFO}` hold them; the app's `predict` and the ONNX example apply them. "
        "The platform's serving app (Serve MMDetection 3.0) takes one confidence threshold "
        f"(`conf`) for every class and cannot apply them: give it {shared:.3f}, or keep each "
        "class's predictions above its threshold yourself.",
        "",
    ]


def _field_examples(hyperparameters: dict[str, Any], checkpoint: str) -> list[str]:
    """The run README's three ways to use the run with the field's own tools and their defaults
    (no code of this app needed; tests/runs/test_serving_contract.py runs each): mmdet's
    ``init_detector``, its ``DetInferencer`` (what mmdet's demo/image_demo.py calls) and SAHI,
    which predicts a large image tile by tile."""
    sliced = int(hyperparameters.get("slice_size") or 0)
    size = sliced or max(hyperparameters.get("input_size") or [640])
    overlap = float(hyperparameters.get("slice_overlap", 0.2)) if sliced else 0.2
    examples = {
        "Use outside Supervisely with mmdet's own API (mmdet 3, mmcv 2):": INIT_DETECTOR_EXAMPLE,
        "Or mmdet's inferencer, which draws what it finds (as mmdet's demo/image_demo.py):": (
            INFERENCER_EXAMPLE
        ),
        f"Large images tile by tile with SAHI (`pip install sahi`), tiles of {size} px:": (
            SAHI_EXAMPLE
        ),
    }
    lines: list[str] = []
    for title, program in examples.items():
        text = program.format(config=RUN_CONFIG, checkpoint=checkpoint, size=size, overlap=overlap)
        lines += [title, "", "```python", *text.splitlines(), "```", ""]
    return lines


INIT_DETECTOR_EXAMPLE = """\
import sys
from mmdet.apis import inference_detector, init_detector

model = init_detector("{config}", "{checkpoint}", device="cpu")
found = inference_detector(model, sys.argv[1]).pred_instances
found = found[found.scores >= 0.3]
for box, label, score in zip(found.bboxes.tolist(), found.labels.tolist(), found.scores.tolist()):
    print(model.dataset_meta["classes"][label], f"{{score:.2f}}", [round(v) for v in box])
"""

INFERENCER_EXAMPLE = """\
import sys
from mmdet.apis import DetInferencer

inferencer = DetInferencer(model="{config}", weights="{checkpoint}", device="cpu")
# outputs/vis/: the image drawn in the project's class colours; outputs/preds/: JSON
inferencer(sys.argv[1], out_dir="outputs", pred_score_thr=0.3)
"""

SAHI_EXAMPLE = """\
import sys
from sahi import AutoDetectionModel
from sahi.predict import get_sliced_prediction

model = AutoDetectionModel.from_pretrained(
    model_type="mmdet", model_path="{checkpoint}", config_path="{config}", device="cpu",
    confidence_threshold=0.3,
)
result = get_sliced_prediction(
    sys.argv[1], model, slice_height={size}, slice_width={size},
    overlap_height_ratio={overlap}, overlap_width_ratio={overlap},
)
for p in result.object_prediction_list:
    print(p.category.name, f"{{p.score.value:.2f}}", [round(v) for v in p.bbox.to_xyxy()])
"""


def _sliced_example(hyperparameters: dict[str, Any], checkpoint: str) -> list[str]:
    """A sliced run's README: inference on a large image tile by tile, as it validated (mmdet and
    mmcv only; tests/engine/test_sliced_training.py runs it)."""
    size = int(hyperparameters.get("slice_size") or 0)
    if not size:
        return []
    overlap = float(hyperparameters.get("slice_overlap", 0.2))
    step = max(1, round(size * (1 - overlap)))
    return [
        f"This model was trained and validated on tiles of {size} px (overlap {overlap:g}) of "
        "larger images. Predict a large image the same way, tile by tile (the app's validation "
        "merges overlapping detections by greedy merging; mmcv's NMS is close), or serve it with "
        f"the platform's sliding-window inference at {size} px:",
        "",
        "```python",
        *SLICED_EXAMPLE.format(
            config=RUN_CONFIG, checkpoint=checkpoint, size=size, step=step
        ).splitlines(),
        "```",
        "",
    ]


SLICED_EXAMPLE = """\
import sys
import mmcv, torch
from mmcv.ops import batched_nms
from mmdet.apis import init_detector, inference_detector

model = init_detector("{config}", "{checkpoint}", device="cpu")
size, step = {size}, {step}
image = mmcv.imread(sys.argv[1])
height, width = image.shape[:2]
starts = lambda n: sorted({{*range(0, max(n - size, 0), step), max(n - size, 0)}})
tiles = [(x, y) for y in starts(height) for x in starts(width)]
results = inference_detector(model, [image[y : y + size, x : x + size] for x, y in tiles])
shifts = [torch.tensor([x, y, x, y], dtype=torch.float32) for x, y in tiles]
boxes = torch.cat([r.pred_instances.bboxes + d for d, r in zip(shifts, results)])
scores = torch.cat([r.pred_instances.scores for r in results])
labels = torch.cat([r.pred_instances.labels for r in results])
dets, keep = batched_nms(boxes, scores, labels, dict(type="nms", iou_threshold=0.5))
for (x1, y1, x2, y2, score), label in zip(dets.tolist(), labels[keep].tolist()):
    if score >= 0.3:
        name = model.dataset_meta["classes"][label]
        print(f"{{name}} {{score:.2f}} at {{x1:.0f}},{{y1:.0f}},{{x2:.0f}},{{y2:.0f}}")
"""


def _onnx_example(onnx_file: str) -> list[str]:
    """The run README's ONNX section: a complete program that needs onnxruntime, numpy and
    OpenCV only, and draws what it finds (tests/engine/test_onnx_export.py runs it)."""
    return [
        f"Without mmdet: `{onnx_file}` runs with ONNX Runtime alone "
        "(`pip install onnxruntime numpy opencv-python`):",
        "",
        "```python",
        *ONNX_EXAMPLE.format(onnx_file=onnx_file).splitlines(),
        "```",
        "",
    ]


# The pre-processing is mmcv's keep-ratio resize, the image at the top-left of a canvas padded to
# the model's divisor; the graph normalises, decodes, runs NMS and maps boxes back (src/engine/
# onnx_graph.py). Its parameters are in the file's metadata.
ONNX_EXAMPLE = """\
import json, sys
import cv2, numpy as np, onnxruntime as ort

session = ort.InferenceSession("{onnx_file}", providers=["CPUExecutionProvider"])
meta = json.loads(session.get_modelmeta().custom_metadata_map["sly_mmdet_export"])
(long_edge, short_edge), divisor = meta["scale"], meta["divisor"]
thresholds = meta.get("class_thresholds") or {{}}  # per class, chosen on the validation split
for path in sys.argv[1:]:
    image = cv2.imread(path)
    h, w = image.shape[:2]
    factor = min(long_edge / max(h, w), short_edge / min(h, w))
    size = (int(w * factor + 0.5), int(h * factor + 0.5))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    canvas_h, canvas_w = (-(-s // divisor) * divisor for s in (size[1], size[0]))
    canvas = np.zeros((1, 3, canvas_h, canvas_w), np.float32)
    canvas[0, :, : size[1], : size[0]] = resized.transpose(2, 0, 1)
    sizes = np.array([[h, w]], np.float32)  # masks, for RTMDet-Ins: src/export/onnx_runtime.py
    dets, labels = session.run(["dets", "labels"], {{"images": canvas, "orig_size": sizes}})
    for (x1, y1, x2, y2, score), label in zip(dets[0], labels[0]):
        name = meta["classes"][label]
        if score < thresholds.get(name, 0.3):
            continue
        print(f"{{path}}: {{name}} {{score:.2f}} at {{x1:.0f}},{{y1:.0f}},{{x2:.0f}},{{y2:.0f}}")
        cv2.rectangle(image, (int(x1), int(y1)), (int(x2), int(y2)), (0, 255, 0), 2)
        cv2.putText(image, f"{{name}} {{score:.2f}}", (int(x1), max(int(y1) - 4, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 0), 1)
    cv2.imwrite(path + ".pred.jpg", image)
"""
