"""``TrainingSession``: the mmengine Runner in a daemon worker thread, with a state machine.

One run at a time per process. The worker builds the Runner from a composed config, registers our
hooks with their collaborators (sinks), trains, and records how it ended; an exception is captured
with its traceback and reported, never swallowed. Callers (CLI, UI, HTTP API) only call
``start``/``wait``/``status``.
"""

from __future__ import annotations

import copy
import enum
import logging
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmengine.config import Config

from src.hooks.metrics import MetricsHook, MetricsSink, TrainProgress, ValResult

logger = logging.getLogger(__name__)


class SessionState(enum.StrEnum):
    IDLE = "idle"
    PREPARING = "preparing"
    TRAINING = "training"
    FINISHED = "finished"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (SessionState.FINISHED, SessionState.FAILED)


class SessionBusyError(RuntimeError):
    """A second run was asked for while one is running in this process."""


@dataclass
class SessionStatus:
    """A snapshot for the UI, the API and the CLI (plain values only)."""

    state: SessionState
    run_id: str
    work_dir: str
    epoch: int = 0
    max_epochs: int = 0
    iteration: int = 0
    max_iterations: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    lr: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    per_class_ap: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    traceback: str | None = None
    started_at: float | None = None
    finished_at: float | None = None


class _Recorder:
    """The session's own sink: latest values and the full history of a run."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latest_train: TrainProgress | None = None
        self.latest_val: ValResult | None = None
        self.history: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}

    def on_train_iter(self, progress: TrainProgress) -> None:
        with self.lock:
            self.latest_train = progress
            self.history["train"].append(
                {"epoch": progress.epoch, "iter": progress.iteration, "lr": progress.lr}
                | progress.losses
            )

    def on_val(self, result: ValResult) -> None:
        with self.lock:
            self.latest_val = result
            self.history["val"].append(
                {"epoch": result.epoch, "iter": result.iteration}
                | result.metrics
                | {"per_class_ap": result.per_class_ap}
            )


class _FanOut:
    """Send every report to several sinks; a failing sink is logged, not fatal to training."""

    def __init__(self, sinks: Sequence[MetricsSink]) -> None:
        self.sinks = list(sinks)

    def on_train_iter(self, progress: TrainProgress) -> None:
        for sink in self.sinks:
            try:
                sink.on_train_iter(progress)
            except Exception:
                logger.exception("metrics sink %r failed", sink)

    def on_val(self, result: ValResult) -> None:
        for sink in self.sinks:
            try:
                sink.on_val(result)
            except Exception:
                logger.exception("metrics sink %r failed", sink)


_RUN_LOCK = threading.Lock()  # one run at a time per process


class TrainingSession:
    """Run one composed config in a daemon thread.

    Args:
        cfg: a composed, validated config (``src.config_builder``).
        run_id: names the run (and mmengine's logger/visualizer instances, which are per-name
            process-wide singletons: a unique id lets a second run in one process work).
        sinks: receive training progress and validation results.
        metrics_interval: report every N iterations.
        console_log_level: level of mmengine's console output (its log file keeps INFO).
    """

    def __init__(
        self,
        cfg: Config,
        run_id: str,
        sinks: Sequence[MetricsSink] = (),
        metrics_interval: int = 1,
        console_log_level: str = "INFO",
    ) -> None:
        self.cfg = copy.deepcopy(cfg)
        self.run_id = run_id
        self.recorder = _Recorder()
        self._sink = _FanOut([self.recorder, *sinks])
        self.metrics_interval = metrics_interval
        self.console_log_level = console_log_level
        self._state = SessionState.IDLE
        self._error: str | None = None
        self._traceback: str | None = None
        self._thread: threading.Thread | None = None
        self._started_at: float | None = None
        self._finished_at: float | None = None
        self.runner = None

    # ------------------------------------------------------------------ public API
    def start(self) -> None:
        """Start the run in a daemon thread; returns at once."""
        if self._state != SessionState.IDLE:
            raise SessionBusyError(f"this session already ran (state: {self._state.value})")
        if not _RUN_LOCK.acquire(blocking=False):
            raise SessionBusyError(
                "a training run is already in progress in this app: wait for it to finish "
                "or stop it first"
            )
        self._set_state(SessionState.PREPARING)
        self._started_at = time.time()
        self._thread = threading.Thread(
            target=self._worker, name=f"train-{self.run_id}", daemon=True
        )
        self._thread.start()

    def wait(self, timeout: float | None = None) -> SessionStatus:
        """Block until the run ends (or ``timeout`` seconds pass); returns the status."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.status()

    def status(self) -> SessionStatus:
        with self.recorder.lock:
            train = self.recorder.latest_train
            val = self.recorder.latest_val
        max_epochs = int(self.cfg.train_cfg.get("max_epochs", 0))
        return SessionStatus(
            state=self._state,
            run_id=self.run_id,
            work_dir=str(self.cfg.work_dir),
            epoch=train.epoch if train else 0,
            max_epochs=max_epochs,
            iteration=train.iteration if train else 0,
            max_iterations=train.max_iterations if train else 0,
            losses=dict(train.losses) if train else {},
            lr=train.lr if train else None,
            metrics=dict(val.metrics) if val else {},
            per_class_ap=dict(val.per_class_ap) if val else {},
            error=self._error,
            traceback=self._traceback,
            started_at=self._started_at,
            finished_at=self._finished_at,
        )

    @property
    def history(self) -> dict[str, list[dict[str, Any]]]:
        with self.recorder.lock:
            return copy.deepcopy(self.recorder.history)

    # ------------------------------------------------------------------ worker
    def _set_state(self, state: SessionState) -> None:
        logger.debug("session %s: %s -> %s", self.run_id, self._state.value, state.value)
        self._state = state

    def _worker(self) -> None:
        try:
            runner = self._build_runner()
            self.runner = runner
            self._set_state(SessionState.TRAINING)
            runner.train()
            self._set_state(SessionState.FINISHED)
        except BaseException as exc:  # report everything, the thread must end cleanly
            self._error = f"{type(exc).__name__}: {exc}"
            self._traceback = traceback.format_exc()
            logger.error("training run %s failed: %s", self.run_id, self._error)
            self._set_state(SessionState.FAILED)
        finally:
            self._finished_at = time.time()
            self._close_runner()
            _RUN_LOCK.release()

    def _build_runner(self):
        from mmengine.runner import Runner

        import src.dataset  # noqa: F401  (registers SuperviselyDataset)
        from src import mmdet_compat

        mmdet_compat.apply()

        console_level = self.console_log_level

        class AppRunner(Runner):
            """mmengine's Runner whose console output can be quieter than its log file."""

            def build_logger(self, log_level="INFO", log_file=None, **kwargs):
                mm_logger = super().build_logger(log_level=log_level, log_file=log_file, **kwargs)
                for handler in mm_logger.handlers:
                    if type(handler) is logging.StreamHandler:
                        handler.setLevel(console_level)
                return mm_logger

        cfg = self.cfg
        Path(cfg.work_dir).mkdir(parents=True, exist_ok=True)
        # mmengine's logger and visualizer are process-wide instances looked up by name
        cfg.experiment_name = f"{self.run_id}_{id(self):x}"
        runner = AppRunner.from_cfg(cfg)
        runner.register_hook(MetricsHook(self._sink, interval=self.metrics_interval))
        return runner

    def _close_runner(self) -> None:
        runner = self.runner
        if runner is None:
            return
        try:
            for backend in getattr(runner.visualizer, "_vis_backends", {}).values():
                backend.close()
        except Exception:
            logger.debug("closing visualizer backends failed", exc_info=True)
        mm_logger = getattr(runner, "logger", None)
        for handler in list(getattr(mm_logger, "handlers", [])):
            if isinstance(handler, logging.FileHandler):
                handler.close()
                mm_logger.removeHandler(handler)
