"""The app's one run at a time: a start or resume being prepared, the run training, its end.

``RunSlot`` holds the current ``TrainingSession`` and what a client sees of it: it refuses a second
start while one is prepared or trains, lets Stop cancel a start still being prepared, launches the
session, and ends the run in a watcher thread (``RunEnding``: evaluate, export, upload) so that no
request handler waits on training. Apart from the controller, whose use cases (compose, start,
resume, export, evaluate) build the session it launches, because its lock and flags decide what
``status`` promises and are easier to check in one place.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from src.core.errors import BusyError, StartCancelled
from src.runs.checkpoint_sync import CheckpointSync, SyncStatus
from src.setup.prepare import Prepared
from src.training.end_of_run import RunEnding, RunOutcome
from src.training.session import SessionState, SessionStatus, TrainingSession

logger = logging.getLogger(__name__)

# builds the session of a prepared run (not started) and its checkpoint sync (None: off)
SessionBuilder = Callable[[], tuple[TrainingSession, CheckpointSync | None]]


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
    chosen: list[str] = field(default_factory=list)  # of the notes: values chosen for auto settings

    @property
    def ended(self) -> bool:
        """The run and its upload are over: a new start or resume can succeed."""
        return (self.state == SessionState.IDLE or self.state.is_final) and not self.busy

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body.pop("traceback")
        body["state"], body["run_state"] = str(self.state), str(self.run_state)
        return body


class RunSlot:
    """One run at a time, from its preparation to the end of its upload.

    Args:
        ending: the steps after training (evaluate, export, upload), run in the watcher thread.
        run_context: a context each run's wait-and-upload runs in (``app.handle_stop``, so the
            platform's shutdown waits for the upload).
        on_run_end: called with the outcome after the upload (``app.stop()`` on the platform).
        on_run_start: told each run's folder once it trains (a resume too): TensorBoard.
    """

    def __init__(
        self,
        ending: RunEnding,
        run_context: Callable[[], AbstractContextManager] | None = None,
        on_run_end: Callable[[RunOutcome], None] | None = None,
        on_run_start: Callable[[Path], None] | None = None,
    ) -> None:
        self._ending = ending
        self.run_context = run_context
        self.on_run_end = on_run_end
        self.on_run_start = on_run_start
        self._lock = threading.Lock()
        self._session: TrainingSession | None = None
        self._prepared: Prepared | None = None
        self._syncer: CheckpointSync | None = None
        self._watcher: threading.Thread | None = None
        self._active = False  # from launch until the run's upload is over
        self._preparing = False  # a start or resume is being prepared (before launch)
        self._cancel_start = False  # Stop was asked for during that preparation
        self._occupied: str | None = None  # other work on the run's device (pre-labelling)
        # work that owns the device across runs of its own (an audit): (what, its runs' test)
        self._reserved: tuple[str, Callable[[str], bool]] | None = None
        self.outcome: RunOutcome | None = None

    # ------------------------------------------------------------------ queries
    @property
    def prepared(self) -> Prepared | None:
        return self._prepared

    @property
    def syncer(self) -> CheckpointSync | None:
        """The current run's checkpoint sync (None: off)."""
        return self._syncer

    @property
    def busy(self) -> bool:
        session = self._session
        return (
            self._preparing
            or self._active
            or self._occupied is not None
            or bool(session and not session.status().state.is_final)
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
            state = self._ending.stage or SessionState.UPLOADING
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
            uploading=self._ending.stage == SessionState.UPLOADING,
            busy=self.busy,
            outcome=copy.copy(self.outcome) if self.outcome else None,
            notes=(list(prepared.notes) if prepared else [])
            + (list(session.notes) if session is not None else []),
            chosen=list(session.chosen) if session is not None else [],
        )

    def history(self) -> dict[str, list[dict[str, Any]]]:
        return self._session.history if self._session else {"train": [], "val": []}

    @property
    def traceback(self) -> str | None:
        """The failed run's traceback, for local clients (the CLI's --verbose); never sent
        over HTTP (``status`` has one line)."""
        session = self._session
        return session.status().traceback if session else None

    # ------------------------------------------------------------------ actions
    def stop(self) -> bool:
        """Ask the current run to stop at the next batch, or a run being prepared not to start;
        False when nothing is running."""
        with self._lock:
            if self._preparing:
                self._cancel_start = True
                return True
        session = self._session
        return bool(session and session.request_stop())

    def wait(self, timeout: float | None = None) -> ControllerStatus:
        """Block until the current run has ended and its artifacts are uploaded."""
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout)  # (the watcher itself ends the app on the platform)
        return self.status()

    def refuse_while_busy(self, message: str) -> None:
        """A ``BusyError`` with ``message`` while a run is prepared or in progress."""
        with self._lock:
            if self.busy:
                raise BusyError(message)

    @contextlib.contextmanager
    def occupied(self, what: str, refused: str) -> Any:
        """``what`` (pre-labelling) uses the device for the block: refused with ``refused``
        while a run is prepared or in progress, and a start or resume refused meanwhile."""
        with self._lock:
            if self._occupied is not None or self._reserved is not None:
                what_else = self._occupied or self._reserved[0]  # type: ignore[index]
                raise BusyError(f"{what_else} is in progress: wait for it to end")
            if self.busy:
                raise BusyError(refused)
            self._occupied = what
        try:
            yield
        finally:
            with self._lock:
                self._occupied = None

    @contextlib.contextmanager
    def reserved(self, what: str, own: Callable[[str], bool]) -> Any:
        """``what`` (an audit) owns the device across its runs, between them too: starting or
        resuming a run that is not its own (``own(run_id)`` false) and pre-labelling are refused
        while the block lasts."""
        with self._lock:
            if self._reserved is not None:
                raise BusyError(f"{self._reserved[0]} is in progress: wait for it to end")
            self._refuse_if_busy()
            self._reserved = (what, own)
        try:
            yield
        finally:
            with self._lock:
                self._reserved = None

    @contextlib.contextmanager
    def preparation(self) -> Any:
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

    def launch_unless_cancelled(self, prepared: Prepared, build: SessionBuilder) -> str:
        """Start the session ``build`` makes for ``prepared`` (inside :meth:`preparation`),
        unless Stop was asked for meanwhile; returns the run id."""
        with self._lock:
            if self._cancel_start:
                raise StartCancelled(
                    [f"run {prepared.run_id} was not started: Stop was asked for while it was "
                     "being prepared"]
                )  # fmt: skip
            if self._reserved is not None and not self._reserved[1](prepared.run_id):
                raise BusyError(f"{self._reserved[0]} is in progress: start when it has ended")
            return self._launch(prepared, build)

    # ------------------------------------------------------------------ internals
    def _refuse_if_busy(self) -> None:
        if self._occupied is not None:
            raise BusyError(f"{self._occupied} is in progress: start when it has ended")
        if self._preparing:
            raise BusyError("a run is being prepared: stop it or wait for it to start")
        if self.busy:
            run_id = self._session.run_id if self._session else "?"
            raise BusyError(f"run {run_id} is still in progress: stop it or wait for it to finish")

    def _launch(self, prepared: Prepared, build: SessionBuilder) -> str:
        session, self._syncer = build()
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
        if self.on_run_start is not None:
            try:
                self.on_run_start(prepared.work_dir)
            except Exception as exc:  # a viewer of the run must not fail it
                logger.warning("run %s: %s", prepared.run_id, exc)
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
            self.outcome = self._ending.finish(session, prepared, status.state)
        finally:
            self._active = False
