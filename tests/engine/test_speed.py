"""The speed test times GPU work, not its launch (issue 34, item 9): CUDA runs asynchronously, so a
timer read right after a call measures the queueing. A stand-in clock and ``torch.cuda`` where
a call only queues its work and ``synchronize`` waits for it (advancing the clock)."""

from __future__ import annotations

import numpy as np
import torch

LAUNCH_S, WORK_S = 0.001, 0.1


class _Gpu:
    """A clock, and CUDA's asynchrony: work queued by a call is done (the clock moves) only when
    the host synchronizes."""

    def __init__(self) -> None:
        self.now, self.queued = 0.0, 0.0

    def clock(self) -> float:
        return self.now

    def run(self, batch: list) -> None:
        self.now += LAUNCH_S
        self.queued += WORK_S * len(batch)

    def synchronize(self, device: object = None) -> None:
        self.now += self.queued
        self.queued = 0.0


def test_measure_counts_the_gpu_work_of_each_call(monkeypatch):
    """Before the fix: 1 ms per batch (the launch), whatever the GPU did."""
    import src.engine.speed as speed

    gpu = _Gpu()
    monkeypatch.setattr(speed.time, "perf_counter", gpu.clock)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", gpu.synchronize)
    rows = speed.measure({"gpu": gpu.run}, [np.zeros((4, 4, 3), np.uint8)], batch_sizes=(1, 8))
    assert [(r["batch"], r["ms_per_batch"]) for r in rows] == [(1, 101.0), (8, 801.0)]


def test_measure_on_a_cpu_machine_does_not_touch_cuda(monkeypatch):
    """No CUDA context is made (nor a CPU build's error raised) where nothing started CUDA."""
    import src.engine.speed as speed

    def refuse(device: object = None) -> None:
        raise AssertionError("synchronize called with CUDA not initialized")

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "synchronize", refuse)
    rows = speed.measure({"cpu": lambda batch: None}, [np.zeros((4, 4, 3), np.uint8)],
                         batch_sizes=(1,), repeats=2)  # fmt: skip
    assert rows[0]["repeats"] == 2
