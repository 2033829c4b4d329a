"""A run's resumable state in Team Files: written during training and at the end, read back later.

The state lives in ``<run's artifacts dir>/resume/``: the newest resumable checkpoint (optimizer,
schedulers, message hub and RNG states, as in app data), the run's ``config.py``, its logged
scalars (so the charts continue), and ``state.json``, written last, which names the checkpoint.
A reader trusts only what ``state.json`` names, so a sync interrupted half-way leaves the previous
state usable. The inference checkpoints beside ``resume/`` stay what the serving app reads.

A run whose agent died is continued by downloading this folder into app data
(:func:`fetch_remote_run`) and resuming it like any local run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from src.config.metadata import RunMetadata
from src.core.layout import (
    APP_STATE,
    ARTIFACTS_ROOT,
    LAST_CHECKPOINT_POINTER,
    RESUME_DIR,
    RUN_CONFIG,
    SCALARS_FILE,
    STATE_FILE,
    check_file_name,
    check_run_id,
    run_dir,
    scalar_records,
    scalars_file,
    scalars_files,
)
from src.runs.checkpoint_io import CheckpointError
from src.runs.checkpoints import newest_resumable_checkpoint
from src.runs.info import TEAM_FILES, RunInfo
from src.runs.storage import ArtifactStore, RemoteFile, UploadError

logger = logging.getLogger(__name__)


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link when possible: a stable snapshot of a file mmengine may delete later."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def collect_run_files(work_dir: str | Path, dest: str | Path, checkpoint: Path) -> None:
    """The files of a snapshot into ``dest`` (cleared first): the checkpoint (hard-linked), the
    run's config, its settings (``app_state.json``, when it has them) and its logged scalars.
    Cheap enough for the training thread."""
    work_dir, dest = Path(work_dir), Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    _link_or_copy(checkpoint, dest / checkpoint.name)
    shutil.copy2(work_dir / RUN_CONFIG, dest / RUN_CONFIG)
    if (work_dir / APP_STATE).is_file():
        shutil.copy2(work_dir / APP_STATE, dest / APP_STATE)
    scalars = scalars_files(work_dir)
    if scalars:
        with open(dest / SCALARS_FILE, "wb") as out:
            for path in scalars:  # one file per session of the run, oldest first
                out.write(path.read_bytes())


def write_state(dest: str | Path, checkpoint_name: str, run_id: str) -> dict[str, Any]:
    """Describe a collected snapshot in ``state.json``; raises :class:`CheckpointError` when its
    checkpoint cannot resume."""
    from src.runs.checkpoint_io import peek_checkpoint
    from src.runs.checkpoints import val_metrics_in

    dest = Path(dest)
    checkpoint = dest / checkpoint_name
    meta = peek_checkpoint(checkpoint)
    scalars = dest / SCALARS_FILE
    lines = scalars.read_text(encoding="utf-8").splitlines() if scalars.is_file() else []
    metadata = RunMetadata.of(meta)
    state = {
        "run_id": run_id,
        "checkpoint": checkpoint_name,
        "model_name": metadata.model_name,
        "task": metadata.task_type,
        "project_id": metadata.project_id,
        "project_name": metadata.project_name,
        "epoch": int(meta.get("epoch", 0)),
        "iteration": int(meta.get("iter", 0)),
        "max_epochs": int(meta.get("max_epochs", 0)),
        "saved_at": checkpoint.stat().st_mtime,
        "last_metrics": val_metrics_in(scalar_records(lines)),
    }
    (dest / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")
    return state


def snapshot_run_state(work_dir: str | Path, dest: str | Path, run_id: str) -> dict[str, Any]:
    """The run's newest resumable state, collected and described in ``dest``.

    Raises :class:`CheckpointError` when the run has no resumable checkpoint yet.
    """
    checkpoint, _, _ = newest_resumable_checkpoint(work_dir)
    collect_run_files(work_dir, dest, checkpoint)
    return write_state(dest, checkpoint.name, run_id)


def publish_state(store: ArtifactStore, snapshot: str | Path, remote_run_dir: str) -> None:
    """Upload a snapshot into ``<remote_run_dir>/resume/``: files first, ``state.json`` last,
    then the checkpoints it no longer names are removed."""
    snapshot = Path(snapshot)
    state = json.loads((snapshot / STATE_FILE).read_text(encoding="utf-8"))
    remote = f"{remote_run_dir.rstrip('/')}/{RESUME_DIR}"
    for path in sorted(snapshot.iterdir()):
        if path.name != STATE_FILE:
            store.upload_file(path, f"{remote}/{path.name}")
    store.upload_file(snapshot / STATE_FILE, f"{remote}/{STATE_FILE}")
    for old in store.list(remote):
        if old.path.endswith(".pth") and not old.path.endswith("/" + state["checkpoint"]):
            store.remove(old.path)


def find_remote_runs(
    store: ArtifactStore, root: str = ARTIFACTS_ROOT, files: list[RemoteFile] | None = None
) -> list[RunInfo]:
    """Runs under ``root`` with a resumable state, the most recently saved first. ``files``:
    the store's listing of ``root`` when the caller has it (else it is listed here)."""
    listed = store.list(root) if files is None else files
    states = [f.path for f in listed if f.path.endswith(f"/{RESUME_DIR}/{STATE_FILE}")]
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        for n, path in enumerate(states):
            try:
                local = store.download(path, Path(scratch) / f"{n}.json")
                state = json.loads(local.read_text(encoding="utf-8"))
                runs.append(
                    RunInfo(
                        # ids and names become local paths: plain names only
                        run_id=check_run_id(state["run_id"]),
                        where=TEAM_FILES,
                        folder=(folder := path.rsplit("/", 2)[0]),
                        checkpoint=f"{folder}/{RESUME_DIR}/{check_file_name(state['checkpoint'])}",
                        model_name=str(state.get("model_name", "?")),
                        epoch=int(state.get("epoch", 0)),
                        iteration=int(state.get("iteration", 0)),
                        max_epochs=int(state.get("max_epochs", 0)),
                        saved_at=float(state.get("saved_at", 0)),
                        project_id=state.get("project_id"),
                        project_name=str(state.get("project_name", "")),
                        last_metrics=dict(state.get("last_metrics") or {}),
                    )
                )
            # RunIdError too; a state that is not an object, or nested past Python's stack
            except (OSError, ValueError, KeyError, TypeError, RecursionError, UploadError) as exc:
                logger.warning("skipping %s: unreadable run state (%s)", path, exc)
    return sorted(runs, key=lambda r: r.saved_at, reverse=True)


def fetch_remote_run(store: ArtifactStore, run: RunInfo, app_data_dir: str | Path) -> Path:
    """Download a remote run's state into ``<app_data_dir>/<run_id>``; returns that folder.

    The folder is assembled beside its final place and renamed when complete. A local folder of
    the same run is replaced only when the remote state is newer than its newest checkpoint.
    """
    work_dir = run_dir(app_data_dir, run.run_id)
    if work_dir.exists():
        try:
            _, meta, _ = newest_resumable_checkpoint(work_dir)
            if int(meta.get("iter", 0)) >= run.iteration:
                logger.info("run %s is in app data at least as far: using it", run.run_id)
                return work_dir
        except CheckpointError:
            pass
    staging = work_dir.with_name(f".{run.run_id}.fetching")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        resume_dir = f"{run.folder}/{RESUME_DIR}"
        store.download(run.checkpoint, staging / run.checkpoint_name)
        store.download(f"{resume_dir}/{RUN_CONFIG}", staging / RUN_CONFIG)
        try:
            scalars = scalars_file(staging, time.strftime("%Y%m%d_%H%M%S_from_team_files"))
            scalars.parent.mkdir(parents=True)
            store.download(f"{resume_dir}/{SCALARS_FILE}", scalars)
        except (FileNotFoundError, UploadError):
            logger.info("run %s has no logged scalars in Team Files", run.run_id)
        if f"{resume_dir}/{APP_STATE}" in {f.path for f in store.list(resume_dir)}:
            store.download(f"{resume_dir}/{APP_STATE}", staging / APP_STATE)
        checkpoint = staging / run.checkpoint_name
        (staging / LAST_CHECKPOINT_POINTER).write_text(str(checkpoint), encoding="utf-8")
        newest_resumable_checkpoint(staging)  # the downloaded checkpoint must be readable
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if work_dir.exists():
        shutil.rmtree(work_dir)
    os.replace(staging, work_dir)
    return work_dir
