"""Sizing a run for the machine it trains on: the batch that fills a GPU, the loader's workers.

When the user has not set them (``TrainParams.train_batch_size`` / ``num_workers`` None, recorded
in ``sly_metadata.auto_size`` by the composition), the session sizes the run on its device before
the Runner is built, writes the choices into the config (so ``config.py`` says what trained and a
resume keeps them) and reports them:

- **batch size, on CUDA**: real training steps (forward, backward, optimizer step; AMP as the run
  has it) of the run's own model on its worst-case sample — the train pipeline's largest padded
  image with the most objects, repeated — at batch 1, 2, 4, ... until a step runs out of memory
  or passes ``MEMORY_FRACTION`` of the memory that was free, then a bisection between the last
  size that fit and the first that did not (the way Ultralytics' ``batch=-1`` sizes YOLO). The
  fraction leaves room for what the probe cannot see: other images' shapes, the validation, the
  allocator's fragmentation. Capped by the training images per GPU and by ``MAX_BATCH``.
  On the CPU there is no memory to fill: ``DEFAULT_BATCH_SIZE``.
- **workers**: on CUDA, the cores per GPU process less one for the process itself, 2 to 8
  (more rarely feed a GPU faster and each costs memory); on the CPU, ``DEFAULT_WORKERS`` (the
  loader competes with training for the same cores).

The search is :func:`search_batch_size` over a ``measure(batch) -> peak bytes | None`` function
(None: out of memory), so its steps are tested without a GPU; :class:`TrainStepProbe` is the real
measure, and :class:`CudaMemory` the one place that reads the card's memory.
"""

from __future__ import annotations

import copy
import gc
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from src.config.compose import train_dataset_cfg
from src.config.metadata import RunMetadata
from src.config.params import DEFAULT_BATCH_SIZE, DEFAULT_WORKERS

logger = logging.getLogger(__name__)

MEMORY_FRACTION = 0.8  # of the memory free before sizing
MAX_BATCH = 256
MAX_GPU_WORKERS = 8


@dataclass
class BatchSearch:
    """The search's outcome: the chosen size and every trial (batch, peak bytes or None)."""

    batch_size: int
    budget_bytes: int
    trials: list[tuple[int, int | None]] = field(default_factory=list)
    limited_by: str = "memory"  # or "cap" (images per GPU, MAX_BATCH), "batch 1 does not fit"

    def describe(self) -> str:
        tried = ", ".join(
            f"{b}: {'OOM' if peak is None else f'{peak / 2**30:.1f} GiB'}"
            for b, peak in self.trials
        )
        return (
            f"batch size {self.batch_size} (limited by {self.limited_by}; budget "
            f"{self.budget_bytes / 2**30:.1f} GiB; tried {tried})"
        )


def search_batch_size(
    measure: Callable[[int], int | None], budget_bytes: int, cap: int, resolution: float = 0.1
) -> BatchSearch:
    """The largest batch whose training step peaks within ``budget_bytes``, at most ``cap``.

    Doubling from 1 until a step fails (out of memory, or over the budget) or the cap is reached,
    then bisection between the last size that fit and the first that failed, to within
    ``resolution`` of the size that fit (a few more steps for a few percent more images per
    step are not worth their seconds)."""
    if cap < 1:
        raise ValueError(f"cap must be at least 1, got {cap}")
    search = BatchSearch(batch_size=1, budget_bytes=budget_bytes)

    def fits(batch: int) -> bool:
        peak = measure(batch)
        search.trials.append((batch, peak))
        return peak is not None and peak <= budget_bytes

    good, bad = 0, None
    batch = 1
    while True:
        if fits(batch):
            good = batch
            if batch >= cap:
                search.limited_by = "cap"
                break
            batch = min(cap, batch * 2)
        else:
            bad = batch
            break
    if good == 0:
        search.limited_by = "batch 1 does not fit"
        return search
    while bad is not None and bad - good > max(1, math.floor(good * resolution)):
        middle = (good + bad) // 2
        if fits(middle):
            good = middle
        else:
            bad = middle
    search.batch_size = good
    return search


def choose_workers(cpu_count: int | None, processes: int, cuda: bool) -> int:
    """Data-loader workers per process: see the module's docstring."""
    if not cuda:
        return DEFAULT_WORKERS
    per_process = max(1, (cpu_count or 1) // max(1, processes))
    return max(2, min(MAX_GPU_WORKERS, per_process - 1))


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "CUBLAS_STATUS_ALLOC_FAILED" in text
    )


class CudaMemory:
    """The card's memory as the search reads it (the reserved peak: what the allocator took,
    fragmentation included)."""

    def __init__(self, device: str) -> None:
        self.index = int(device.split(":", 1)[1]) if ":" in device else 0

    def free_bytes(self) -> int:
        import torch

        return int(torch.cuda.mem_get_info(self.index)[0])

    def reset_peak(self) -> None:
        import torch

        torch.cuda.synchronize(self.index)
        torch.cuda.reset_peak_memory_stats(self.index)

    def peak_bytes(self) -> int:
        import torch

        torch.cuda.synchronize(self.index)
        return int(torch.cuda.max_memory_reserved(self.index))

    def release(self) -> None:
        import torch

        gc.collect()
        torch.cuda.empty_cache()


class TrainStepProbe:
    """Training steps of the run's model on copies of one worst-case sample.

    Args:
        cfg: the run's composed config (its model, optimizer wrapper and train dataset).
        device: where to build the model ("cuda:N"; "cpu" in tests).
        memory: reads and resets the peak (``CudaMemory``, or a stand-in).
        dataset: the train dataset (default: built from ``cfg``).
    """

    def __init__(self, cfg: Any, device: str, memory: Any, dataset: Any = None) -> None:
        from mmdet.registry import DATASETS, MODELS
        from mmengine.optim import build_optim_wrapper
        from mmengine.registry import init_default_scope

        import src.data.mmdet_dataset  # noqa: F401  (registers SuperviselyDataset)

        init_default_scope(cfg.get("default_scope", "mmdet"))
        self.memory = memory
        if dataset is None:
            dataset_cfg = {**train_dataset_cfg(cfg), "coco_gt_file": None,
                           "serialize_data": False}  # fmt: skip
            dataset = DATASETS.build(dataset_cfg)
        self.sample = worst_case_sample(dataset)
        self.model = MODELS.build(copy.deepcopy(cfg.model)).to(device)
        self.model.train()
        self.optim_wrapper = build_optim_wrapper(self.model, copy.deepcopy(cfg.optim_wrapper))
        self.images = len(dataset)

    def measure(self, batch: int) -> int | None:
        """The peak memory of one training step at ``batch``; None when it ran out of memory."""
        from mmengine.dataset import pseudo_collate

        self.memory.reset_peak()
        try:
            data = pseudo_collate([copy.deepcopy(self.sample) for _ in range(batch)])
            self.model.train_step(data, self.optim_wrapper)
            peak = self.memory.peak_bytes()
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            peak = None
        finally:
            self.optim_wrapper.zero_grad()
            self.memory.release()
        logger.debug("batch %d: peak %s", batch, peak)
        return peak

    def close(self) -> None:
        del self.model, self.optim_wrapper
        self.memory.release()


def worst_case_sample(dataset: Any, draws: int = 3) -> dict:
    """The pipeline's output with the largest image (then the most objects) among the extreme
    images and the one with the most objects, each drawn a few times (random resizes)."""
    from src.engine.shape_check import extreme_images

    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    candidates = [*extreme_images(infos), max(infos, key=lambda i: len(i.get("instances", [])))]
    best, best_key = None, (-1, -1)
    for info in candidates:
        for _ in range(draws):
            sample = dataset.pipeline(copy.deepcopy(info))
            if sample is None:
                continue
            height, width = sample["inputs"].shape[-2:]
            key = (int(height) * int(width), len(sample["data_samples"].gt_instances))
            if key > best_key:
                best, best_key = sample, key
    if best is None:
        raise ValueError("the train pipeline dropped every image it was given: nothing to size")
    return best


@dataclass
class SizedRun:
    """What :func:`size_the_run` chose, with the lines that say so."""

    batch_size: int | None = None
    num_workers: int | None = None
    notes: list[str] = field(default_factory=list)


def size_the_run(
    cfg: Any,
    device: str,
    processes: int = 1,
    memory: Any = None,
    probe_factory: Callable[..., TrainStepProbe] = TrainStepProbe,
) -> SizedRun:
    """Choose what ``cfg``'s ``sly_metadata.auto_size`` leaves to the app, write it into ``cfg``
    (both loaders' workers, the train loader's batch, ``train_params``), and clear the mark."""
    metadata = RunMetadata.of(cfg)
    auto = metadata.auto_size
    sized = SizedRun()
    if not auto:
        return sized
    cuda = device.startswith("cuda")
    params = dict(metadata.train_params)
    if "num_workers" in auto:
        sized.num_workers = choose_workers(os.cpu_count(), processes, cuda)
        for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
            loader = cfg.get(key)
            if loader is not None:
                loader.num_workers = sized.num_workers
                loader.persistent_workers = sized.num_workers > 0
        params["num_workers"] = sized.num_workers
        where = f"{os.cpu_count()} cores, {processes} process(es)" if cuda else "the CPU"
        sized.notes.append(f"data-loader workers: {sized.num_workers} (auto, for {where})")
    if "train_batch_size" in auto:
        if cuda:
            search = _search_on_cuda(cfg, device, processes, memory or CudaMemory(device),
                                     probe_factory)  # fmt: skip
            sized.batch_size = search.batch_size
            sized.notes.append(f"{search.describe()} on {device} (auto)")
            if search.limited_by == "batch 1 does not fit":
                sized.notes.append(
                    "even batch 1 passes the memory budget: lower the input size or free the GPU"
                )
        else:
            sized.batch_size = DEFAULT_BATCH_SIZE
            sized.notes.append(f"batch size {sized.batch_size} (auto, on the CPU)")
        cfg.train_dataloader.batch_size = sized.batch_size
        params["train_batch_size"] = sized.batch_size
    # what was chosen is in train_params and the loaders
    metadata.updated(train_params=params, auto_size=()).write(cfg)
    return sized


def _search_on_cuda(
    cfg: Any, device: str, processes: int, memory: Any, probe_factory: Callable[..., Any]
) -> BatchSearch:
    budget = int(memory.free_bytes() * MEMORY_FRACTION)
    probe = probe_factory(cfg, device, memory)
    try:
        cap = max(1, min(MAX_BATCH, probe.images // max(1, processes)))
        return search_batch_size(probe.measure, budget, cap)
    finally:
        probe.close()
