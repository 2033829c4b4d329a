"""A train loop that resumes in the middle of an epoch exactly where the run stopped.

mmengine's ``EpochBasedTrainLoop`` restarts a half-done epoch from its first batch. Here, on a
mid-epoch resume, the sampler skips the samples already trained (without loading them), and the
Python/numpy/torch RNG states saved with the checkpoint are restored at the point where the
uninterrupted run would have been: for an epoch-boundary checkpoint before the epoch's data
iterator is created (creating it draws from torch's RNG), for a mid-epoch one right after.
``BatchGeometry`` is how a run cuts epochs into iterations, recorded in every checkpoint, so that
a resume on another geometry can re-count where it is (``AppRunner.resume``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.dataset import DefaultSampler
from mmengine.registry import DATA_SAMPLERS, LOOPS
from mmengine.runner import EpochBasedTrainLoop

from src.core.layout import VALIDATION_OWED
from src.data.sample_rng import SampleIndex


def get_rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) RNG states, as plain picklable values."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_python_state(state["python"]))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_python_state(value: Any) -> tuple:
    # random.getstate() is (version, tuple_of_ints, gauss); a checkpoint may give lists back
    version, internal, gauss = value
    return (version, tuple(internal), gauss)


@dataclass(frozen=True)
class BatchGeometry:
    """How a run cuts its epochs into iterations: what a checkpoint records of it (``meta``) and
    what a resume compares with its own."""

    batches_per_epoch: int  # iterations per epoch, per process
    samples_per_iteration: int | None  # all processes together (None: an older checkpoint)
    world_size: int = 1

    @classmethod
    def of_meta(cls, meta: dict[str, Any]) -> BatchGeometry | None:
        if "batches_per_epoch" not in meta:
            return None
        spi = meta.get("samples_per_iteration")
        return cls(int(meta["batches_per_epoch"]), None if spi is None else int(spi),
                   int(meta.get("world_size", 1)))  # fmt: skip

    def to_meta(self) -> dict[str, Any]:
        return {
            "batches_per_epoch": self.batches_per_epoch,
            "samples_per_iteration": self.samples_per_iteration,
            "world_size": self.world_size,
        }


def geometry_of(runner: Any) -> BatchGeometry:
    """This run's geometry: its train loader's batches and batch size, times its processes."""
    loader = runner.train_dataloader
    world = int(getattr(runner, "world_size", 1) or 1)
    return BatchGeometry(len(loader), int(loader.batch_size) * world, world)


@DATA_SAMPLERS.register_module()
class SkippableSampler(DefaultSampler):
    """``DefaultSampler`` that can leave out the first N samples of its next pass only, and
    whose indices carry the run's seed and the epoch (``SampleIndex``): the dataset seeds each
    sample's augmentations from them (``src.data.sample_rng``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._skip_once = 0

    def skip_once(self, samples: int) -> None:
        if samples < 0:
            raise ValueError(f"cannot skip a negative number of samples: {samples}")
        self._skip_once = samples

    def __iter__(self):
        indices = [SampleIndex(i, self.seed, self.epoch) for i in super().__iter__()]
        skip, self._skip_once = self._skip_once, 0
        return iter(indices[skip:])


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """``EpochBasedTrainLoop`` that continues a half-done epoch at its next batch.

    ``pending_rng_state`` is set by ``ResumeStateHook`` when a checkpoint is resumed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending_rng_state: dict[str, Any] | None = None

    def batches_done_in_epoch(self) -> int:
        return self._iter - self._epoch * len(self.dataloader)

    def run(self) -> torch.nn.Module:
        """mmengine's loop (0.10), first finishing a validation that a stop abandoned."""
        self.runner.call_hook("before_train")
        self._validate_what_is_owed()
        while self._epoch < self._max_epochs and not self.stop_training:
            self.run_epoch()
            self._decide_current_val_interval()
            if (
                self.runner.val_loop is not None
                and self._epoch >= self.val_begin
                and (self._epoch % self.val_interval == 0 or self._epoch == self._max_epochs)
            ):
                self.runner.val_loop.run()
        self.runner.call_hook("after_train")
        return self.runner.model

    def _validate_what_is_owed(self) -> None:
        """A run stopped while validating resumes at the checkpoint saved before that
        validation; without it, the resumed run would never validate that epoch, and its best
        checkpoint, best score and early-stopping count would differ from the uninterrupted
        run's (``StopHook`` names the epoch in the run folder)."""
        owed = Path(self.runner.work_dir) / VALIDATION_OWED
        if not owed.is_file():
            return
        try:
            epoch = int(owed.read_text().strip())
        except (OSError, ValueError):
            epoch = -1
        if epoch == self._epoch and self.batches_done_in_epoch() == 0 and self.runner.val_loop:
            self.runner.val_loop.run()
        owed.unlink(missing_ok=True)

    def run_epoch(self) -> None:
        self.runner.call_hook("before_train_epoch")
        self.runner.model.train()
        done = self.batches_done_in_epoch()
        if done < 0 or done > len(self.dataloader):
            raise RuntimeError(
                f"cannot resume at iteration {self._iter} of epoch {self._epoch + 1}: the epoch "
                f"has {len(self.dataloader)} batches (did the dataset or batch size change?)"
            )
        if done:
            sampler = self.dataloader.sampler
            if not isinstance(sampler, SkippableSampler):
                raise RuntimeError(
                    "a mid-epoch resume needs the SkippableSampler in train_dataloader"
                )
            sampler.skip_once(done * self.dataloader.batch_size)
        rng, self.pending_rng_state = self.pending_rng_state, None
        if rng is not None and not done:
            set_rng_state(rng)
        iterator = iter(self.dataloader)
        if rng is not None and done:
            set_rng_state(rng)
        for idx, data_batch in enumerate(iterator, start=done):
            self.run_iter(idx, data_batch)
        self.runner.call_hook("after_train_epoch")
        self._epoch += 1
