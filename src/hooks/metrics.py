"""Stream training progress, losses, learning rate and validation metrics to a sink.

The hook knows nothing about who listens: the CLI's progress bar, the UI's charts and the run's
``metrics.json`` are all sinks. Values are passed as Python floats; NaN and Inf stay NaN and Inf
(a diverging run must look like one, never like a loss of 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mmengine.hooks import Hook


@dataclass
class TrainProgress:
    """One training iteration as the sink sees it."""

    epoch: int  # 1-based epoch the iteration belongs to
    max_epochs: int
    iteration: int  # 1-based global iteration just finished
    max_iterations: int
    batch_index: int  # 0-based index within the epoch
    batches_per_epoch: int
    losses: dict[str, float] = field(default_factory=dict)
    lr: float | None = None
    gpu: dict[str, float] = field(default_factory=dict)  # src.engine.gpu_stats; empty on the CPU


@dataclass
class ValResult:
    """One validation pass: mAP, mAP50, mAP75 (bbox and segm) and per-class AP."""

    epoch: int
    iteration: int
    metrics: dict[str, float]  # e.g. "bbox_mAP", "bbox_mAP_50", "segm_mAP"
    per_class_ap: dict[str, float]  # class name -> AP (segm AP when the task has masks)


class MetricsSink(Protocol):
    """Receives what the MetricsHook reports. Must return quickly (it runs in the training loop)."""

    def on_train_iter(self, progress: TrainProgress) -> None: ...

    def on_val(self, result: ValResult) -> None: ...


def to_float(value: Any) -> float:
    """Tensor/number → float, NaN and Inf preserved."""
    if hasattr(value, "item"):
        value = value.detach().float().mean().item() if hasattr(value, "detach") else value.item()
    return float(value)


def split_val_metrics(metrics: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """mmdet's ``coco/...`` metrics → (overall metrics, per-class AP)."""
    overall: dict[str, float] = {}
    per_class: dict[str, float] = {}
    for key, value in metrics.items():
        name = key.split("/", 1)[1] if "/" in key else key
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if name.endswith("_precision"):
            per_class[name[: -len("_precision")]] = number
        else:
            overall[name] = number
    return overall, per_class


class MetricsHook(Hook):
    """Report training iterations and validation results to a :class:`MetricsSink`.

    Args:
        sink: receives :class:`TrainProgress` and :class:`ValResult` objects.
        interval: report every ``interval`` training iterations (and always the last of an
            epoch). Reading losses forces a device sync on GPU, hence the throttle.
        gpu: the GPU's use so far (``GpuStats.snapshot``), reported with each iteration.
    """

    priority = "LOW"  # after the optimizer step and the param scheduler

    def __init__(
        self, sink: MetricsSink, interval: int = 1, gpu: Callable[[], dict] | None = None
    ) -> None:
        if interval < 1:
            raise ValueError(f"interval must be at least 1, got {interval}")
        self.sink = sink
        self.interval = interval
        self.gpu = gpu

    def after_train_iter(
        self, runner, batch_idx: int, data_batch: Any = None, outputs: dict | None = None
    ) -> None:
        batches = len(runner.train_dataloader)
        last_of_epoch = batch_idx + 1 == batches
        if not (self.every_n_train_iters(runner, self.interval) or last_of_epoch):
            return
        losses = {k: to_float(v) for k, v in (outputs or {}).items() if "loss" in k}
        lr = None
        try:
            lrs = runner.optim_wrapper.get_lr()
            first = next(iter(lrs.values()))
            lr = float(first[0]) if first else None
        except (AttributeError, StopIteration, TypeError):
            pass
        self.sink.on_train_iter(
            TrainProgress(
                epoch=runner.epoch + 1,
                max_epochs=runner.max_epochs,
                iteration=runner.iter + 1,
                max_iterations=runner.max_iters,
                batch_index=batch_idx,
                batches_per_epoch=batches,
                losses=losses,
                lr=lr,
                gpu=self.gpu() if self.gpu is not None else {},
            )
        )

    def after_val_epoch(self, runner, metrics: dict[str, float] | None = None) -> None:
        overall, per_class = split_val_metrics(metrics or {})
        self.sink.on_val(
            ValResult(
                epoch=runner.epoch, iteration=runner.iter, metrics=overall, per_class_ap=per_class
            )
        )
