"""What lies where in a run's folder, locally and in Team Files, known in this one place; and run
ids are data, not paths: a safe charset, and a run's folder strictly inside app data.

This module imports nothing of ours: it is part of the bottom layer (``src.core``), so every
layer may use it, the composition (``config``) included. A name written or read anywhere
in a run's folder is a constant or a function here.

A run id names a folder that the app writes, renames and (on the platform, after a verified
upload) deletes. An id like ``.``, ``../x`` or ``/abs`` from a request, the CLI or a Team Files
``state.json`` would point those operations at app data itself or outside it; every id is
checked here before it becomes a path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

# One path component: starts with a letter or digit (so never "." or ".."), then letters,
# digits, ".", "_" or "-".
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class RunIdError(ValueError):
    """A run id or run file name that is not a safe single folder or file name."""


def check_run_id(run_id: object) -> str:
    """``run_id`` when it is a safe folder name; else :class:`RunIdError` saying what is allowed."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise RunIdError(
            f"run id {run_id!r} is not allowed: use 1 to 100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return run_id


def check_file_name(name: object) -> str:
    """A file name read from outside (a checkpoint named in ``state.json``): one plain name."""
    if not isinstance(name, str) or not _FILE_NAME.fullmatch(name):
        raise RunIdError(f"file name {name!r} is not a plain file name")
    return name


def run_dir(app_data_dir: str | Path, run_id: str) -> Path:
    """The folder of run ``run_id``: a direct child of ``app_data_dir``, whatever links say."""
    root = Path(app_data_dir).resolve()
    path = (root / check_run_id(run_id)).resolve()
    if path.parent != root:
        raise RunIdError(f"run {run_id!r} would live outside {root}")
    return path


def is_run_dir(app_data_dir: str | Path, path: str | Path) -> bool:
    """Whether ``path`` is a run's folder strictly inside ``app_data_dir`` (safe to remove)."""
    root = Path(app_data_dir).resolve()
    resolved = Path(path).resolve()
    return resolved.parent == root and bool(_RUN_ID.fullmatch(resolved.name))


def scalars_files(work_dir: str | Path) -> list[Path]:
    """mmengine's scalar logs of a run, oldest first: ``<timestamp>/vis_data/scalars.json``,
    one per session (a resumed run has several)."""
    return sorted(Path(work_dir).glob("*/vis_data/scalars.json"))


def scalar_records(lines: Iterable[str]) -> Iterator[dict]:
    """mmengine's scalar log lines as records, a dict per line (``step`` and its values);
    lines that do not parse, as the last one of a killed session may, are skipped."""
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record


def logged_scalars(work_dir: str | Path) -> Iterator[dict]:
    """The records of a run's scalar logs (:func:`scalars_files`, oldest session first)."""
    for scalars in scalars_files(work_dir):
        yield from scalar_records(scalars.read_text(encoding="utf-8").splitlines())


def scalars_file(work_dir: str | Path, session: str) -> Path:
    """Where a session named ``session`` (mmengine names them by their start time) keeps its
    scalar log: what :func:`scalars_files` finds."""
    return Path(work_dir) / check_file_name(session) / "vis_data" / "scalars.json"


def tensorboard_files(work_dir: str | Path) -> list[Path]:
    """TensorBoard event files of a run, beside each session's scalars (mmengine's
    ``TensorboardVisBackend`` writes into ``<timestamp>/vis_data/``)."""
    return sorted(Path(work_dir).glob("*/vis_data/events.out.tfevents.*"))


def log_files(work_dir: str | Path) -> list[Path]:
    """mmengine's text logs of a run, oldest first: ``<timestamp>/<timestamp>.log``."""
    return sorted(Path(work_dir).glob("*/*.log"))


# --------------------------------------------------------------------------- the local run folder
# app data/<run id>/: what the session writes while it trains (mmengine's own names included)

RUN_CONFIG = "config.py"  # the exact config the run trains with (TrainingSession)
# mmengine's CheckpointHook names: epoch_N.pth at an epoch's end, iter_N.pth mid-epoch (a stop),
# best_<metric>_epoch_N.pth (save_best)
CHECKPOINTS = "*.pth"
EPOCH_CHECKPOINTS = "epoch_*.pth"
ITER_CHECKPOINTS = "iter_*.pth"
BEST_CHECKPOINTS = "best_*.pth"
BEST_PREFIX = "best_"
EPOCH_PREFIX = "epoch_"


def epoch_checkpoint(epoch: int) -> str:
    """The checkpoint mmengine saves at the end of epoch ``epoch``."""
    return f"{EPOCH_PREFIX}{epoch}.pth"


def iter_checkpoint(iteration: int) -> str:
    """The checkpoint of a stop mid-epoch, after ``iteration`` iterations."""
    return f"iter_{iteration}.pth"


def coco_gt_file(work_dir: str | Path, split: str) -> Path:
    """Where a split's COCO ground truth is written for mmdet's CocoMetric (``val``, ``train``)."""
    return Path(work_dir) / f"coco_gt_{split}.json"


# beside the runs in app data: the app's own folders (not run ids: they start with "_")
UPLOAD_STAGING = "_upload"  # a run packed for upload (src.training.end_of_run)
SYNC_STAGING = (
    "_sync"  # a running run's snapshot on its way to Team Files (src.runs.checkpoint_sync)
)
# the label-error audits' own state, one folder per audit: its plan (the folds, its settings) and
# each fold's predictions (src.audit.plan); the folds' runs are ordinary runs beside it
AUDITS = "_audits"
AUDIT_PLAN = "audit.json"
PRELABELLED = "_prelabelled"  # the page's pre-labelled copies, one folder each (src.ui.after)
_FOLD_RUN = re.compile(r"^(?P<audit>.+)_fold\d+(?:_curve\d+)?$")


def free_name(folder: str | Path, base: str) -> str:
    """``base``, or ``base_2``, ``base_3``, ... : the first name nothing in ``folder`` has (a new
    run, audit or copy never lands on another)."""
    name, n = base, 1
    while (Path(folder) / name).exists():
        n += 1
        name = f"{base}_{n}"
    return name


def fold_run_id(audit_id: str, fold: int, share: int = 100) -> str:
    """The run that trains on every fold but ``fold`` (1-based); with a ``share`` below 100, the
    learning curve's run on that percentage of those images (``src.audit.learning_curve``)."""
    return f"{audit_id}_fold{fold}" + (f"_curve{share}" if share != 100 else "")


def audit_of_run(app_data_dir: str | Path, run_id: str) -> str | None:
    """The audit whose fold ``run_id`` is (its plan is in app data), else None: a fold's run is
    not the app's output (no task output, no report) and stays in app data for the audit."""
    found = _FOLD_RUN.match(run_id)
    if found and (Path(app_data_dir) / AUDITS / found["audit"] / AUDIT_PLAN).is_file():
        return found["audit"]
    return None


TENSORBOARD_LOG = "tensorboard.log"  # the TensorBoard server's own log (src.web.main)
LAST_CHECKPOINT_POINTER = "last_checkpoint"  # mmengine's file naming the newest checkpoint
# the epoch whose validation a stop abandoned (StopHook): a resume validates it before training on
VALIDATION_OWED = "validation_owed"
# Where mmdet's CocoMetric keeps each validation's predictions (``<prefix>.bbox.json``, and
# ``.segm.json`` with masks); the best epoch's are copied beside it (src.hooks.predictions) and the
# evaluation after training reuses them instead of predicting again.
VAL_PREDICTIONS = "predictions/val"
BEST_PREDICTIONS = "predictions/best"
BEST_INFO = "predictions/best.json"
# The evaluation after training (``src.evaluation.evaluate``): uploaded with the run.
EVALUATION_DIR = "evaluation"
EVALUATION_METRICS = "metrics.json"
EVALUATION_REPORT = "report.html"
EVALUATION_SPEED = "speed.json"  # the exported model's speed test (src.export.formats)
# the evaluated predictions as Supervisely annotations by item (the platform's report uploads them)
EVALUATION_PREDICTIONS = "predictions.json"
# the Model Benchmark speed test of the best checkpoint, in the SDK's form (the platform's report)
EVALUATION_SPEEDTEST = "speedtest.json"
# Each class's score threshold, chosen by the evaluation on the validation split
# (``src.evaluation.class_thresholds``): the key of ``{class: threshold}`` in the evaluated
# checkpoint's ``meta``, experiment_info.json and the ONNX file's metadata, and of the choice in
# full in metrics.json (src/export/onnx_runtime.py spells it too: it imports nothing of ours)
CLASS_THRESHOLDS = "class_thresholds"
# Exports of the best checkpoint (``src.export.formats``): ``<checkpoint><suffix>`` per format (the
# suffixes, and experiment_info.json's ``export`` keys: src.core.export_formats) and the class
# names by index, the SDK's TrainApp layout; uploaded as they are.
EXPORT_DIR = "export"
EXPORT_CLASSES = "classes.json"

# ------------------------------------------------------------------- the uploaded run (Team Files)
# <ARTIFACTS_ROOT>/<project>/<run id>/ (src.runs.storage.artifacts_dir): what the serving app, the
# platform's Experiments page and the SDK's lister read (src.runs.artifacts), and what a resume
# from Team Files fetches (src.runs.remote)

ARTIFACTS_ROOT = "/mmdetection-3"  # where the serving app looks for MMDetection 3 runs
EXPERIMENT_INFO = "experiment_info.json"
MODEL_META = "model_meta.json"
TRAIN_VAL_SPLIT = "train_val_split.json"
HYPERPARAMETERS = "hyperparameters.yaml"
APP_STATE = "app_state.json"  # what a new run needs to be set up as this one (src.setup.app_state)
RUN_METRICS = "metrics.json"  # the run's best metric and history
RUN_README = "README.md"
LOGS_DIR = "logs"
TENSORBOARD_DIR = "logs/tensorboard"
RESUME_DIR = "resume"  # the newest resumable checkpoint, with what a resume needs
STATE_FILE = "state.json"  # in RESUME_DIR: which checkpoint, which epoch, the run's project
SCALARS_FILE = "scalars.json"  # in RESUME_DIR: the run's scalar log so far

# Files of the run's folder that the upload copies as they are, to the same path, when the run has
# them (src.runs.artifacts.pack_run): a new file of the uploaded run is its name here and the code
# that writes it into the run's folder (docs/architecture.md, "Add a file to the uploaded run").
UPLOADED_AS_IS = (
    APP_STATE,
    f"{EVALUATION_DIR}/{EVALUATION_SPEED}",
    f"{EVALUATION_DIR}/{EVALUATION_METRICS}",
    f"{EVALUATION_DIR}/{EVALUATION_REPORT}",
    f"{EVALUATION_DIR}/{EVALUATION_PREDICTIONS}",
    f"{EVALUATION_DIR}/{EVALUATION_SPEEDTEST}",
)


def uploaded_as_is() -> tuple[str, ...]:
    """The run folder's files the upload copies as they are (:data:`UPLOADED_AS_IS`), looked up
    when a run is packed."""
    return UPLOADED_AS_IS
