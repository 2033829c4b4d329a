"""Keep the true peak of GPU memory: read after every iteration, before mmengine resets it."""

from __future__ import annotations

from typing import Any

from mmengine.hooks import Hook

from src.engine.gpu_stats import GpuStats


class GpuMemoryHook(Hook):
    """Fold each iteration's allocator peak into ``stats`` (``src.engine.gpu_stats``).

    mmengine's LoggerHook (priority BELOW_NORMAL) resets the peak statistics when it logs; this
    hook runs before it (NORMAL), so no iteration's peak is lost. It also starts and stops the
    utilisation sampler with the run.

    Args:
        stats: the run's GpuStats.
    """

    priority = "NORMAL"

    def __init__(self, stats: GpuStats) -> None:
        if not isinstance(stats, GpuStats):
            raise TypeError(f"stats must be a GpuStats, got {type(stats).__name__}")
        self.stats = stats

    def before_train(self, runner: Any) -> None:
        self.stats.start()

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        self.stats.note_peak()

    def after_val_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        self.stats.note_peak()

    def after_run(self, runner: Any) -> None:
        self.stats.stop()
