"""What an exact resume needs, saved into every checkpoint and handed back on resume.

The RNG states first: training randomness stays reproducible across checkpoints and validation.

mmengine seeds the RNGs once, at start, and does not checkpoint them; random augmentations draw
from numpy's global RNG, samplers of two-stage heads from torch's. This hook saves the Python,
numpy and torch RNG states into every checkpoint and hands them to the resumable train loop on
resume. It also isolates validation: the RNG states are saved before each validation and restored
after it, so whether (and where) a run validated never changes how it trains.

With several processes only rank 0 writes checkpoints (mmengine's ``save_checkpoint`` is
``master_only``), yet every rank draws from its own generators (a two-stage head samples its
proposals on each). So before each checkpoint all ranks hand their states to rank 0
(``share_states``: after every epoch, and from ``StopHook`` before a stop's checkpoint, points
all ranks reach together), which saves them by rank; a resume on the same number of processes
gives each rank its own back.

The checkpoint also records the run's batch geometry (iterations per epoch, samples per
iteration, processes), from which a resume on another geometry re-counts (``AppRunner.resume``),
the planned epochs, and the part of the run's description (``RunMetadata.for_checkpoint``) from
which the run listers show a run by its newest checkpoint alone.
"""

from __future__ import annotations

from typing import Any

from mmengine import dist
from mmengine.hooks import Hook

from src.config.metadata import KEY as METADATA_KEY
from src.config.metadata import RunMetadata
from src.engine.loops import (
    ResumableEpochBasedTrainLoop,
    geometry_of,
    get_rng_state,
    set_rng_state,
)

RNG_KEY = "rng_state"
RANKS_KEY = "rng_state_by_rank"


class ResumeStateHook(Hook):
    """Save RNG states (every rank's), batch geometry, planned epochs and the run's description
    with checkpoints; restore the RNG states on resume; isolate validation."""

    priority = "VERY_HIGH"

    def __init__(self) -> None:
        self._before_val: dict[str, Any] | None = None
        self._shared: list[dict[str, Any]] | None = None

    def share_states(self) -> None:
        """Every rank's RNG states to rank 0, for its next checkpoint. A collective: all ranks
        must call it at the same point (nothing to do in a single process)."""
        if dist.get_world_size() > 1:
            self._shared = dist.all_gather_object(get_rng_state())

    def after_train_epoch(self, runner) -> None:
        self.share_states()  # before CheckpointHook (priority VERY_LOW) saves

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[RNG_KEY] = get_rng_state()
        shared, self._shared = self._shared, None
        if shared is not None:
            checkpoint[RANKS_KEY] = [checkpoint[RNG_KEY], *shared[1:]]
        meta = checkpoint["meta"]
        meta["max_epochs"] = runner.max_epochs
        meta.update(geometry_of(runner).to_meta())
        if runner.cfg.get(METADATA_KEY) is not None:
            meta[METADATA_KEY] = RunMetadata.of(runner.cfg).for_checkpoint()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        loop = getattr(runner, "_train_loop", None)
        if not isinstance(loop, ResumableEpochBasedTrainLoop) or not getattr(
            runner, "_resume", False
        ):
            return  # loading weights only (load_from: a fine-tune seeds itself), an evaluation
        by_rank = checkpoint.get(RANKS_KEY)
        world, rank = dist.get_world_size(), dist.get_rank()
        state = by_rank[rank] if by_rank and len(by_rank) == world else checkpoint.get(RNG_KEY)
        if state is not None:
            loop.pending_rng_state = state

    def before_val_epoch(self, runner) -> None:
        self._before_val = get_rng_state()

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        if self._before_val is not None:
            set_rng_state(self._before_val)
            self._before_val = None
