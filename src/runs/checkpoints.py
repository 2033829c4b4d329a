"""A run's checkpoints found on disk: the last and the best of a run folder, the resumable runs
in app data (for the picker and ``--resume``), the checkpoints under a folder (the custom-weights
picker's scan), and the validations a run logged. Reading a checkpoint is
:mod:`src.runs.checkpoint_io`'s.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from src.config.metadata import RunMetadata
from src.config.primary_metric import headline
from src.core.layout import (
    BEST_CHECKPOINTS,
    BEST_PREFIX,
    EPOCH_CHECKPOINTS,
    ITER_CHECKPOINTS,
    LAST_CHECKPOINT_POINTER,
    RUN_CONFIG,
    logged_scalars,
)
from src.runs.checkpoint_io import CheckpointError, peek_checkpoint
from src.runs.info import APP_DATA, RunInfo

logger = logging.getLogger(__name__)


def last_checkpoint(work_dir: str | Path) -> Path | None:
    """The checkpoint mmengine's ``last_checkpoint`` file names, in this run folder.

    mmengine writes an absolute path; only its file name is used, so a run folder that was
    moved or copied (a backup, a download from Team Files) points at its own files.
    """
    marker = Path(work_dir) / LAST_CHECKPOINT_POINTER
    if not marker.is_file():
        return None
    name = Path(marker.read_text().strip()).name
    path = Path(work_dir) / name
    return path if name and path.is_file() else None


def best_checkpoint(work_dir: str | Path) -> Path | None:
    """The newest ``best_*.pth`` mmengine's CheckpointHook kept (save_best)."""
    candidates = sorted(Path(work_dir).glob(BEST_CHECKPOINTS), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


# --------------------------------------------------------------------------- resumable runs


def _resumable_candidates(work_dir: Path) -> list[Path]:
    """Checkpoints that hold optimizer and scheduler state, the most recently written first.

    ``last_checkpoint`` leads (it is written only after its checkpoint is complete); by write
    time rather than by iteration, since a run resumed from an earlier checkpoint writes newer
    files with lower iterations.
    """
    saved = sorted(
        [*work_dir.glob(EPOCH_CHECKPOINTS), *work_dir.glob(ITER_CHECKPOINTS)],
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    marked = last_checkpoint(work_dir)
    first = [marked] if marked and not marked.name.startswith(BEST_PREFIX) else []
    return list(dict.fromkeys(first + saved))


def last_val_metrics(work_dir: Path) -> dict[str, float]:
    """The newest validation mAPs a run logged (``*/vis_data/scalars.json``)."""
    return val_metrics_in(logged_scalars(work_dir))


def val_metrics_in(records: Iterable[dict]) -> dict[str, float]:
    """The last validation mAPs in mmengine's scalar log records (``layout.scalar_records``)."""
    metrics: dict[str, float] = {}
    for record in records:
        found = {k.split("/", 1)[1]: v for k, v in record.items() if k.startswith("coco/")}
        if found:
            metrics = {k: float(v) for k, v in headline(found).items()}
    return metrics


def newest_resumable_checkpoint(work_dir: str | Path) -> tuple[Path, dict, list[str]]:
    """(checkpoint, meta, skipped) of a run; raises when no checkpoint can resume it."""
    work_dir = Path(work_dir)
    skipped = []
    for path in _resumable_candidates(work_dir):
        try:
            return path, peek_checkpoint(path), skipped
        except CheckpointError as exc:
            skipped.append(str(exc))
    detail = f" ({'; '.join(skipped)})" if skipped else ""
    raise CheckpointError(f"run {work_dir.name} has no complete resumable checkpoint{detail}")


def find_resumable_runs(app_data_dir: str | Path) -> list[RunInfo]:
    """Runs in ``app_data_dir`` with a resumable checkpoint, the most recently saved first."""
    runs = []
    root = Path(app_data_dir)
    if not root.is_dir():
        return []
    for work_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if not (work_dir / RUN_CONFIG).is_file():
            continue
        try:
            checkpoint, meta, skipped = newest_resumable_checkpoint(work_dir)
        except CheckpointError as exc:
            logger.warning("%s", exc)
            continue
        metadata = RunMetadata.of(meta)
        runs.append(
            RunInfo(
                run_id=work_dir.name,
                where=APP_DATA,
                folder=str(work_dir),
                checkpoint=str(checkpoint),
                model_name=metadata.model_name,
                epoch=int(meta.get("epoch", 0)),
                iteration=int(meta.get("iter", 0)),
                max_epochs=int(meta.get("max_epochs", 0)),
                saved_at=checkpoint.stat().st_mtime,
                project_id=metadata.project_id,
                project_name=metadata.project_name,
                last_metrics=last_val_metrics(work_dir),
                skipped=tuple(skipped),
            )
        )
    return sorted(runs, key=lambda r: r.saved_at, reverse=True)


# Folders a checkpoint search on this machine does not enter: environments and caches hold
# thousands of files and no checkpoint a user trained.
_NOT_SEARCHED = {"site-packages", "node_modules", "__pycache__"}
SEARCH_DEPTH = 5  # folders below the one searched


def find_checkpoints_on_disk(
    folder: str | Path, *, max_depth: int = SEARCH_DEPTH, limit: int = 300
) -> tuple[list[tuple[Path, bool]], bool]:
    """The ``.pth`` files under ``folder`` (at most ``max_depth`` folders down, hidden folders
    and environments skipped), each with whether a ``config.py`` lies beside it: the local
    custom-weights picker's choices, folder by folder in name order, and whether the search
    stopped at ``limit`` files. A folder that does not exist raises ``FileNotFoundError``."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    found: list[tuple[Path, bool]] = []
    for here, dirs, files in os.walk(root):
        depth = len(Path(here).relative_to(root).parts)
        dirs[:] = sorted(
            d for d in dirs
            if depth < max_depth and not d.startswith(".") and d not in _NOT_SEARCHED
        )  # fmt: skip
        for name in sorted(f for f in files if f.endswith(".pth")):
            if len(found) == limit:
                return found, True
            found.append((Path(here) / name, RUN_CONFIG in files))
    return found, False


def logged_validations(work_dir: str | Path) -> dict[int, dict[str, float]]:
    """Every validation a run logged, by epoch (the log's ``step``): its ``coco/...`` metrics
    as mmengine logged them. Sessions are read oldest first, so where a resumed session
    validated an epoch again, its numbers win."""
    by_epoch: dict[int, dict[str, float]] = {}
    for record in logged_scalars(work_dir):
        found = {k: float(v) for k, v in record.items() if k.startswith("coco/")}
        if found and isinstance(record.get("step"), int):
            by_epoch[record["step"]] = found
    return by_epoch
