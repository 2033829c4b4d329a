"""Hand the newest checkpoint to a background syncer every N epochs or minutes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from mmengine.hooks import Hook


class StateSyncer(Protocol):
    def submit(self, work_dir: str) -> bool: ...


class CheckpointSyncHook(Hook):
    """After an epoch's checkpoint is written, submit it when the interval has passed.

    Runs after mmengine's CheckpointHook (priority VERY_LOW; this one is LOWEST), so the epoch's
    checkpoint exists.
    Submitting only takes a snapshot (hard links); the upload runs in the syncer's thread.

    Args:
        syncer: takes snapshots of the run folder (``CheckpointSync``).
        every_epochs: submit at least every this many epochs (None: not by epochs).
        every_minutes: submit when this many minutes passed since the last one (None: not by
            time). With both, whichever comes first.
        clock: seconds of a monotonic clock (tests pass one they advance).
    """

    priority = "LOWEST"

    def __init__(
        self,
        syncer: StateSyncer,
        every_epochs: int | None = 1,
        every_minutes: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if every_epochs is None and every_minutes is None:
            raise ValueError("give every_epochs or every_minutes (or both)")
        if every_epochs is not None and every_epochs < 1:
            raise ValueError(f"every_epochs must be >= 1, got {every_epochs}")
        if every_minutes is not None and every_minutes <= 0:
            raise ValueError(f"every_minutes must be > 0, got {every_minutes}")
        self.syncer = syncer
        self.every_epochs = every_epochs
        self.every_minutes = every_minutes
        self.clock = clock
        self._last_epoch = 0
        self._last_time = clock()

    def before_train(self, runner) -> None:
        self._last_epoch = runner.epoch
        self._last_time = self.clock()

    def due(self, epoch: int, now: float) -> bool:
        by_epochs = self.every_epochs is not None and epoch - self._last_epoch >= self.every_epochs
        by_time = (
            self.every_minutes is not None and now - self._last_time >= 60 * self.every_minutes
        )
        return by_epochs or by_time

    def after_train_epoch(self, runner) -> None:
        now, done = self.clock(), runner.epoch + 1  # runner.epoch counts from 0 here
        if self.due(done, now) and self.syncer.submit(runner.work_dir):
            self._last_epoch, self._last_time = done, now
