"""The app's training controller: one run at a time, started, watched, stopped, resumed, uploaded.

The one entry of the widgets UI, the HTTP API and the CLI (they only call it). It owns the current
``TrainingSession``, keeps the finished ones' outcome, and uploads a run's artifacts when it ends
(finished or stopped), in a watcher thread, so no request handler ever waits on training.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import shutil
import threading
import time
import typing
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from src.app.augment_preview import AugmentationPreview, AugmentationPreviewer
from src.app.prepare import (
    Prepared,
    ProjectResolver,
    RequestError,
    TrainRequest,
    check_data,
    dry_run,
    local_project_resolver,
    locate_run,
    new_run_id,
    prepare,
    prepare_resume,
    upload_run,
)
from src.app.session import SessionBusyError, SessionState, SessionStatus, TrainingSession
from src.config.params import AUTO_SIZED, TrainParams
from src.data.project import Split
from src.hooks.metrics import MetricsSink
from src.runs.checkpoint_io import CheckpointError
from src.runs.checkpoint_sync import CheckpointSync, SyncStatus
from src.runs.checkpoints import find_resumable_runs
from src.runs.info import RunInfo
from src.runs.layout import ARTIFACTS_ROOT, RESUME_DIR, RUN_CONFIG, STATE_FILE, is_run_dir
from src.runs.remote import find_remote_runs
from src.runs.storage import ArtifactStore, RemoteFile, UploadError, artifacts_dir

logger = logging.getLogger(__name__)
REMOTE_RUNS_TTL_S = 60.0  # how long GET /api/runs reuses its reading of Team Files


@dataclass
class RunOutcome:
    """What happened to the last run after training ended."""

    run_id: str
    state: str
    artifacts: str | None = None  # where the uploaded artifacts are (path or Team Files dir)
    upload_error: str | None = None
    local_dir: str | None = None  # the run's app-data folder, kept when an upload failed
    output_error: str | None = None  # the upload worked, but showing it as the task output did not
    warning: str | None = None  # the upload worked, but something the user should know did not
    evaluation: dict[str, Any] | None = None  # src.app.evaluate.Evaluation.summary()
    evaluation_error: str | None = None  # the evaluation failed; the run was uploaded all the same


@dataclass
class ControllerStatus(SessionStatus):
    """What a client sees of the controller: the session's progress, with ``state`` as a client
    may act on it, and the model, the checkpoint sync and the last run's outcome. ``to_json`` is
    the body of ``GET /api/status`` (without the traceback: server paths and code stay in the log).

    ``state`` is ``idle``, ``finished``, ``stopped`` or ``failed`` only once a new start or resume
    can succeed; before that a run being prepared is ``preparing``, a finished run whose best
    checkpoint is being evaluated ``evaluating``, and an ended run whose artifacts are still being
    uploaded ``uploading`` (``run_state`` says how the run ended).
    """

    run_state: SessionState = SessionState.IDLE
    sync: SyncStatus | None = None
    model: str | None = None
    uploading: bool = False
    busy: bool = False
    outcome: RunOutcome | None = None
    notes: list[str] = field(default_factory=list)  # about this run, e.g. a resume on new devices

    @property
    def ended(self) -> bool:
        """The run and its upload are over: a new start or resume can succeed."""
        return (self.state == SessionState.IDLE or self.state.is_final) and not self.busy

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body.pop("traceback")
        body["state"], body["run_state"] = str(self.state), str(self.run_state)
        return body


class StartCancelled(RequestError):
    """Stop was asked for while a run was being prepared: the run is not started."""


@dataclass(frozen=True)
class SyncPolicy:
    """When a running run's state is copied to the store (see ``src.runs.checkpoint_sync``)."""

    every_epochs: int | None = 1
    every_minutes: float | None = None


class TrainingController:
    """Start, watch, stop and resume runs; upload each run's artifacts when it ends.

    Args:
        app_data_dir: the synced app-data folder (runs live in ``<app_data_dir>/<run_id>``).
        store: where artifacts go (Team Files or a local folder).
        cache_dir: parsed-annotation cache.
        sinks: more receivers of the session's progress (the UI's charts).
        project_resolver: finds a resumed run's project (downloads it on the platform).
        sync: copy the newest checkpoint to the store while training (None: off).
        after_upload: called with the remote dir after a verified upload (sets the task output
            on the platform); an error there is reported, the upload stands.
        cleanup_after_upload: remove the run's app-data folder once its upload is verified (on
            the platform: the agent's disk is not kept; the run resumes from Team Files).
        stop_signals: predicates that stop a run gracefully (the platform stopping the app).
        run_context: a context each run's wait-and-upload runs in (``app.handle_stop``, so the
            platform's shutdown waits for the upload).
        on_run_end: called with the outcome after the upload (``app.stop()`` on the platform).
        run_id_base: how new runs are named (on the platform: the task id, so artifacts go to
            ``/mmdetection-3/<task_id>_<project>``); default a timestamp.
        task_id: the app's task on the platform, recorded in each run's ``experiment_info.json``.
        max_nonfinite: NaN/Inf losses in a row that end a run.
        on_fetch: told before a run that is only in the store is downloaded to be resumed.
        verbose: the console shows the libraries' output too (mmengine's log at INFO,
            pycocotools' prints, Python warnings); else only errors of mmengine reach it and the
            rest goes to the run's log file (``src.engine.chatter``).
    """

    def __init__(
        self,
        app_data_dir: str | Path,
        store: ArtifactStore,
        cache_dir: str | None = None,
        sinks: Sequence[MetricsSink] = (),
        project_resolver: ProjectResolver = local_project_resolver,
        sync: SyncPolicy | None = None,
        after_upload: Callable[[str], None] | None = None,
        cleanup_after_upload: bool = False,
        stop_signals: Sequence[Callable[[], bool]] = (),
        run_context: Callable[[], AbstractContextManager] | None = None,
        on_run_end: Callable[[RunOutcome], None] | None = None,
        run_id_base: str | None = None,
        task_id: int | None = None,
        max_nonfinite: int = 5,
        verbose: bool = False,
        on_fetch: Callable[[RunInfo], None] | None = None,
    ) -> None:
        self.max_nonfinite = max_nonfinite
        self.console_log_level = "INFO" if verbose else "ERROR"
        self.on_fetch = on_fetch
        self.run_id_base = run_id_base
        self.task_id = task_id
        self.stop_signals = list(stop_signals)
        self.run_context = run_context
        self.on_run_end = on_run_end
        self.project_resolver = project_resolver
        self.sync = sync
        self.after_upload = after_upload
        self.cleanup_after_upload = cleanup_after_upload
        self._syncer: CheckpointSync | None = None
        self.sinks = list(sinks)
        self.app_data_dir = Path(app_data_dir)
        self.store = store
        self.cache_dir = cache_dir
        self._lock = threading.Lock()
        self._session: TrainingSession | None = None
        self._prepared: Prepared | None = None
        self._watcher: threading.Thread | None = None
        self._uploading = False  # the artifacts of the ended run are being uploaded
        self._evaluating = False  # the ended run's best checkpoint is being evaluated
        self._active = False  # from launch until the run's upload is over
        self._preparing = False  # a start or resume is being prepared (before launch)
        self._cancel_start = False  # Stop was asked for during that preparation
        self._remote_runs_cache: tuple[float, list[RemoteFile], list[RunInfo]] | None = None
        self._previewer = AugmentationPreviewer(cache_dir)
        self.outcome: RunOutcome | None = None

    # ------------------------------------------------------------------ queries
    @property
    def prepared(self) -> Prepared | None:
        return self._prepared

    @property
    def busy(self) -> bool:
        session = self._session
        return (
            self._preparing or self._active or bool(session and not session.status().state.is_final)
        )

    def status(self) -> ControllerStatus:
        """The session's progress plus the model, upload state and outcome (see
        :class:`ControllerStatus` for what ``state`` promises)."""
        session, prepared = self._session, self._prepared
        preparing, active = self._preparing, self._active
        progress = (
            session.status()
            if session is not None
            else SessionStatus(state=SessionState.IDLE, run_id=None, work_dir=None)
        )
        run_state = progress.state
        if preparing:
            state = SessionState.PREPARING
        elif active and run_state.is_final:
            state = SessionState.EVALUATING if self._evaluating else SessionState.UPLOADING
        else:
            state = run_state
        values = {f.name: getattr(progress, f.name) for f in fields(SessionStatus)}
        values["state"] = state
        syncer = self._syncer
        return ControllerStatus(
            **values,
            run_state=run_state,
            sync=copy.copy(syncer.status) if syncer else None,
            model=prepared.model_name if prepared else None,
            uploading=self._uploading,
            busy=self.busy,
            outcome=copy.copy(self.outcome) if self.outcome else None,
            notes=(list(prepared.notes) if prepared else [])
            + (list(session.notes) if session is not None else []),
        )

    def history(self) -> dict[str, list[dict[str, Any]]]:
        return self._session.history if self._session else {"train": [], "val": []}

    def runs(self) -> list[dict[str, Any]]:
        """Resumable runs: those in app data, then those only in the store (Team Files)."""
        local = find_resumable_runs(self.app_data_dir)
        known = {r.run_id for r in local}
        remote = [r for r in self._remote_runs() if r.run_id not in known]
        return [r.row() for r in [*local, *remote]]

    def _remote_runs(self) -> list[RunInfo]:
        return self._store_reading()[1]

    def _store_reading(self) -> tuple[list[RemoteFile], list[RunInfo]]:
        """The store's run folders (one listing) and its resumable runs, read at most once per
        ``REMOTE_RUNS_TTL_S`` (each read downloads every run's ``state.json``); an upload of
        this app clears it at once. The Resume tab and the custom-weights picker share it."""
        cached = self._remote_runs_cache
        if cached is not None and time.monotonic() - cached[0] < REMOTE_RUNS_TTL_S:
            return cached[1], cached[2]
        try:
            files = self.store.list(ARTIFACTS_ROOT)
            runs = find_remote_runs(self.store, files=files)
        except (UploadError, OSError) as exc:
            logger.warning("cannot list the runs in %s: %s", self.store.describe("/"), exc)
            return [], []
        self._remote_runs_cache = (time.monotonic(), files, runs)
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

    def augmentation_preview(
        self, project_dir: str, params: TrainParams, sample: int
    ) -> AugmentationPreview:
        """One project image before and after the chosen training pipeline (the Augmentations
        step). Refused while a run trains here: the preview draws from the global random
        generators that the run's augmentations also draw from (with workers 0), and a
        preview in between would change what the run sees."""
        if self.busy:
            raise SessionBusyError(
                "the preview is off while a run is in progress: it would draw from the random "
                "generators the run's augmentations use"
            )
        return self._previewer.preview(project_dir, params, sample)

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

    def checkpoint_files(self) -> list[str]:
        """Every ``.pth`` of the store's runs that has a ``config.py`` beside it: the
        custom-weights picker's choices (Team Files on the platform, the local folder
        standing in for it elsewhere)."""
        files = [f.path for f in self._store_reading()[0]]
        folders = {str(Path(p).parent) for p in files if Path(p).name == RUN_CONFIG}
        return sorted(p for p in files if p.endswith(".pth") and str(Path(p).parent) in folders)

    def new_run_id(self) -> str:
        return new_run_id(self.app_data_dir, base=self.run_id_base)

    def policy(self, every_epochs: int | None) -> SyncPolicy | None:
        """The app's sync policy with its epoch interval replaced (0: by epochs off)."""
        if every_epochs is None:
            return self.sync
        minutes = self.sync.every_minutes if self.sync else None
        if not every_epochs and minutes is None:
            return None
        return SyncPolicy(every_epochs=every_epochs or None, every_minutes=minutes)

    def dry_run(self, prepared: Prepared) -> dict[str, Any]:
        """Build both datasets and the model and put the extreme images through them, training
        nothing: the summary the CLI's ``--dry-run`` prints (problems raise ``RequestError``)."""
        return dry_run(prepared)

    def compose(self, request: TrainRequest) -> Prepared:
        """Validate and compose a request, as Start would (the UI's Compose button): remote
        inputs (custom weights and their config in Team Files) are fetched into app data
        first. The request itself is not changed."""
        from dataclasses import replace

        params = request.params
        config_file = request.base_config_file
        custom = params.weights == "custom" and params.weights_path
        own_model = request.model or request.config_text or request.config_file
        if custom and not config_file and not own_model:
            config_file = self.companion_config(params.weights_path)
            if config_file is None:
                raise RequestError(
                    [
                        f"no {RUN_CONFIG} beside the checkpoint {params.weights_path}: give the "
                        "model's config (or a zoo model whose architecture it is)"
                    ]
                )
        if config_file:  # custom weights: may live in Team Files
            config_file = self.fetch(config_file, "config")
        if custom:
            params = replace(params, weights_path=self.fetch(params.weights_path, "checkpoint"))
        return prepare(
            replace(
                request, params=params, base_config_file=config_file,
                app_data_dir=str(self.app_data_dir), run_id=request.run_id or self.new_run_id(),
                cache_dir=request.cache_dir or self.cache_dir,
            )
        )  # fmt: skip

    def start(self, request: TrainRequest, sync_every_epochs: int | None = None) -> str:
        """Validate, compose and start a new run; returns its id. ``sync_every_epochs``
        overrides the app's checkpoint-sync interval for this run (0: off)."""
        with self._preparation():
            prepared = self.compose(request)
            check_data(prepared)  # what would fail the run later fails the request now
            return self._launch_unless_cancelled(prepared, None, self.policy(sync_every_epochs))

    def resume(
        self,
        target: str | None = None,
        epochs: int | None = None,
        sync_every_epochs: int | None = None,
        gpus: tuple[int, ...] | None = None,
        nproc: int | None = None,
    ) -> str:
        """Continue a run (default: the newest); returns its id.

        ``target`` is a run id or checkpoint in app data, or a run id whose state is only in the
        store (Team Files): then it is downloaded into app data first. ``gpus`` / ``nproc``:
        train on other devices than the run did (see :func:`prepare_resume`).
        """
        with self._preparation():
            prepared, run = self.prepare_resume(target, epochs, gpus, nproc)
            for note in prepared.notes:
                logger.warning("run %s: %s", prepared.run_id, note)
            return self._launch_unless_cancelled(
                prepared, run.checkpoint, self.policy(sync_every_epochs)
            )

    def prepare_resume(
        self,
        target: str | None = None,
        epochs: int | None = None,
        gpus: tuple[int, ...] | None = None,
        nproc: int | None = None,
    ) -> tuple[Prepared, RunInfo]:
        """The run ``target`` names (None: the newest) ready to continue, and where it stands
        (``run.checkpoint`` is what it continues from); a run only in the store is downloaded
        into app data first. ``prepared.notes`` says what a change of devices means."""
        run = self.locate(target)
        prepared = prepare_resume(
            run, epochs=epochs, project_resolver=self.project_resolver, cache_dir=self.cache_dir,
            gpus=gpus, nproc=nproc,
        )  # fmt: skip
        return prepared, run

    def start_prepared(
        self,
        prepared: Prepared,
        resume_from: str | None = None,
        sync_every_epochs: int | None = None,
    ) -> str:
        """Start what :meth:`compose` or :meth:`prepare_resume` returned (the CLI shows it
        first: a dry run, the config dump); returns the run id."""
        with self._preparation():
            if resume_from is None:
                check_data(prepared)
            return self._launch_unless_cancelled(
                prepared, resume_from, self.policy(sync_every_epochs)
            )

    def locate(self, target: str | None) -> RunInfo:
        """The resumable run ``target`` names (None: the newest) in app data; a run that is only
        in the store (Team Files) is downloaded into app data first."""

        def told(run: RunInfo) -> None:
            logger.info("fetching run %s from %s", run.run_id, run.folder)
            if self.on_fetch is not None:
                self.on_fetch(run)

        return locate_run(self.app_data_dir, self.store, target, on_fetch=told)

    @property
    def traceback(self) -> str | None:
        """The failed run's traceback, for local clients (the CLI's --verbose); never sent
        over HTTP (``status`` has one line)."""
        session = self._session
        return session.status().traceback if session else None

    def stop(self) -> bool:
        """Ask the current run to stop at the next batch, or a run being prepared not to start;
        False when nothing is running."""
        with self._lock:
            if self._preparing:
                self._cancel_start = True
                return True
        session = self._session
        return bool(session and session.request_stop())

    def shutdown(self, timeout: float = 120.0) -> None:
        """The app is closing: stop the run at its next batch, let it save and upload."""
        if self.stop():
            logger.info("app shutdown: stopping the run gracefully")
        self.wait(timeout)

    def wait(self, timeout: float | None = None) -> ControllerStatus:
        """Block until the current run has ended and its artifacts are uploaded."""
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout)  # (the watcher itself ends the app on the platform)
        return self.status()

    # ------------------------------------------------------------------ internals
    def _refuse_if_busy(self) -> None:
        if self._preparing:
            raise SessionBusyError("a run is being prepared: stop it or wait for it to start")
        if self.busy:
            run_id = self._session.run_id if self._session else "?"
            raise SessionBusyError(
                f"run {run_id} is still in progress: stop it or wait for it to finish"
            )

    @contextlib.contextmanager
    def _preparation(self) -> Any:
        """One start or resume at a time: refused at once when busy (not queued behind the
        lock), ``preparing`` meanwhile; the lock is held only to check and to launch, so status
        and stop answer during the seconds preparation takes."""
        with self._lock:
            self._refuse_if_busy()
            self._preparing, self._cancel_start = True, False
        try:
            yield
        finally:
            with self._lock:
                self._preparing = False

    def _launch_unless_cancelled(
        self, prepared: Prepared, resume_from: str | None, sync: SyncPolicy | None
    ) -> str:
        with self._lock:
            if self._cancel_start:
                raise StartCancelled(
                    [f"run {prepared.run_id} was not started: Stop was asked for while it was "
                     "being prepared"]
                )  # fmt: skip
            return self._launch(prepared, resume_from, sync)

    def _launch(self, prepared: Prepared, resume_from: str | None, sync: SyncPolicy | None) -> str:
        hooks, self._syncer = [], None
        if sync is not None:
            from src.hooks.sync import CheckpointSyncHook

            self._syncer = CheckpointSync(
                self.store,
                artifacts_dir(prepared.run_id, prepared.project.name),
                self.app_data_dir / "_sync" / prepared.run_id,
                prepared.run_id,
            )
            hooks.append(CheckpointSyncHook(self._syncer, sync.every_epochs, sync.every_minutes))
        session = TrainingSession(
            prepared.cfg,
            prepared.run_id,
            resume_from=resume_from,
            sinks=self.sinks,
            console_log_level=self.console_log_level,
            app_data_root=self.app_data_dir,
            extra_hooks=hooks,
            stop_signals=self.stop_signals,
            max_nonfinite=self.max_nonfinite,
        )
        try:
            session.start()
        except BaseException:
            if self._syncer is not None:
                self._syncer.close()
            raise
        self._session, self._prepared, self.outcome = session, prepared, None
        self._active = True
        self._watcher = threading.Thread(
            target=self._after_run, args=(session, prepared), name="upload", daemon=True
        )
        self._watcher.start()
        return prepared.run_id

    def _after_run(self, session: TrainingSession, prepared: Prepared) -> None:
        context = self.run_context() if self.run_context else contextlib.nullcontext()
        try:
            with context:
                self._finish_run(session, prepared)
        except Exception as exc:  # whatever broke after training: shown, never silent
            logger.exception("run %s: the step after training failed", prepared.run_id)
            self.outcome = RunOutcome(
                run_id=prepared.run_id, state=session.status().state.value,
                upload_error=f"{type(exc).__name__}: {exc}", local_dir=str(prepared.work_dir),
            )  # fmt: skip
        finally:
            # the app's end-of-run path always runs (on the platform: app.stop() or stay up)
            if self.on_run_end is not None and self.outcome is not None:
                self.on_run_end(self.outcome)

    def _finish_run(self, session: TrainingSession, prepared: Prepared) -> None:
        syncer = self._syncer
        try:
            status = session.wait()
            if syncer is not None:  # the final upload below supersedes the pending sync
                syncer.close()
            outcome = RunOutcome(run_id=prepared.run_id, state=status.state.value)
            if status.state == SessionState.FINISHED and prepared.params.evaluate:
                self._evaluate(prepared.work_dir, outcome)
            if status.state in (SessionState.FINISHED, SessionState.STOPPED):
                self._uploading = True
                self._upload(session, prepared, status.state.value, outcome)
            self.outcome = outcome
        finally:
            self._uploading = False
            self._active = False

    def _evaluate(self, work_dir: Path, outcome: RunOutcome) -> None:
        """The Model Benchmark evaluation of a run (src.app.evaluate); a failure is shown in the
        outcome and never stops the upload."""
        from src.app.evaluate import evaluate_run

        self._evaluating = True
        try:
            outcome.evaluation = evaluate_run(work_dir).summary()
        except Exception as exc:
            outcome.evaluation_error = f"{type(exc).__name__}: {exc}"
            logger.exception("evaluation of %s failed; the run is uploaded all the same", work_dir)
        finally:
            self._evaluating = False

    def evaluate(
        self,
        run_id: str,
        checkpoint: str | None = None,
        project_dir: str | None = None,
        split: str = "val",
    ) -> dict[str, Any]:
        """Evaluate a run in app data on request (a stopped run, another checkpoint, the train
        split): the evaluation's summary; its files go to the run's ``evaluation/`` folder.
        Only runs in app data: their ``config.py`` is Python this executes."""
        from src.app.evaluate import evaluate_run
        from src.runs.layout import RunIdError, run_dir

        try:
            work_dir = run_dir(self.app_data_dir, run_id)
        except RunIdError as exc:
            raise RequestError([str(exc)]) from None
        if not (work_dir / RUN_CONFIG).is_file():
            raise RequestError([f"no run {run_id!r} in {self.app_data_dir}"])
        if checkpoint is not None and Path(checkpoint).resolve().parent != work_dir:
            raise RequestError([f"{checkpoint} is not a checkpoint of run {run_id}"])
        with self._lock:
            if self.busy:
                raise SessionBusyError("a run is in progress: evaluate when it has ended")
        return evaluate_run(work_dir, checkpoint, project_dir=project_dir, split=split).summary()

    def _upload(
        self, session: TrainingSession, prepared: Prepared, state: str, outcome: RunOutcome
    ) -> None:
        """Upload and verify; then set the output and (on the platform) free the app data."""
        staging = self.app_data_dir / "_upload"
        try:
            remote = upload_run(
                prepared, self.store, state=state, history=session.history, staging_root=staging,
                task_id=self.task_id, started_at=session.status().started_at,
            )  # fmt: skip
        except Exception as exc:  # upload, export (CheckpointError), disk: all shown, files kept
            expected = isinstance(exc, UploadError | FileNotFoundError | OSError | CheckpointError)
            outcome.upload_error = str(exc) if expected else f"{type(exc).__name__}: {exc}"
            outcome.local_dir = str(prepared.work_dir)
            logger.error(
                "upload of run %s failed: %s; its files stay in %s",
                prepared.run_id, exc, prepared.work_dir,
            )  # fmt: skip
            return
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # the packed copy, uploaded or not
        outcome.artifacts = self.store.describe(remote)
        if self.after_upload is not None:
            try:
                self.after_upload(remote)
            except Exception as exc:
                outcome.output_error = f"the artifacts are in {remote}, but: {exc}"
                logger.error("setting the output of run %s failed: %s", prepared.run_id, exc)
        self._remote_runs_cache = None  # the store changed
        if self.cleanup_after_upload and is_run_dir(self.app_data_dir, prepared.work_dir):
            # the app-data copy goes only when Team Files holds a resumable state of the run
            state = f"{remote.rstrip('/')}/{RESUME_DIR}/{STATE_FILE}"
            if not self.store.exists(state):
                outcome.warning = (
                    f"the artifacts hold no resumable state ({state}): the run's files stay in "
                    f"{prepared.work_dir}"
                )
                outcome.local_dir = str(prepared.work_dir)
                logger.warning("run %s: %s", prepared.run_id, outcome.warning)
                return
            shutil.rmtree(prepared.work_dir, ignore_errors=True)
            logger.info("run %s uploaded and verified: removed %s", prepared.run_id,
                        prepared.work_dir)  # fmt: skip


def _param_values(hyper: Any, problems: list[str]) -> dict[str, Any]:
    """``hyperparameters`` → TrainParams keyword arguments; ill-typed or unknown ones are left
    out and named in ``problems``."""
    if not isinstance(hyper, dict):
        problems.append(f"hyperparameters must be an object, got {json.dumps(hyper)}")
        return {}
    hints = typing.get_type_hints(TrainParams)
    param_fields = {f.name for f in fields(TrainParams)} - {"task", "classes"}
    bad = sorted(set(hyper) - param_fields)
    if bad:
        problems.append(f"unknown hyperparameters {bad}; known: {sorted(param_fields)}")
    values = {k: v for k, v in hyper.items() if k in param_fields}
    if isinstance(values.get("augmentation_pipeline"), list):  # the transforms as JSON
        values["augmentation_pipeline"] = json.dumps(values["augmentation_pipeline"])
    if type(values.get("input_size")) is int:
        values["input_size"] = [values["input_size"]] * 2
    for key in (*AUTO_SIZED, "amp"):  # "auto" is null: the app chooses on the run's device
        if values.get(key) == "auto":
            values[key] = None
    for key, value in list(values.items()):
        problem = _json_problem(key, value, hints[key])
        if problem:
            problems.append(problem)
            del values[key]
        elif isinstance(value, list):
            values[key] = tuple(value)
    return values


def _split_from_json(spec: Any, problems: list[str]) -> Split | None:
    """``split`` → a ``Split`` (None when the body has none, or it is malformed: then named in
    ``problems``)."""
    if spec is None:
        return None
    names = ("train", "val", "train_items", "val_items")
    if not isinstance(spec, dict) or any(
        spec.get(k) is not None and not _is_name_list(spec[k]) for k in names
    ):
        problems.append(
            'split must be an object of name lists, e.g. {"train": ["train"], "val": ["val"]}'
        )
        return None
    return Split(
        train_datasets=spec.get("train"),
        val_datasets=spec.get("val"),
        train_items=spec.get("train_items"),
        val_items=spec.get("val_items"),
        description=str(spec.get("description", "from the request")),
    )


def _json_problem(name: str, value: Any, hint: Any) -> str | None:
    """Why a JSON value does not fit a ``TrainParams`` field's type (None: it fits). JSON has no
    tuples and no int/float split, so lists stand for tuples and whole numbers for floats;
    ``true`` is not a number."""
    import types
    import typing

    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    if hint is int:
        ok = type(value) is int
    elif hint is float:
        ok = type(value) in (int, float)
    elif hint in (str, bool):
        ok = type(value) is hint
    elif typing.get_origin(hint) is tuple:
        fixed = Ellipsis not in args
        ok = (
            isinstance(value, list)
            and all(type(v) is int for v in value)
            and (not fixed or len(value) == len(args))
        )
        if not ok:
            what = f"{len(args)} whole numbers" if fixed else "a list of whole numbers"
            return f"{name} must be {what}, got {json.dumps(value)}"
    else:
        ok = True
    kind = {int: "a whole number", float: "a number", str: "a string", bool: "true or false"}
    return None if ok else f"{name} must be {kind.get(hint, hint)}, got {json.dumps(value)}"


def _is_name_list(value: Any) -> bool:
    """A JSON list of strings (class, dataset or item names)."""
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def request_from_json(
    body: dict[str, Any], app_data_dir: str, default_project: Any = None
) -> TrainRequest:
    """The HTTP API's JSON → TrainRequest; unknown or ill-typed fields → RequestError (a 400
    that names the field), never a TypeError deep in preparation (a 500).

    Without ``project`` in the body, ``default_project`` (a ``LocalProject``) trains."""
    problems: list[str] = []
    if not isinstance(body, dict):
        raise RequestError(["the request body must be a JSON object"])
    known = {"project", "task", "model", "classes", "split", "hyperparameters", "config",
             "keep_empty_images", "run_id"}  # fmt: skip
    unknown = sorted(set(body) - known)
    if unknown:
        problems.append(f"unknown fields {unknown}; known: {sorted(known)}")
    top_level = {"project": str | None, "task": str, "model": str | None, "config": str | None,
                 "keep_empty_images": bool, "run_id": str | None}  # fmt: skip
    problems += [
        problem
        for key, hint in top_level.items()
        if key in body and (problem := _json_problem(key, body[key], hint))
    ]
    if body.get("classes") is not None and not _is_name_list(body["classes"]):
        problems.append(f"classes must be a list of class names, got {json.dumps(body['classes'])}")
    values = _param_values(body.get("hyperparameters") or {}, problems)
    if problems:
        raise RequestError(problems)
    params = TrainParams(task=body.get("task", "object-detection"), **values)
    split = _split_from_json(body.get("split"), problems)
    if not body.get("project") and default_project is None:
        problems.append("project is required: a local Supervisely project directory")
    if problems:
        raise RequestError(problems)
    use_default = not body.get("project")
    return TrainRequest(
        project_dir=str(default_project.directory if use_default else body["project"]),
        project_id=default_project.project_id if use_default else None,
        project_name=default_project.name if use_default else None,
        app_data_dir=app_data_dir,
        model=body.get("model"),
        config_text=body.get("config"),
        classes=body.get("classes"),
        params=params,
        split=split,
        keep_empty_images=bool(body.get("keep_empty_images", True)),
        run_id=body.get("run_id"),
    )
