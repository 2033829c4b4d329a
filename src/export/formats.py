"""Export a run's checkpoint for deployment without mmdet: ONNX (ONNX Runtime) and TensorRT.

Called after a finished run that asked for it (src.training.end_of_run), and on demand (the CLI's
``export``, ``TrainingController.export``). The files go to the run's ``export/`` folder with
``classes.json`` (the SDK's TrainApp layout), and the upload lists them in
``experiment_info.export``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from src.config.metadata import RunMetadata
from src.config.text import load_config_file
from src.core.layout import (
    CLASS_THRESHOLDS,
    EVALUATION_DIR,
    EVALUATION_REPORT,
    EVALUATION_SPEED,
    EXPORT_CLASSES,
    EXPORT_DIR,
    EXPORT_SUFFIXES,
    RUN_CONFIG,
)
from src.runs.checkpoint_io import checkpoint_meta
from src.runs.checkpoints import best_checkpoint, last_checkpoint

logger = logging.getLogger(__name__)


@dataclass
class ExportResult:
    """What an export wrote (paths), and the formats that were skipped with the reason."""

    checkpoint: str
    files: dict[str, str] = field(default_factory=dict)  # format -> path
    skipped: dict[str, str] = field(default_factory=dict)  # format -> why
    seconds: float = 0.0
    speed: list[str] = field(default_factory=list)  # the speed test, in words (src.engine.speed)
    # formats whose file was already there, newer than the checkpoint: kept, not written again
    kept: list[str] = field(default_factory=list)


def export_run(
    work_dir: str | Path,
    formats: tuple[str, ...] = ("onnx",),
    checkpoint: str | Path | None = None,
    *,
    input_size: int | None = None,
    fp16: bool = True,
    speed_test: bool = False,
    replace: bool = False,
) -> ExportResult:
    """Export the run's best (else newest, or the given) checkpoint to ``formats`` in its
    ``export/`` folder (:func:`export_targets`). An architecture the exporter does not cover, or
    an input size outside training's range, raises ``ExportError`` before anything is written;
    TensorRT on a machine without it is skipped, with the reason. A file already there is kept
    when it is newer than the checkpoint (an export of it as it is now) and refused when older,
    unless ``replace``. ``speed_test``: PyTorch and ONNX Runtime timed side by side on the
    validation images, into ``evaluation/speed.json`` and the report (a failure there is
    logged; the export stands)."""
    from src.export.onnx_export import ExportError, export_blocker, load_model

    started = time.monotonic()
    work_dir = Path(work_dir)
    cfg = load_config_file(work_dir / RUN_CONFIG)
    reason = export_blocker(cfg) or input_size_problem(cfg, input_size)
    if reason:
        raise ExportError(reason)
    path = Path(checkpoint) if checkpoint else None
    path = path or best_checkpoint(work_dir) or last_checkpoint(work_dir)
    if path is None or not path.is_file():
        raise ExportError(f"run {work_dir.name} has no checkpoint to export")
    targets = export_targets(path, formats, input_size)
    result = ExportResult(checkpoint=str(path), kept=_kept(targets, path, replace))
    classes = list(RunMetadata.of(cfg).classes)
    onnx_path = targets["onnx"]
    # once: the speed test times the same model
    model = load_model(cfg, path) if speed_test or "onnx" not in result.kept else None
    _write_onnx(cfg, model, path, onnx_path, "onnx" in result.kept, input_size, classes)
    result.files["onnx"] = str(onnx_path)
    if "tensorrt" in targets and "tensorrt" not in result.kept:
        _build_tensorrt(cfg, onnx_path, targets["tensorrt"], input_size, fp16, result)
    elif "tensorrt" in targets:
        result.files["tensorrt"] = str(targets["tensorrt"])
    (onnx_path.parent / EXPORT_CLASSES).write_text(
        json.dumps({i: name for i, name in enumerate(classes)}, indent=1), encoding="utf-8"
    )
    if speed_test:
        try:
            result.speed = _speed_test(cfg, model, onnx_path, work_dir / EVALUATION_DIR)
        except Exception:
            logger.exception("the speed test of %s failed; the export stands", onnx_path.name)
    result.seconds = time.monotonic() - started
    return result


def _write_onnx(
    cfg, model, checkpoint: Path, onnx_path: Path, kept: bool, input_size: int | None,
    classes: list[str],
) -> None:  # fmt: skip
    """The ONNX file of ``model`` with the class thresholds the evaluation kept in
    ``checkpoint``'s meta (src.evaluation.evaluate), or, for a file ``kept`` from an export before
    that evaluation, those thresholds brought up to date in it."""
    from src.export.onnx_export import export_model, set_class_thresholds

    thresholds = checkpoint_meta(checkpoint).get(CLASS_THRESHOLDS)
    if not kept:
        export_model(cfg, model, onnx_path, input_size=input_size, classes=classes,
                     class_thresholds=thresholds)  # fmt: skip
    elif thresholds:
        set_class_thresholds(onnx_path, thresholds)


def export_targets(
    checkpoint: Path, formats: tuple[str, ...], input_size: int | None = None
) -> dict[str, Path]:
    """Where an export of ``checkpoint`` goes, by format: ``export/<checkpoint's stem>.onnx``
    (and ``.engine``, built from it); with an input size of its own, a different model, beside
    the run's: ``<stem>_<N>px.onnx``."""
    name = checkpoint.stem + (f"_{input_size}px" if input_size else "")
    wanted = ["onnx"] + (["tensorrt"] if "tensorrt" in formats else [])
    return {fmt: checkpoint.parent / EXPORT_DIR / (name + EXPORT_SUFFIXES[fmt]) for fmt in wanted}


def input_size_problem(cfg, input_size: int | None) -> str | None:
    """Why an export cannot resize to ``input_size`` (None: it can, or none is given): the
    range training allows, and at least the model's own smallest input."""
    from src.config.params import MAX_INPUT, MIN_INPUT

    if input_size is None:
        return None
    low = max(MIN_INPUT, RunMetadata.of(cfg).min_input_size)
    if low <= input_size <= MAX_INPUT:
        return None
    return f"the input size must be from {low} to {MAX_INPUT} px for this model, got {input_size}"


def _kept(targets: dict[str, Path], checkpoint: Path, replace: bool) -> list[str]:
    """The formats whose file is already there and newer than ``checkpoint`` (kept, not
    written again); an ``ExportError`` naming the files older than it, unless ``replace``."""
    from src.export.onnx_export import ExportError

    if replace:
        return []
    there = {fmt: p for fmt, p in targets.items() if p.is_file()}
    written = checkpoint.stat().st_mtime
    stale = [p for p in there.values() if p.stat().st_mtime < written]
    if stale:
        raise ExportError(
            f"{', '.join(str(p) for p in stale)} already exist and are older than "
            f"{checkpoint.name} (the export of an earlier file of that name): export with "
            "--force to replace them, or move them away"
        )
    return sorted(there)


def _build_tensorrt(
    cfg, onnx_path: Path, engine: Path, input_size: int | None, fp16: bool, result: ExportResult
) -> None:
    """The TensorRT engine from the ONNX file into ``result``, or the reason it was skipped."""
    from src.export.onnx_export import preprocess_of
    from src.export.tensorrt_build import build_engine, tensorrt_blocker

    blocker = tensorrt_blocker()
    if blocker:
        result.skipped["tensorrt"] = blocker
        logger.warning("TensorRT export skipped: %s", blocker)
        return
    prep = preprocess_of(cfg, input_size)
    build_engine(onnx_path, engine, max_side=prep.scale[0], divisor=prep.divisor, fp16=fp16)
    result.files["tensorrt"] = str(engine)


def _speed_test(cfg, model, onnx_path: Path, out: Path) -> list[str]:
    """Up to 8 validation images through PyTorch and ONNX Runtime (batch 1 and 8, on the CPU:
    ONNX Runtime is the CPU package here); the figures into ``speed.json`` and the report."""
    import platform

    from src.engine.speed import describe, measure
    from src.export.onnx_runtime import OnnxDetector
    from src.runs.report import add_section

    images = validation_images(cfg)
    if not images:
        return []
    rows = measure(speed_runners(model, OnnxDetector(str(onnx_path))), images, repeats=3)
    lines = describe(rows)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    out.mkdir(exist_ok=True)
    (out / EVALUATION_SPEED).write_text(
        json.dumps({"device": "cpu", "machine": machine, "rows": rows}, indent=1),
        encoding="utf-8",
    )
    report = out / EVALUATION_REPORT
    if report.is_file():
        head = f"On this machine's CPU ({machine}), median of 3:"
        add_section(report, "Speed test", [head, *lines])
    return lines


def validation_images(cfg, limit: int = 8) -> list:
    """The first ``limit`` images of the run's validation split (BGR arrays), for speed tests."""
    import cv2

    from src.config.compose_data import val_split_args
    from src.data.reader import load_split

    data = val_split_args(cfg)
    data_list, _ = load_split(
        data["project_dir"], data["classes"], data["task"], data["datasets"], data["items"],
        data["keep_empty_images"], data["cache_dir"], ignore=data["ignore"],
    )  # fmt: skip
    return [cv2.imread(info["img_path"]) for info in data_list[:limit]]


def speed_runners(model, detector) -> dict:
    """The speed test's contestants: mmdet's own inference with ``model`` (``load_model``'s),
    and ``detector`` (an ``OnnxDetector`` of its export)."""
    from src.engine.speed import torch_runner

    return {"pytorch": torch_runner(model),
            "onnxruntime": lambda batch: detector.predict(batch)}  # fmt: skip
