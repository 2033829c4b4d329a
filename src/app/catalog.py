"""The runs the app can show and use: resumable runs in app data and in the store (Team Files),
the custom-weights picker's checkpoints, and files of the store fetched into app data.

One reading of the store serves the Resume tab and the weights picker: listing Team Files and
downloading every run's ``state.json`` takes seconds, so it is kept for ``REMOTE_RUNS_TTL_S`` and
forgotten at once when this app uploads a run (:meth:`RunCatalog.forget`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from src.app.prepare import RequestError
from src.runs.checkpoints import find_resumable_runs
from src.runs.info import RunInfo
from src.runs.layout import ARTIFACTS_ROOT, RUN_CONFIG
from src.runs.remote import find_remote_runs
from src.runs.storage import ArtifactStore, RemoteFile, UploadError

logger = logging.getLogger(__name__)
REMOTE_RUNS_TTL_S = 60.0  # how long GET /api/runs reuses its reading of Team Files


class RunCatalog:
    """Runs and checkpoints of app data and of ``store``; remote files fetched into app data."""

    def __init__(self, app_data_dir: Path, store: ArtifactStore) -> None:
        self.app_data_dir = app_data_dir
        self.store = store
        self._reading: tuple[float, list[RemoteFile], list[RunInfo]] | None = None

    def runs(self) -> list[dict[str, Any]]:
        """Resumable runs: those in app data, then those only in the store (Team Files)."""
        local = find_resumable_runs(self.app_data_dir)
        known = {r.run_id for r in local}
        remote = [r for r in self._store_reading()[1] if r.run_id not in known]
        return [r.row() for r in [*local, *remote]]

    def checkpoint_files(self) -> list[str]:
        """Every ``.pth`` of the store's runs that has a ``config.py`` beside it: the
        custom-weights picker's choices (Team Files on the platform, the local folder
        standing in for it elsewhere)."""
        files = [f.path for f in self._store_reading()[0]]
        folders = {str(Path(p).parent) for p in files if Path(p).name == RUN_CONFIG}
        return sorted(p for p in files if p.endswith(".pth") and str(Path(p).parent) in folders)

    def forget(self) -> None:
        """The store changed (this app uploaded a run): read it again next time."""
        self._reading = None

    def _store_reading(self) -> tuple[list[RemoteFile], list[RunInfo]]:
        """The store's run folders (one listing) and its resumable runs, read at most once per
        ``REMOTE_RUNS_TTL_S`` (each read downloads every run's ``state.json``)."""
        cached = self._reading
        if cached is not None and time.monotonic() - cached[0] < REMOTE_RUNS_TTL_S:
            return cached[1], cached[2]
        try:
            files = self.store.list(ARTIFACTS_ROOT)
            runs = find_remote_runs(self.store, files=files)
        except (UploadError, OSError) as exc:
            logger.warning("cannot list the runs in %s: %s", self.store.describe("/"), exc)
            return [], []
        self._reading = (time.monotonic(), files, runs)
        return files, runs

    def fetch(self, path: str, purpose: str) -> str:
        """A local path for ``path``: itself when it is a local file, else downloaded from the
        store (Team Files) into ``<app data>/_custom/``."""
        if not path or Path(path).is_file():
            return path
        missing = RequestError(
            [f"{purpose} {path} does not exist: not a local file, nor in Team Files"]
        )
        if not path.startswith("/"):
            raise missing
        local = self.app_data_dir / "_custom" / Path(path).parent.name / Path(path).name
        try:
            # one listing says whether it is there and whether the copy fetched before is it
            remote = {f.path: f.size for f in self.store.list(str(Path(path).parent))}
            if path not in remote:
                raise missing
            if not (local.is_file() and remote[path] == local.stat().st_size):
                local.parent.mkdir(parents=True, exist_ok=True)
                self.store.download(path, local)  # (Compose, then Start: fetched once)
        except (UploadError, OSError) as exc:
            raise RequestError([f"cannot download the {purpose} {path}: {exc}"]) from None
        return str(local)

    def companion_config(self, checkpoint: str) -> str | None:
        """The ``config.py`` beside a checkpoint (a local path or one in the store, as
        :meth:`fetch` takes them): where this app and mmdet put a run's config."""
        local = Path(checkpoint)
        if local.is_file():
            found = local.parent / RUN_CONFIG
            return str(found) if found.is_file() else None
        if not checkpoint.startswith("/"):
            return None
        remote = f"{Path(checkpoint).parent.as_posix().rstrip('/')}/{RUN_CONFIG}"
        try:
            listed = {f.path for f in self.store.list(str(Path(checkpoint).parent))}
        except (UploadError, OSError, ValueError):
            return None
        return remote if remote in listed else None
