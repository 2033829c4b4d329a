"""Run ids: a new run's id, and whether a new run may take one.

A run id names one run everywhere, in app data and in Team Files (where app data is emptied
after each upload), so a new run is refused an id that an earlier run still holds in either.
Apart from the request's checks (``prepare``) because the resume (``resume``) reads the same
run folders.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from src.core.layout import (
    ARTIFACTS_ROOT,
    CHECKPOINTS,
    EXPERIMENT_INFO,
    RESUME_DIR,
    RUN_CONFIG,
    STATE_FILE,
    free_name,
)
from src.runs.storage import ArtifactStore, UploadError, artifacts_dir


def new_run_id(app_data_dir: str | Path | None = None, base: str | None = None) -> str:
    """``base`` (on the platform: the task id) or a timestamp; with ``app_data_dir``, suffixed
    (``_2``, ...) until no run folder has it."""
    base = base or time.strftime("%Y%m%d_%H%M%S")
    if app_data_dir is None:
        return base
    return free_name(app_data_dir, base)


def taken_run_id(
    app_data_dir: str | Path,
    run_id: str,
    store: ArtifactStore | None = None,
    project_name: str = "",
) -> tuple[str | None, str | None]:
    """Whether a new run may take ``run_id``: (the problem, a note), each None when there is
    none. A run id names one run everywhere: in app data and, with ``store``, in Team Files
    (:func:`uploaded_run_folder`), where app data is emptied after each upload.

    In app data a run with a checkpoint keeps its id (resume it); a file is not a run; the
    folder of a run that never saved a checkpoint (it failed before its first, and cannot be
    resumed) is taken over by the new run, which writes its own config and settings there."""
    path = Path(app_data_dir) / run_id
    if path.exists() and not path.is_dir():
        return (
            f"run id {run_id!r} names a file in {app_data_dir}, not a run folder: pick another id",
            None,
        )
    if (path / RUN_CONFIG).exists() and saved_checkpoints(path):
        return f"run {run_id} already exists in {app_data_dir}: resume it or pick another id", None
    if store is not None:
        try:
            folder = uploaded_run_folder(store, run_id, project_name)
        except (UploadError, OSError) as exc:
            return (
                f"cannot check {store.describe(ARTIFACTS_ROOT)} for a run {run_id} ({exc}): "
                "try again",
                None,
            )
        if folder is not None:
            return (
                f"run {run_id} already exists in {store.describe(folder)} (a new run would "
                "replace it there): pick another id, or resume that run",
                None,
            )
    if not (path / RUN_CONFIG).exists():
        return None, None
    return None, (
        f"run {run_id} was started before but never saved a checkpoint (nothing to resume): "
        f"this run starts over in {path}"
    )


def uploaded_run_folder(store: ArtifactStore, run_id: str, project_name: str) -> str | None:
    """The store's folder of a run ``run_id`` (None: none): the folder this run would upload
    into (``artifacts_dir``) when it holds any file, or a ``<run_id>_<other project>`` folder
    whose ``experiment_info.json`` or ``resume/state.json`` records that id (``a_b_p`` may be
    run ``a`` of project ``b_p`` or run ``a_b`` of ``p``: its files say which). One listing of
    ``ARTIFACTS_ROOT``; files are read only for folders whose name starts with the id."""
    own = artifacts_dir(run_id, project_name)
    files = [f.path for f in store.list(ARTIFACTS_ROOT)]
    if any(path.startswith(f"{own}/") for path in files):
        return own
    prefix = f"{ARTIFACTS_ROOT}/{run_id}_"
    folders = sorted({p[: p.index("/", len(prefix))] for p in files
                      if p.startswith(prefix) and "/" in p[len(prefix):]})  # fmt: skip
    for folder in folders:
        listed = {p for p in files if p.startswith(f"{folder}/")}
        if _recorded_run_id(store, folder, listed) == run_id:
            return folder
    return None


def _recorded_run_id(store: ArtifactStore, folder: str, listed: set[str]) -> str | None:
    """The run id a store folder's own files record: ``experiment_info.json`` (an uploaded
    run: the first word of its ``experiment_name``) or ``resume/state.json`` (a synced one)."""
    for name, key in (
        (EXPERIMENT_INFO, "experiment_name"),
        (f"{RESUME_DIR}/{STATE_FILE}", "run_id"),
    ):
        if f"{folder}/{name}" not in listed:
            continue
        with tempfile.TemporaryDirectory() as scratch:
            try:
                local = store.download(f"{folder}/{name}", Path(scratch) / "recorded.json")
                value = json.loads(local.read_text(encoding="utf-8"))
            except (UploadError, OSError, ValueError, RecursionError):
                continue
        words = str(value.get(key) or "").split() if isinstance(value, dict) else []
        if words:
            return words[0]
    return None


def saved_checkpoints(work_dir: str | Path) -> list[Path]:
    """The checkpoints a run folder holds (mmengine's ``*.pth``)."""
    return sorted(Path(work_dir).glob(CHECKPOINTS))
