"""The speed test of an exported run: PyTorch (mmdet) and ONNX Runtime side by side, batch 1 and 8.

Each runtime does the whole job on the same images: pre-processing (mmdet's test pipeline; the
export's resize and padding), the network, decoding and NMS. Timings alternate between the
runtimes, after a warm-up, and report the median: a ratio measured in one run is what this machine
can say, absolute times are this machine's only. Used after a finished run that exports (the run's
``evaluation/speed.json`` and report) and by ``bench/export.py``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def torch_runner(model: torch.nn.Module) -> Callable[[list[np.ndarray]], Any]:
    """mmdet's own inference on a batch of BGR images: the test pipeline, one batch through the
    data preprocessor, the model and its post-processing (``inference_detector`` loops over images
    one at a time; this is its batched form)."""
    from mmcv.transforms import Compose
    from mmdet.utils import get_test_pipeline_cfg
    from mmengine.dataset import pseudo_collate

    steps = get_test_pipeline_cfg(model.cfg)
    steps[0] = dict(steps[0], type="mmdet.LoadImageFromNDArray")
    steps = [s for s in steps if "LoadAnnotations" not in str(s.get("type"))]
    pipeline = Compose(steps)

    def run(images: list[np.ndarray]) -> Any:
        samples = [pipeline(dict(img=image, img_id=i)) for i, image in enumerate(images)]
        batch = pseudo_collate(samples)
        with torch.no_grad():
            return model.test_step(batch)

    return run


def measure(
    runners: dict[str, Callable[[list[np.ndarray]], Any]],
    images: list[np.ndarray],
    batch_sizes: tuple[int, ...] = (1, 8),
    repeats: int = 5,
) -> list[dict[str, Any]]:
    """Median milliseconds per batch and images per second of each runner at each batch size
    (the images cycled to fill a batch); runners alternate so that both see the same machine."""
    rows = []
    for size in batch_sizes:
        batch = [images[i % len(images)] for i in range(size)]
        times: dict[str, list[float]] = {name: [] for name in runners}
        for run in runners.values():
            run(batch)  # warm-up: first-call allocations, lazy inits
        for _ in range(repeats):
            for name, run in runners.items():
                _wait_for_gpu()
                start = time.perf_counter()
                run(batch)
                _wait_for_gpu()
                times[name].append(time.perf_counter() - start)
        for name, seconds in times.items():
            median = statistics.median(seconds)
            rows.append({"runtime": name, "batch": size, "ms_per_batch": round(median * 1000, 2),
                         "images_per_s": round(size / median, 2), "repeats": repeats})  # fmt: skip
    return rows


def _wait_for_gpu() -> None:
    """Wait for the work queued on the current GPU: CUDA calls return once the work is queued,
    so without this the timer reads the launch (a TensorRT engine, a model on a GPU), and the
    next call pays for this one. Nothing where CUDA was never started (no context is made)."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def describe(rows: list[dict[str, Any]]) -> list[str]:
    """One line per batch size: each runtime's figures, and ONNX Runtime's speed-up over PyTorch."""
    lines = []
    for size in sorted({r["batch"] for r in rows}):
        at = {r["runtime"]: r for r in rows if r["batch"] == size}
        text = ", ".join(f"{n} {r['ms_per_batch']:.1f} ms ({r['images_per_s']:.1f} img/s)"
                         for n, r in at.items())  # fmt: skip
        if "pytorch" in at and "onnxruntime" in at:
            ratio = at["pytorch"]["ms_per_batch"] / at["onnxruntime"]["ms_per_batch"]
            text += f"; onnxruntime/pytorch speed {ratio:.2f}x"
        lines.append(f"batch {size}: {text}")
    return lines


def benchmark_speedtest(
    model: torch.nn.Module,
    images: list[np.ndarray],
    device: str,
    hardware: str,
    batch_sizes: tuple[int, ...] = (1, 8, 16),
    iterations: int = 10,
    warmup: int = 3,
) -> dict[str, Any]:
    """The platform's Model Benchmark speed test of ``model`` (mmdet's inference, batched), in the
    form the SDK's benchmark writes (``speedtest/speedtest.json``: what its report's "Inference
    Speed" section reads): per batch size the mean and deviation of the milliseconds per batch,
    over ``iterations`` after ``warmup`` (the SDK's own test runs 100 through a served model;
    here the model times itself, whole: pre-processing, network, post-processing)."""
    run = torch_runner(model)
    info = {"device": device, "runtime": "PyTorch", "hardware": hardware}
    tests = []
    for size in batch_sizes:
        batch = [images[i % len(images)] for i in range(size)]
        for _ in range(warmup):
            run(batch)
        times = []
        for _ in range(iterations):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            run(batch)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append((time.perf_counter() - start) * 1000)
        tests.append({"benchmark": {"total": statistics.fmean(times)},
                      "benchmark_std": {"total": statistics.pstdev(times)},
                      "batch_size": size, "num_iterations": iterations, **info})  # fmt: skip
    return {"model_info": info, "speedtest": tests}
