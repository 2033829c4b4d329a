"""Evaluation after training: the platform's Model Benchmark metrics and a report a person reads.

The best checkpoint (else the newest) is evaluated on the run's validation split with the SDK's
own evaluators (``sly.nn.benchmark.ObjectDetectionEvaluator`` / ``InstanceSegmentationEvaluator``),
given the ground truth and the predictions as local Supervisely projects
(``src.data.eval_projects``): mAP, AP50, AP75, precision, recall, F1, per-class AP, the confusion
matrix and calibration are the platform's numbers. The predictions are the ones the best epoch's
validation already made (``src.hooks.predictions``) when they exist; otherwise the checkpoint
predicts the split once (``src.engine.predict``).

Results go to ``<run>/evaluation/``: ``metrics.json`` and a self-contained ``report.html``
(``src.runs.report``). The packer uploads the folder with the run and copies the key metrics into
``experiment_info.json``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from src.config.compose import relocate_run
from src.config.compose_data import train_dataset_cfg, val_split_args
from src.config.metadata import RunMetadata
from src.config.text import load_config_file
from src.core.errors import EvaluationError, RequestError
from src.core.layout import (
    BEST_INFO,
    BEST_PREDICTIONS,
    CLASS_THRESHOLDS,
    EVALUATION_DIR,
    EVALUATION_METRICS,
    EVALUATION_PREDICTIONS,
    EVALUATION_REPORT,
    EVALUATION_SPEEDTEST,
    RUN_CONFIG,
    coco_gt_file,
)
from src.core.tasks import DETECTION, SEGMENTATION
from src.data.eval_projects import write_eval_projects
from src.data.reader import load_split
from src.runs.atomic_files import write_json_atomic, write_text_atomic
from src.runs.checkpoints import best_checkpoint, last_checkpoint

logger = logging.getLogger(__name__)

PRIMARY_METRIC = "mAP"  # the SDK evaluators' (``ObjectDetectionEvalResult.PRIMARY_METRIC``)
SDK_MAX_DETECTIONS = 100  # the SDK evaluators' default detections per image (evaluation_params)


def max_detections(cfg: Any) -> int:
    """The detections per image the SDK's evaluators are to read: their default, or what a
    sliced run's validation keeps per whole image (``SlicedCocoMetric.max_per_img``: a large
    image holds many more objects than 100), so that they score what the validation scored."""
    evaluator = cfg.get("val_evaluator") or {}
    if isinstance(evaluator, dict) and evaluator.get("type") == "SlicedCocoMetric":
        return int(evaluator.get("max_per_img") or SDK_MAX_DETECTIONS)
    return SDK_MAX_DETECTIONS


@dataclass
class Evaluation:
    """The outcome the UI, the API and the CLI show, and what ``metrics.json`` holds."""

    checkpoint: str
    split: str  # val, or train on request
    metrics: dict[str, float]  # the SDK's key metrics (mAP, AP50, AP75, f1, precision, ...)
    per_class_ap: dict[str, float]
    report: str  # path of report.html
    reused_predictions: bool  # the best epoch's validation predictions (not predicted again)
    validation_map: float | None = None  # what the validation logged for this checkpoint
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    # each class's F1-optimal score threshold and what it gives (src.evaluation.class_thresholds)
    class_thresholds: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "split": self.split,
            "primary_metric": PRIMARY_METRIC,
            "metrics": self.metrics,
            "per_class_ap": self.per_class_ap,
            "report": self.report,
            "reused_predictions": self.reused_predictions,
            "validation_map": self.validation_map,
            "seconds": round(self.seconds, 2),
            "notes": self.notes,
            CLASS_THRESHOLDS: self.class_thresholds,
        }


def key_metrics_line(metrics: dict[str, Any]) -> str:
    """The key metrics as the Training step and the CLI show them."""
    return "  ".join(
        f"{name} {metrics[name]:.3f}"
        for name in ("mAP", "AP50", "AP75", "precision", "recall", "f1")
        if metrics.get(name) is not None
    )


def _plain(value: Any) -> Any:
    """numpy scalars → floats, NaN → None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _split_config(cfg: Any, work_dir: Path, split: str, project_dir: str | None) -> Any:
    """The run's config with ``split`` as its validation data (the train split keeps the
    validation pipeline: no augmentation) and the project where it is now."""
    if project_dir is not None:
        relocate_run(cfg, work_dir, project_dir)
    if split == "train":
        val, train = cfg.val_dataloader.dataset, train_dataset_cfg(cfg)
        for key in ("datasets", "items"):
            val[key] = train.get(key)
        val["coco_gt_file"] = str(coco_gt_file(work_dir, "train"))
        cfg.val_evaluator["ann_file"] = val["coco_gt_file"]
    elif split != "val":
        raise RequestError(f"split {split!r} is unknown: use val or train")
    return cfg


def _kept_predictions(work_dir: Path, checkpoint: Path, segmentation: bool) -> tuple[list, dict]:
    """The best epoch's validation predictions when they belong to ``checkpoint``."""
    info_path = work_dir / BEST_INFO
    if not info_path.is_file():
        return [], {}
    info = json.loads(info_path.read_text(encoding="utf-8"))
    kind = "segm" if segmentation else "bbox"
    path = work_dir / f"{BEST_PREDICTIONS}.{kind}.json"
    if info.get("checkpoint") != checkpoint.name or not path.is_file():
        return [], {}
    return json.loads(path.read_text(encoding="utf-8")), info


def _predict(cfg: Any, checkpoint: Path, scratch: Path, segmentation: bool) -> list[dict]:
    from src.engine.predict import predict_split

    prefix = scratch / "predictions"
    predict_split(cfg, checkpoint, str(prefix), scratch / "runner")
    kind = "segm" if segmentation else "bbox"
    return json.loads(Path(f"{prefix}.{kind}.json").read_text(encoding="utf-8"))


class _NoProgress:
    """The evaluators' progress bar (``with progress(message=..., total=...) as bar``), silent:
    the app shows its own state, the CLI its own line."""

    def __call__(self, **_: Any) -> _NoProgress:
        return self

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *_: Any) -> None:
        return None

    def update(self, *_: Any) -> None:
        return None


def sdk_evaluation_params(evaluator_cls: Any, max_dets: int) -> dict[str, Any]:
    """The SDK evaluator's own default parameters (its YAML), with ``max_dets`` per image."""
    import yaml

    return yaml.safe_load(evaluator_cls.load_yaml_evaluation_params()) | {
        "max_detections": int(max_dets)
    }


def _sdk_evaluation(
    gt_dir: Path,
    pred_dir: Path,
    result_dir: Path,
    segmentation: bool,
    max_dets: int = SDK_MAX_DETECTIONS,
) -> Any:
    """The SDK's evaluator over the two projects; its MetricProvider (curves, matrix, tables).
    pycocotools prints its summary and numpy warns about classes without matches: both quiet."""
    from supervisely.nn.benchmark import InstanceSegmentationEvaluator, ObjectDetectionEvaluator

    evaluator_cls = InstanceSegmentationEvaluator if segmentation else ObjectDetectionEvaluator
    evaluator = evaluator_cls(
        str(gt_dir), str(pred_dir), result_dir=str(result_dir), progress=_NoProgress(),
        evaluation_params=sdk_evaluation_params(evaluator_cls, max_dets),
    )  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        evaluator.evaluate()
        try:
            return evaluator.eval_result_cls.from_evaluator(evaluator).mp
        except RuntimeError as exc:  # "Model predicted no TP matches": no curve to draw
            if "no TP" not in str(exc):
                raise
            gt = evaluator.cocoGt
            names = [gt.cats[c]["name"] for c in gt.getCatIds()]
            return _NoMatches(evaluator.eval_data["coco_metrics"], names)


class _NoMatches:
    """What is known of a model none of whose predictions matches an object (IoU ≥ 0.5), or that
    predicted nothing at all: the COCO numbers (all zero or nearly). The SDK's MetricProvider
    refuses such a model (and its evaluator one without predictions); the report says so
    instead of drawing curves."""

    def __init__(self, coco_metrics: dict[str, Any], cat_names: list[str]) -> None:
        self.coco_metrics = coco_metrics
        self.cat_names = list(cat_names)

    @classmethod
    def nothing_predicted(cls, classes: list[str]) -> _NoMatches:
        return cls({"mAP": 0.0, "AP50": 0.0, "AP75": 0.0}, classes)

    def key_metrics(self) -> dict[str, Any]:
        metrics = {k: self.coco_metrics[k] for k in ("mAP", "AP50", "AP75")}
        return metrics | {"precision": 0.0, "recall": 0.0, "f1": 0.0}

    def AP_per_class(self) -> np.ndarray:
        return np.zeros(len(self.cat_names))


def evaluate_run(
    work_dir: str | Path,
    checkpoint: str | Path | None = None,
    *,
    project_dir: str | None = None,
    split: str = "val",
) -> Evaluation:
    """Evaluate a run's best (else newest, or the given) checkpoint on its validation split (or
    ``split``); writes ``evaluation/metrics.json`` and ``evaluation/report.html`` in its folder.
    ``project_dir``: where the run's project is now, if it moved."""
    from src.runs.report import write_report

    started = time.monotonic()
    work_dir = Path(work_dir)
    cfg = _split_config(load_config_file(work_dir / RUN_CONFIG), work_dir, split, project_dir)
    path = _checkpoint_to_evaluate(work_dir, checkpoint)
    data = val_split_args(cfg)
    segmentation = data.pop("task") == SEGMENTATION
    data_list, _ = load_split(
        data["project_dir"], data["classes"], SEGMENTATION if segmentation else DETECTION,
        data["datasets"], data["items"], data["keep_empty_images"], data["cache_dir"],
        ignore=data["ignore"],
    )  # fmt: skip
    out = work_dir / EVALUATION_DIR
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".work_") as scratch:
        predictions, kept = [], {}
        if split == "val":
            predictions, kept = _kept_predictions(work_dir, path, segmentation)
        if not kept:
            logger.info("evaluation of %s: predicting the validation split", path.name)
            predictions = _predict(cfg, path, Path(scratch), segmentation)
        gt_dir, pred_dir = write_eval_projects(
            data_list, data["classes"], predictions, Path(scratch) / "projects", segmentation,
            predictions_file=out / EVALUATION_PREDICTIONS, max_detections=max_detections(cfg),
        )  # fmt: skip
        if predictions:
            mp = _evaluated(gt_dir, pred_dir, Path(scratch) / "sdk", segmentation, cfg, path)
        else:  # the SDK's evaluator refuses this case ("Not found any predictions")
            mp = _NoMatches.nothing_predicted(data["classes"])
        notes = [] if predictions else [_nothing_predicted_note(len(data_list), cfg)]
        result = _evaluation(mp, path, split, out / EVALUATION_REPORT, kept, segmentation, notes)
        _choose_thresholds(result, mp, path, data["classes"])
        model = RunMetadata.of(cfg).model_name
        title = f"Evaluation of {model}, run {work_dir.name} ({split} split)"
        report = write_report(
            _plain(result.summary()), mp, data_list, predictions, data["classes"], title
        )
        write_text_atomic(out / EVALUATION_REPORT, report)
    result.seconds = time.monotonic() - started
    saved = result.summary() | {"report": EVALUATION_REPORT}  # beside it, wherever it is copied
    write_json_atomic(_plain(saved), out / EVALUATION_METRICS)
    return result


def _checkpoint_to_evaluate(work_dir: Path, checkpoint: str | Path | None) -> Path:
    """The checkpoint named, else the run's best, else its newest; refused when there is none."""
    path = Path(checkpoint) if checkpoint else None
    path = path or best_checkpoint(work_dir) or last_checkpoint(work_dir)
    if path is None:
        raise RequestError(f"run {work_dir.name} has no checkpoint to evaluate")
    if not path.is_file():  # named, but not there
        raise RequestError(f"run {work_dir.name} has no checkpoint {path.name}")
    return path


def _evaluated(
    gt_dir: Path, pred_dir: Path, scratch: Path, segmentation: bool, cfg: Any, checkpoint: Path
) -> Any:
    """The SDK's evaluation of the predictions project against the ground truth's (its
    MetricProvider); a failure of the evaluator is an ``EvaluationError`` naming the checkpoint."""
    try:
        return _sdk_evaluation(gt_dir, pred_dir, scratch, segmentation, max_detections(cfg))
    except (RuntimeError, ValueError) as exc:
        raise EvaluationError(
            f"the SDK evaluator cannot evaluate {checkpoint.name}: {exc}"
        ) from exc


def _evaluation(
    mp: Any,
    checkpoint: Path,
    split: str,
    report: Path,
    kept: dict,
    segmentation: bool,
    notes: list[str],
) -> Evaluation:
    """The evaluation's numbers from the metric provider ``mp``, compared with the validation's
    own mAP when the best epoch's predictions were reused (``kept``)."""
    metrics = _plain(mp.key_metrics())
    per_class = _plain(dict(zip(mp.cat_names, mp.AP_per_class().tolist(), strict=True)))
    key = f"coco/{'segm' if segmentation else 'bbox'}_mAP"
    validation = (kept.get("metrics") or {}).get(key)
    return Evaluation(
        checkpoint=checkpoint.name,
        split=split,
        metrics=metrics,
        per_class_ap=per_class,
        report=str(report),
        reused_predictions=bool(kept),
        validation_map=validation,
        notes=_agreement_notes(metrics.get("mAP"), validation) + notes,
    )


def _choose_thresholds(result: Evaluation, mp: Any, checkpoint: Path, classes: list[str]) -> None:
    """Each class's score threshold (``src.evaluation.class_thresholds``) into ``result``, and, for
    the validation split (the split thresholds are chosen on), into the evaluated checkpoint's meta:
    the ONNX export reads them from there (and so ``predict``). A checkpoint that cannot be
    rewritten costs a note, not the evaluation."""
    from src.evaluation.class_thresholds import fallback_notes, of_metric_provider
    from src.runs.checkpoint_io import set_checkpoint_meta

    chosen = of_metric_provider(mp, order=classes)
    result.class_thresholds = chosen
    result.notes += fallback_notes(chosen, result.split)
    if chosen is None or result.split != "val":
        return
    try:
        set_checkpoint_meta(checkpoint, CLASS_THRESHOLDS, chosen["thresholds"])
    except Exception as exc:  # a full disk, a read-only folder
        logger.exception("the class thresholds were not written into %s", checkpoint.name)
        result.notes.append(f"the class thresholds were not kept in {checkpoint.name}: {exc}")


def _nothing_predicted_note(images: int, cfg: Any) -> str:
    """What a model that predicted nothing means, and what to try."""
    test_cfg = (cfg.get("model") or {}).get("test_cfg") or {}
    test_cfg = test_cfg.get("rcnn") if isinstance(test_cfg.get("rcnn"), dict) else test_cfg
    thr = test_cfg.get("score_thr")
    above = f" with a score of at least {thr}" if thr else ""
    return (
        f"the model predicted nothing{above} on the {images} images of the split, so every "
        "metric is 0: train longer (more epochs), start from pretrained weights, use a larger "
        "input size, or lower the score threshold (score_thr)"
    )


def _agreement_notes(sdk_map: float | None, validation_map: float | None) -> list[str]:
    """Say whether the report's mAP is the validation's, and why not when it is not."""
    if validation_map is None:
        return ["the checkpoint's validation mAP is not known here: its predictions were made "
                "for this evaluation"]  # fmt: skip
    if sdk_map is not None and abs(sdk_map - validation_map) <= 1e-3:
        return [f"mAP equals the validation mAP of this checkpoint ({validation_map:.4f}): the "
                "same predictions, the COCO definition"]  # fmt: skip
    return [f"mAP {sdk_map} differs from the validation mAP {validation_map:.4f}: mmdet's "
            "CocoMetric and the SDK evaluator disagree on these predictions"]  # fmt: skip


def speed_test_run(work_dir: str | Path, checkpoint: str | Path | None = None) -> dict[str, Any]:
    """The platform's Model Benchmark speed test of the run's best (else newest) checkpoint, on
    its validation images, on the run's device (:func:`_timing_device`):
    ``evaluation/speedtest.json`` in the SDK's form (``src.engine.speed.benchmark_speedtest``;
    the platform's report shows it)."""
    import os
    import platform

    import torch

    from src.engine.speed import benchmark_speedtest
    from src.export.formats import validation_images
    from src.export.onnx_export import load_model

    work_dir = Path(work_dir)
    cfg = load_config_file(work_dir / RUN_CONFIG)
    path = (
        Path(checkpoint) if checkpoint else best_checkpoint(work_dir) or last_checkpoint(work_dir)
    )
    if path is None:
        raise RequestError(f"run {work_dir.name} has no checkpoint to time")
    images = validation_images(cfg)
    if not images:
        raise RequestError(f"run {work_dir.name} has no validation image to time")
    device = _timing_device(RunMetadata.of(cfg).device)
    hardware = (
        torch.cuda.get_device_name(device) if device != "cpu"
        else f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    )  # fmt: skip
    model = load_model(cfg, path).to(device).eval()
    result = benchmark_speedtest(model, images, device, hardware)
    write_json_atomic(result, work_dir / EVALUATION_DIR / EVALUATION_SPEEDTEST)
    return result


def _timing_device(trained_on: str) -> str:
    """Where the speed test times a run: the device it trained on (its first GPU: the card the
    user chose, not another job's cuda:0); a GPU that this machine lacks (the app restarted
    elsewhere) gives way to the first one here, or the CPU."""
    import torch

    if not trained_on.startswith("cuda"):
        return trained_on
    if not torch.cuda.is_available():
        return "cpu"
    index = int(trained_on.partition(":")[2] or 0)
    return trained_on if index < torch.cuda.device_count() else "cuda:0"
