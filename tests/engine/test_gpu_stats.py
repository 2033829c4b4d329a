"""The GPU's use during a run (src/engine/gpu_stats.py, src/hooks/gpu_memory.py), with the
allocator and NVML answering as a GPU machine would: the true peak survives mmengine's resets,
utilisation is sampled off the training loop, and both reach the sink with each iteration."""

from __future__ import annotations

import threading

import pytest

from src.engine.gpu_stats import GpuStats
from src.hooks.gpu_memory import GpuMemoryHook
from src.hooks.metrics import MetricsHook
from src.ui.training import gpu_text
from tests.helpers import Collect


class Allocator:
    """torch.cuda's peak statistics: a peak since the last reset, which mmengine's log
    processor resets when it logs."""

    def __init__(self) -> None:
        self.since_reset = 0

    def step(self, peak_bytes: int) -> None:
        self.since_reset = max(self.since_reset, peak_bytes)

    def reset(self) -> None:
        self.since_reset = 0

    def peak(self, index: int) -> int:
        return self.since_reset


class _Runner:
    def __init__(self) -> None:
        self.epoch, self.iter, self.max_epochs, self.max_iters = 0, 0, 1, 3
        self.train_dataloader = [0, 1, 2]
        self.optim_wrapper = None


class Readings:
    """NVML as the sampler sees it: the given (utilisation %, used MiB) readings in turn, then
    nothing more to read (the sampler ends). ``done`` is set once all were read; ``threads``
    names the threads that read."""

    def __init__(self, readings: list[tuple[float, float]]) -> None:
        self.left = list(readings)
        self.done = threading.Event()
        self.threads: set[str] = set()

    def __call__(self, index: int) -> tuple[float, float] | None:
        self.threads.add(threading.current_thread().name)
        if self.left:
            return self.left.pop(0)
        self.done.set()
        return None


def test_the_true_peak_survives_the_loggers_resets_and_reaches_the_sink():
    allocator = Allocator()
    # three samples: utilisation 20, 80, 87 % with 10, 20 and 30000 MiB used
    readings = Readings([(20.0, 10_240.0), (80.0, 20_480.0), (87.0, 30_000.0)])
    stats = GpuStats("cuda:0", every_s=0.01, query=readings, peak=allocator.peak)
    hook = GpuMemoryHook(stats)
    sink = Collect()
    metrics = MetricsHook(sink, gpu=stats.snapshot)
    runner = _Runner()
    hook.before_train(runner)  # starts the sampler
    assert readings.done.wait(60), "the sampler never read the GPU's utilisation"
    for i, peak in enumerate([5 * 2**30, 9 * 2**30, 6 * 2**30]):
        runner.iter = i
        allocator.step(peak)
        hook.after_train_iter(runner, i)  # NORMAL priority: before the LoggerHook
        allocator.reset()  # the LoggerHook's log processor
        metrics.after_train_iter(runner, i, outputs={"loss": 1.0})
    hook.after_run(runner)
    assert readings.threads == {"gpu-stats"}  # read off the training loop's thread
    gpu = sink.train[-1].gpu
    assert gpu["peak_gib"] == 9.0  # not 6, the peak since the last reset
    # the latest sample, its MiB in GiB, and the mean utilisation over the run
    assert (gpu["util"], gpu["used_gib"], gpu["mean_util"]) == (87.0, 29.297, 62.3)
    assert "GPU memory peak 9.0 GiB, 87% busy" in gpu_text(gpu)
    assert GpuMemoryHook.priority == "NORMAL"  # mmengine's LoggerHook is BELOW_NORMAL


def test_where_nothing_reads_utilisation_only_the_peak_is_kept():
    readings = Readings([])  # NVML and nvidia-smi answer nothing
    stats = GpuStats("cuda:0", every_s=0.01, query=readings, peak=lambda i: 2**30)
    stats.start()
    stats.note_peak()
    assert readings.done.wait(60), "the sampler never tried to read the GPU's utilisation"
    stats.stop()
    assert stats.snapshot() == {"peak_gib": 1.0}
    assert gpu_text(stats.snapshot()) == "GPU memory peak 1.0 GiB"
    with pytest.raises(ValueError, match="CUDA device"):
        GpuStats("cpu")
