"""The runs the app can show and use: resumable runs in app data and in the store (Team Files),
the custom-weights picker's checkpoints, the uploaded runs a new run can start from (their
``app_state.json``), and files of the store fetched into app data.

One reading of the store serves the Resume tab and the weights picker: listing Team Files and
downloading every run's ``state.json`` takes seconds, so it is kept for ``REMOTE_RUNS_TTL_S`` and
forgotten at once when this app uploads a run (:meth:`RunCatalog.forget`).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from src.core.errors import RequestError
from src.core.layout import (
    APP_STATE,
    ARTIFACTS_ROOT,
    EXPERIMENT_INFO,
    HYPERPARAMETERS,
    RUN_CONFIG,
    RunIdError,
    audit_of_run,
    check_run_id,
    run_dir,
)
from src.core.tasks import PLATFORM_DETECTION, from_platform
from src.runs.checkpoints import find_resumable_runs
from src.runs.info import RunInfo
from src.runs.remote import find_remote_runs
from src.runs.storage import ArtifactStore, RemoteFile, UploadError
from src.setup.app_state import parse_app_state

logger = logging.getLogger(__name__)
REMOTE_RUNS_TTL_S = 60.0  # how long GET /api/runs reuses its reading of Team Files


class RunCatalog:
    """Runs and checkpoints of app data and of ``store``; remote files fetched into app data.

    Args:
        app_data_dir: the synced app-data folder.
        store: where uploaded runs are (Team Files or a local folder).
        clock: seconds of a monotonic clock, for the store reading's age (a stand-in in tests).
    """

    def __init__(
        self, app_data_dir: Path, store: ArtifactStore, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.app_data_dir = app_data_dir
        self.store = store
        self.clock = clock
        self._reading: tuple[float, list[RemoteFile], list[RunInfo]] | None = None
        # experiment_info.json of each uploaded run, by its (path, size) in the store's listing
        self._infos: dict[tuple[str, int], dict[str, Any]] = {}

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

    def experiments(self) -> list[dict[str, Any]]:
        """The store's uploaded runs (those with ``experiment_info.json``): what a new run can
        start from, newest first (run id, model, project, when, folder, best checkpoint). Each
        run's file is downloaded once (again when its size changes), not on every call."""
        rows = []
        root_depth = ARTIFACTS_ROOT.count("/") + 2
        suffix = f"/{EXPERIMENT_INFO}"
        for f in self._store_reading()[0]:
            if not (f.path.endswith(suffix) and f.path.count("/") == root_depth):
                continue
            folder = f.path[: -len(suffix)]
            if (f.path, f.size) not in self._infos:  # read once per version of the file
                self._infos[(f.path, f.size)] = self._read_json(f.path) or {}
            info = self._infos[(f.path, f.size)]
            run_id = str(info.get("experiment_name") or "").split(" ")[0]
            best = info.get("best_checkpoint")
            if not run_id or not Path(folder).name.startswith(f"{run_id}_"):
                continue  # not a run of this app
            rows.append(
                {
                    "run_id": run_id,
                    "model": str(info.get("model_name") or "?"),
                    "project": Path(folder).name[len(run_id) + 1 :],
                    "datetime": str(info.get("datetime") or ""),
                    "folder": folder,
                    "best_checkpoint": f"{folder}/{best}" if isinstance(best, str) else None,
                }
            )
        return sorted(rows, key=lambda r: r["datetime"], reverse=True)

    def experiment_state(self, run_id: str) -> tuple[dict[str, Any], str | None]:
        """The settings of the uploaded run ``run_id`` and its best checkpoint in the store
        (None: none there); a ``RequestError`` saying which runs there are when it is not."""
        found = self._experiment(run_id)
        return self.read_state(found["folder"]), found["best_checkpoint"]

    def _experiment(self, run_id: str) -> dict[str, Any]:
        """The uploaded run ``run_id``'s row of :meth:`experiments`; a ``RequestError`` saying
        which runs there are when it is not there."""
        try:
            check_run_id(run_id)
        except RunIdError as exc:
            raise RequestError([str(exc)]) from None
        rows = self.experiments()
        found = [row for row in rows if row["run_id"] == run_id]
        if not found:
            known = ", ".join(sorted({r["run_id"] for r in rows})) or "none"
            raise RequestError(
                [f"no uploaded run {run_id!r} in {self.store.describe(ARTIFACTS_ROOT)} (runs "
                 f"there: {known})"]
            )  # fmt: skip
        return found[0]

    def model_runs(self) -> list[str]:
        """The runs a model can be taken from (pre-labelling): those in app data with a
        checkpoint (not an audit's folds), then the store's uploaded runs with a best one."""
        local = [
            r.run_id
            for r in find_resumable_runs(self.app_data_dir)
            if not audit_of_run(self.app_data_dir, r.run_id)
        ]
        uploaded = [row["run_id"] for row in self.experiments() if row["best_checkpoint"]]
        return list(dict.fromkeys([*local, *uploaded]))

    def stored_best_checkpoint(self, run_id: str) -> str | None:
        """Where the uploaded run ``run_id``'s best checkpoint is in the store (None: the run is
        not uploaded, or has none): what a project made with its model names as its input."""
        try:
            return self._experiment(run_id)["best_checkpoint"]
        except RequestError:
            return None

    def read_state(self, folder: str) -> dict[str, Any]:
        """The settings of a run folder in the store: its ``app_state.json``; for a run of an
        older version without one, what its ``experiment_info.json`` and ``hyperparameters.yaml``
        hold (``app_state_version`` 0: no split, no edited config)."""
        folder = folder.rstrip("/")
        listed = {f.path for f in self.store.list(folder)}
        if f"{folder}/{APP_STATE}" in listed:
            path = f"{folder}/{APP_STATE}"
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    text = self.store.download(path, Path(tmp) / APP_STATE).read_text("utf-8")
                except UnicodeDecodeError:
                    raise RequestError([f"{path} is not UTF-8 text: not an app state"]) from None
                except (UploadError, OSError, ValueError) as exc:  # ValueError: a link out
                    raise RequestError([f"cannot read {path}: {exc}"]) from None
                return parse_app_state(text, path)
        info = self._read_json(f"{folder}/{EXPERIMENT_INFO}")
        hyper = self._read_yaml(f"{folder}/{HYPERPARAMETERS}")
        if info is None or hyper is None:
            raise RequestError(
                [f"{folder} has neither {APP_STATE} nor {EXPERIMENT_INFO} with "
                 f"{HYPERPARAMETERS}: not a run this app uploaded"]
            )  # fmt: skip
        return {
            "app_state_version": 0,
            "run_id": str(info.get("experiment_name", "?")).split(" ")[0],
            "model_name": info.get("model_name"),
            "project": {"id": info.get("project_id"), "name": None},
            "task": from_platform(str(info.get("task_type", PLATFORM_DETECTION))),
            "model": info.get("model_name"),
            "classes": hyper.pop("classes", None),
            "hyperparameters": {k: v for k, v in hyper.items() if k != "task"},
        }

    def _read_yaml(self, path: str) -> dict[str, Any] | None:
        import yaml

        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = self.store.download(path, Path(tmp) / "file.yaml")
                value = yaml.safe_load(local.read_text(encoding="utf-8"))
            except (UploadError, OSError, yaml.YAMLError):
                return None
        return value if isinstance(value, dict) else None

    def _read_json(self, path: str) -> dict[str, Any] | None:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = self.store.download(path, Path(tmp) / "file.json")
                value = json.loads(local.read_text(encoding="utf-8"))
            except (UploadError, OSError, ValueError, RecursionError):
                return None
        return value if isinstance(value, dict) else None

    def forget(self) -> None:
        """The store changed (this app uploaded a run): read it again next time."""
        self._reading = None

    def _store_reading(self) -> tuple[list[RemoteFile], list[RunInfo]]:
        """The store's run folders (one listing) and its resumable runs, read at most once per
        ``REMOTE_RUNS_TTL_S`` (each read downloads every run's ``state.json``)."""
        cached = self._reading
        if cached is not None and self.clock() - cached[0] < REMOTE_RUNS_TTL_S:
            return cached[1], cached[2]
        try:
            files = self.store.list(ARTIFACTS_ROOT)
            runs = find_remote_runs(self.store, files=files)
        except (UploadError, OSError) as exc:
            logger.warning("cannot list the runs in %s: %s", self.store.describe("/"), exc)
            return [], []
        self._reading = (self.clock(), files, runs)
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

    def model_files(self, run_id: str) -> tuple[Path, Path]:
        """The ``config.py`` and the checkpoint a run predicts with (pre-labelling): a run in app
        data, its best checkpoint (else its newest); else the run uploaded to the store, its best
        checkpoint and config fetched into app data. A ``RequestError`` when neither has it."""
        from src.runs.checkpoints import best_checkpoint, last_checkpoint

        try:
            work_dir = run_dir(self.app_data_dir, run_id)
        except RunIdError as exc:
            raise RequestError([str(exc)]) from None
        if (work_dir / RUN_CONFIG).is_file():
            found = best_checkpoint(work_dir) or last_checkpoint(work_dir)
            if found is None:
                raise RequestError([f"run {run_id} in {self.app_data_dir} has no checkpoint"])
            return work_dir / RUN_CONFIG, found
        best = self._experiment(run_id)["best_checkpoint"]
        config = self.companion_config(best) if best else None
        if best is None or config is None:
            raise RequestError([f"uploaded run {run_id} has no best checkpoint with its config"])
        return Path(self.fetch(config, "config")), Path(self.fetch(best, "checkpoint"))

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
