"""Keep training randomness reproducible across checkpoints and validation.

mmengine seeds the RNGs once, at start, and does not checkpoint them; random augmentations draw
from numpy's global RNG, samplers of two-stage heads from torch's. This hook saves the Python,
numpy and torch RNG states into every checkpoint and hands them to the resumable train loop on
resume. It also isolates validation: the RNG states are saved before each validation and restored
after it, so whether (and where) a run validated never changes how it trains.
"""

from __future__ import annotations

from typing import Any

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from src.engine.loops import ResumableEpochBasedTrainLoop, get_rng_state, set_rng_state

RNG_KEY = "rng_state"


@HOOKS.register_module()
class RngStateHook(Hook):
    """Save RNG states with checkpoints, restore them on resume, isolate validation."""

    priority = "VERY_HIGH"

    def __init__(self) -> None:
        self._before_val: dict[str, Any] | None = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[RNG_KEY] = get_rng_state()
        checkpoint["meta"]["max_epochs"] = runner.max_epochs
        checkpoint["meta"]["batches_per_epoch"] = len(runner.train_dataloader)
        metadata = runner.cfg.get("sly_metadata")
        if metadata is not None:
            checkpoint["meta"]["sly_metadata"] = {
                k: metadata[k]
                for k in ("model_name", "architecture", "task_type", "project_id", "project_name")
                if k in metadata
            }

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get(RNG_KEY)
        loop = getattr(runner, "_train_loop", None)
        if state is not None and isinstance(loop, ResumableEpochBasedTrainLoop):
            loop.pending_rng_state = state

    def before_val_epoch(self, runner) -> None:
        self._before_val = get_rng_state()

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        if self._before_val is not None:
            set_rng_state(self._before_val)
            self._before_val = None
