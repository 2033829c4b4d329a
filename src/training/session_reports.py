"""What a training session reports, and to whom: its states, the status snapshot the UI, the API
and the CLI read, its own record of the run (latest values, a bounded history), and the fan-out
that sends each report to every sink.

Apart from ``session_base`` (the Runner in its thread) because the controller, the end of a run and
the ranks' relay read these values without running anything; ``src.training.session``
re-exports them.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from src.hooks.metrics import MetricsSink, TrainProgress, ValResult
from src.training.downsample import thin_older

logger = logging.getLogger(__name__)


class SessionState(enum.StrEnum):
    IDLE = "idle"
    PREPARING = "preparing"
    TRAINING = "training"
    VALIDATING = "validating"
    STOPPING = "stopping"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"
    # the controller's, never a session's: the run has ended, its artifacts are being uploaded
    UPLOADING = "uploading"
    EVALUATING = "evaluating"  # the controller's too: the best checkpoint is being evaluated
    EXPORTING = "exporting"  # the controller's too: the best checkpoint is being exported

    @property
    def is_final(self) -> bool:
        return self in (SessionState.FINISHED, SessionState.STOPPED, SessionState.FAILED)

    @property
    def is_running(self) -> bool:
        return self in (
            SessionState.PREPARING,
            SessionState.TRAINING,
            SessionState.VALIDATING,
            SessionState.STOPPING,
        )


@dataclass
class SessionStatus:
    """A snapshot for the UI, the API and the CLI (plain values only)."""

    state: SessionState
    run_id: str | None  # None: the controller's status before any run
    work_dir: str | None
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
    stopped_checkpoint: str | None = None  # where a stopped run resumes from
    skipped_nonfinite_steps: int = 0
    ended_early: str | None = None  # why a finished run ended before its last epoch
    gpu: dict[str, float] = field(default_factory=dict)  # peak memory, utilisation (CUDA runs)


class _Recorder:
    """The session's own sink: latest values and the history of a run (training records
    thinned as they grow, see ``src.training.downsample``; every validation)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latest_train: TrainProgress | None = None
        self.latest_val: ValResult | None = None
        self.history: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}

    def on_train_iter(self, progress: TrainProgress) -> None:
        with self.lock:
            self.latest_train = progress
            train = self.history["train"]
            train.append(
                {"epoch": progress.epoch, "iter": progress.iteration, "lr": progress.lr}
                | progress.losses
            )
            # bounded: older records thinned out (the validations, one per round, are all kept)
            self.history["train"] = thin_older(train)

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
