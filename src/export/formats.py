"""Export a run's checkpoint for deployment without mmdet: ONNX (ONNX Runtime) and TensorRT.

Called after a finished run that asked for it (src.training.end_of_run), and on demand (the CLI's
``export``, ``TrainingController.export``). The files go to the run's ``export/`` folder with
``classes.json`` (the SDK's TrainApp layout), and the upload lists them in
``experiment_info.export``.

Each format declared in ``src.core.export_formats`` has its row in :data:`EXPORTERS` here: how
its file is built and why this machine cannot build it. A new format is a row in each
(``tests/export/test_format_table.py`` holds the two tables to the same names).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from src.config.metadata import RunMetadata
from src.config.text import load_config_file
from src.core.export_formats import build_order, export_format, export_names
from src.core.layout import (
    CLASS_THRESHOLDS,
    EVALUATION_DIR,
    EVALUATION_REPORT,
    EVALUATION_SPEED,
    EXPORT_CLASSES,
    EXPORT_DIR,
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


@dataclass
class ExportJob:
    """One export's inputs, shared by the formats' builders: the run's config, the checkpoint,
    every format's target file (a format built from another finds its source there)."""

    cfg: object
    checkpoint: Path
    targets: dict[str, Path]
    classes: list[str]
    input_size: int | None = None
    fp16: bool = True

    @cached_property
    def model(self):
        """The checkpoint's model, loaded once (the ONNX file and the speed test share it)."""
        from src.export.onnx_export import load_model

        return load_model(self.cfg, self.checkpoint)


@dataclass(frozen=True)
class Exporter:
    """How one declared format is made.

    Args:
        build: writes the format's file (its target) for an ``ExportJob``.
        blocker: why this machine cannot build it (None: it can); checked before ``build``.
        refresh: brings a file kept from an earlier export up to date (None: kept as it is).
    """

    build: Callable[[ExportJob, Path], None]
    blocker: Callable[[], str | None] = lambda: None
    refresh: Callable[[ExportJob, Path], None] | None = None


def _write_onnx(job: ExportJob, onnx_path: Path) -> None:
    """The ONNX file of the job's model with the class thresholds the evaluation kept in the
    checkpoint's meta (src.evaluation.evaluate)."""
    from src.export.onnx_export import export_model

    thresholds = checkpoint_meta(job.checkpoint).get(CLASS_THRESHOLDS)
    export_model(job.cfg, job.model, onnx_path, input_size=job.input_size, classes=job.classes,
                 class_thresholds=thresholds)  # fmt: skip


def _refresh_onnx(job: ExportJob, onnx_path: Path) -> None:
    """An ONNX file kept from an export before the evaluation: its thresholds brought up to date."""
    from src.export.onnx_export import set_class_thresholds

    if thresholds := checkpoint_meta(job.checkpoint).get(CLASS_THRESHOLDS):
        set_class_thresholds(onnx_path, thresholds)


def _build_tensorrt(job: ExportJob, engine: Path) -> None:
    """The TensorRT engine from the job's ONNX file."""
    from src.export.onnx_export import preprocess_of
    from src.export.tensorrt_build import build_engine

    prep = preprocess_of(job.cfg, job.input_size)
    source = job.targets[export_format("tensorrt").built_from]
    build_engine(source, engine, max_side=prep.scale[0], divisor=prep.divisor, fp16=job.fp16)


def _tensorrt_blocker() -> str | None:
    from src.export.tensorrt_build import tensorrt_blocker

    return tensorrt_blocker()


# every format of src.core.export_formats, by name: how it is built
EXPORTERS: dict[str, Exporter] = {
    "onnx": Exporter(_write_onnx, refresh=_refresh_onnx),
    "tensorrt": Exporter(_build_tensorrt, blocker=_tensorrt_blocker),
}


def format_blocker(name: str) -> str | None:
    """Why this machine cannot export format ``name`` (None: it can): no GPU for a format that
    needs one, else what its exporter says."""
    declared = export_format(name)
    if declared.needs_gpu:
        import torch

        if not torch.cuda.is_available():
            source = export_format(declared.built_from).title if declared.built_from else None
            return f"{declared.title} needs an NVIDIA GPU and this machine has none" + (
                f": the {source} file is the export" if source else ""
            )
    return EXPORTERS[name].blocker()


def export_run(
    work_dir: str | Path,
    formats: tuple[str, ...] = (),
    checkpoint: str | Path | None = None,
    *,
    input_size: int | None = None,
    fp16: bool = True,
    speed_test: bool = False,
    replace: bool = False,
) -> ExportResult:
    """Export the run's best (else newest, or the given) checkpoint to ``formats`` in its
    ``export/`` folder (:func:`export_targets`; none given: the first format declared). An
    architecture the exporter does not cover, or an input size outside training's range, raises
    ``ExportError`` before anything is written; a format this machine cannot build (TensorRT
    without a GPU) is skipped, with the reason. A file already there is kept
    when it is newer than the checkpoint (an export of it as it is now) and refused when older,
    unless ``replace``. ``speed_test``: PyTorch and ONNX Runtime timed side by side on the
    validation images, into ``evaluation/speed.json`` and the report (a failure there is
    logged; the export stands)."""
    from src.export.onnx_export import ExportError, export_blocker

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
    job = ExportJob(cfg, path, targets, list(RunMetadata.of(cfg).classes), input_size, fp16)
    for name, target in targets.items():
        _export_one(job, name, target, result)
    export_dir = path.parent / EXPORT_DIR
    export_dir.mkdir(parents=True, exist_ok=True)
    (export_dir / EXPORT_CLASSES).write_text(
        json.dumps({i: name for i, name in enumerate(job.classes)}, indent=1), encoding="utf-8"
    )
    onnx_path = targets.get("onnx")
    if speed_test and onnx_path is not None and "onnx" in result.files:
        try:
            result.speed = _speed_test(cfg, job.model, onnx_path, work_dir / EVALUATION_DIR)
        except Exception:
            logger.exception("the speed test of %s failed; the export stands", onnx_path.name)
    result.seconds = time.monotonic() - started
    return result


def _export_one(job: ExportJob, name: str, target: Path, result: ExportResult) -> None:
    """Format ``name`` into ``target`` (kept: refreshed), or the reason it was skipped (this
    machine cannot build it, or the file it is built from was skipped) into ``result``."""
    exporter = EXPORTERS[name]
    source = export_format(name).built_from
    if name in result.kept:
        if exporter.refresh is not None:
            exporter.refresh(job, target)
    elif blocker := (
        f"{source} was not exported" if source and source not in result.files
        else format_blocker(name)
    ):  # fmt: skip
        result.skipped[name] = blocker
        logger.warning("%s export skipped: %s", export_format(name).title, blocker)
        return
    else:
        exporter.build(job, target)
    result.files[name] = str(target)


def export_targets(
    checkpoint: Path, formats: tuple[str, ...], input_size: int | None = None
) -> dict[str, Path]:
    """Where an export of ``checkpoint`` goes, by format: ``export/<checkpoint's stem>.onnx``
    (and ``.engine``, built from it); with an input size of its own, a different model, beside
    the run's: ``<stem>_<N>px.onnx``. None given: the first format declared."""
    name = checkpoint.stem + (f"_{input_size}px" if input_size else "")
    wanted = build_order(formats or export_names()[:1])
    return {
        fmt: checkpoint.parent / EXPORT_DIR / (name + export_format(fmt).suffix) for fmt in wanted
    }


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
