"""Per-sample randomness: what a training sample's augmentations draw depends on (seed, epoch,
sample index) only.

mmdet's transforms draw from the global Python, numpy and torch generators. In data-loader
workers those generators are the worker's, seeded at the worker's start: what a sample gets
then depends on which worker loads it, on how many workers there are and on what that worker
loaded before — none of which a checkpoint can hold, so a resumed run (or a run with another
number of workers) augmented differently. Here the train sampler hands out ``SampleIndex``
values that carry the run's seed and the epoch; the dataset seeds the generators from them
around each sample (``seeded``) and puts the previous states back, so that in the main process
(``num_workers=0``) the model's own draws are not disturbed either.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


class SampleIndex(int):
    """A dataset index that also says which run (``seed``) and ``epoch`` draws it. An int
    everywhere an index is used (batch samplers, ``get_data_info``); kept through pickling to
    data-loader workers."""

    seed: int
    epoch: int
    draw: int  # what the draws are seeded with: the sampler's index (a repeat's own)

    def __new__(cls, index: int, seed: int, epoch: int, draw: int | None = None) -> SampleIndex:
        value = super().__new__(cls, index)
        value.seed = int(seed)
        value.epoch = int(epoch)
        value.draw = int(index if draw is None else draw)
        return value

    def __reduce__(self):
        return (SampleIndex, (int(self), self.seed, self.epoch, self.draw))

    def __repr__(self) -> str:
        return f"SampleIndex({int(self)}, seed={self.seed}, epoch={self.epoch}, draw={self.draw})"


@contextmanager
def seeded(*key: int, restore: bool = True) -> Iterator[None]:
    """Python's, numpy's and torch's (CPU) global generators seeded from ``key`` for the block,
    then restored (``restore=False``: left as they are; a data-loader worker's generators serve
    nothing else, and saving and restoring them is most of this function's ~0.1 ms). CUDA's
    generator is left alone: transforms do not use it, and a worker must not initialise CUDA."""
    if restore:
        saved = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    words = np.random.SeedSequence([int(k) % 2**64 for k in key]).generate_state(2)
    random.seed(int(words[0]) << 32 | int(words[1]))
    np.random.seed(words)
    torch.random.default_generator.manual_seed(int(words[0]) << 32 | int(words[1]))
    try:
        yield
    finally:
        if restore:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.random.set_rng_state(saved[2])
