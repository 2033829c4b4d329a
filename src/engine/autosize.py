"""Sizing a run for the machine it trains on: the batch that fills a GPU, the loader's workers.

When the user has not set them (``TrainParams.train_batch_size`` / ``num_workers`` None, recorded
in ``sly_metadata.auto_size`` by the composition), the session sizes the run on its device before
the Runner is built, writes the choices into the config (so ``config.py`` says what trained and a
resume keeps them) and reports them:

- **batch size, on CUDA**: real training steps (forward, backward, optimizer step; AMP as the run
  has it) of the run's own model on its worst batch — the tallest and the widest images the train
  pipeline makes (and the one with the most objects) in turn, which the data preprocessor pads to
  the largest height x the largest width, as a real batch of landscape and portrait photos is
  padded — at batch 1, 2, 4, ... until a step runs out of memory
  or passes ``MEMORY_FRACTION`` of the memory that was free, then a bisection between the last
  size that fit and the first that did not (the way Ultralytics' ``batch=-1`` sizes YOLO). The
  fraction leaves room for what the probe cannot see: other images' shapes, the validation, the
  allocator's fragmentation. The free memory is read with the cache emptied (a previous run's
  freed blocks stay reserved by the process) and, with several GPUs, on the fullest of them.
  Capped (:func:`batch_cap`) so an epoch has ``MIN_STEPS_PER_EPOCH`` steps, by the zoo config's
  per-GPU batch and by ``MAX_BATCH``; the LR is then scaled linearly to the chosen batch
  (``src.config.schedule.scale_lr_to_batch``).
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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from src.config.compose_data import train_dataset_cfg, val_loader_workers
from src.config.metadata import RunMetadata
from src.config.params import DEFAULT_BATCH_SIZE, DEFAULT_WORKERS
from src.config.schedule import scale_lr_to_batch
from src.engine.cpus import usable_cpus

logger = logging.getLogger(__name__)

MEMORY_FRACTION = 0.8  # of the memory free before sizing
MAX_BATCH = 256
# optimizer steps an epoch at least: fewer, and a small project trains a handful of steps a run
MIN_STEPS_PER_EPOCH = 16
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


def batch_cap(images: int, processes: int, zoo_batch: int | None) -> int:
    """The largest batch the search may choose: one that leaves ``MIN_STEPS_PER_EPOCH`` optimizer
    steps an epoch on each GPU's share of the images, and no larger than the zoo config's own
    per-GPU batch (what its recipe trained with; larger batches need more than a linear LR
    rule), at most ``MAX_BATCH``; at least 1."""
    per_gpu = images // max(1, processes)
    cap = min(MAX_BATCH, per_gpu // MIN_STEPS_PER_EPOCH, zoo_batch or MAX_BATCH)
    return max(1, cap)


def zoo_batch_size(cfg: Any) -> int | None:
    """The per-GPU train batch of the zoo config the run was composed from (None: a custom
    config, or one that does not say)."""
    from src.config import zoo
    from src.config.compose_model import load_base_config

    metadata = RunMetadata.of(cfg)
    try:
        base = load_base_config(zoo.get_model(metadata.model_name, metadata.task_type))
        return int(base.train_dataloader.batch_size)
    except Exception:  # not a zoo model, or its config has no train loader
        return None


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "CUBLAS_STATUS_ALLOC_FAILED" in text
    )


class CudaMemory:
    """The card's memory as the search reads it: the reserved peak (what the allocator took,
    fragmentation included) above what this process held when the sizing began.

    ``free_bytes`` first empties the cache (a previous run's or sizing's freed blocks stay
    reserved by this process, and the card does not count them as free), and with several GPUs
    answers for the fullest (every rank trains the same batch); the other cards are read through
    NVML, which opens no CUDA context on them.
    """

    def __init__(self, device: str, others: tuple[int, ...] = ()) -> None:
        self.index = int(device.split(":", 1)[1]) if ":" in device else 0
        self.others = tuple(i for i in others if i != self.index)
        self.baseline = 0

    def free_bytes(self) -> int:
        import torch

        self.release()
        self.baseline = int(torch.cuda.memory_reserved(self.index))
        free, total = (int(v) for v in torch.cuda.mem_get_info(self.index))
        if not self.others:
            return free
        from src.engine.devices import gpu_memory

        for index, (other_free, other_total) in gpu_memory(list(self.others)).items():
            if other_free is None:  # no NVML: as much in use there as here
                other_free = other_total - (total - free)
                logger.info("cuda:%d's free memory unknown (no NVML): taken as %.1f GiB",
                            index, other_free / 2**30)  # fmt: skip
            free = min(free, other_free)
        return free

    def reset_peak(self) -> None:
        import torch

        torch.cuda.synchronize(self.index)
        torch.cuda.reset_peak_memory_stats(self.index)

    def peak_bytes(self) -> int:
        import torch

        torch.cuda.synchronize(self.index)
        return int(torch.cuda.max_memory_reserved(self.index)) - self.baseline

    def release(self) -> None:
        import torch

        gc.collect()
        torch.cuda.empty_cache()


class TrainStepProbe:
    """Training steps of the run's model on its worst batch: the largest padded image alone at
    batch 1; above, the tallest and the widest images (and the one with the most objects) in
    turn, which the data preprocessor pads to the largest height x the largest width, as a
    batch of landscape and portrait photos is padded.

    Args:
        cfg: the run's composed config (its model, optimizer wrapper and train dataset).
        device: where to build the model ("cuda:N"; "cpu" in tests).
        memory: reads and resets the peak (``CudaMemory``, or a stand-in).
        dataset: the train dataset (default: built from ``cfg``).
    """

    def __init__(self, cfg: Any, device: str, memory: Any, dataset: Any = None) -> None:
        from mmdet.registry import DATASETS, MODELS
        from mmengine.registry import init_default_scope

        import src.data.mmdet_dataset  # noqa: F401  (registers SuperviselyDataset)

        init_default_scope(cfg.get("default_scope", "mmdet"))
        self.memory = memory
        if dataset is None:
            dataset_cfg = {**train_dataset_cfg(cfg), "coco_gt_file": None,
                           "serialize_data": False}  # fmt: skip
            dataset = DATASETS.build(dataset_cfg)
        self.largest, self.mixed = worst_case_samples(dataset)
        self.model = MODELS.build(copy.deepcopy(cfg.model)).to(device)
        self.model.train()
        self._wrapper_cfg = copy.deepcopy(cfg.optim_wrapper)
        self.optim_wrapper = self._build_wrapper()
        self.images = len(dataset)

    def _build_wrapper(self) -> Any:
        from mmengine.optim import build_optim_wrapper

        return build_optim_wrapper(self.model, copy.deepcopy(self._wrapper_cfg))

    def batch(self, size: int) -> list[dict]:
        """The trial's samples: see the class docstring."""
        if size == 1:
            return [copy.deepcopy(self.largest)]
        return [copy.deepcopy(self.mixed[i % len(self.mixed)]) for i in range(size)]

    def measure(self, batch: int) -> int | None:
        """The peak memory of one training step at ``batch``; None when it ran out of memory."""
        from mmengine.dataset import pseudo_collate

        self.memory.reset_peak()
        out_of_memory = False
        try:
            self.model.train_step(pseudo_collate(self.batch(batch)), self.optim_wrapper)
            peak = self.memory.peak_bytes()
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            peak, out_of_memory = None, True
        finally:
            self.optim_wrapper.zero_grad()
            if out_of_memory:  # a fresh wrapper: see _forget_the_failed_step
                self._forget_the_failed_step()
            self.memory.release()
        logger.debug("batch %d: peak %s", batch, peak)
        return peak

    def _forget_the_failed_step(self) -> None:
        """A new optimizer wrapper after an out-of-memory error: one raised after AMP's
        ``unscale_`` (gradient clipping) leaves the GradScaler's stage UNSCALED until an
        ``update()`` that never came, and the next trial's ``unscale_`` would raise "unscale_()
        has already been called" instead of training. The sizing needs no optimizer state."""
        del self.optim_wrapper
        gc.collect()
        self.optim_wrapper = self._build_wrapper()

    def close(self) -> None:
        del self.model, self.optim_wrapper
        self.memory.release()


def worst_case_samples(dataset: Any, draws: int = 3) -> tuple[dict, list[dict]]:
    """The pipeline's outputs the trials are made of, from the extreme images and the one with
    the most objects, each drawn a few times (random resizes): the largest (then with the most
    objects), and the tallest, the widest and the one with the most objects (distinct)."""
    from src.engine.shape_check import extreme_images

    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    candidates = [*extreme_images(infos), max(infos, key=lambda i: len(i.get("instances", [])))]
    samples = []
    for info in candidates:
        for _ in range(draws):
            sample = dataset.pipeline(copy.deepcopy(info))
            if sample is not None:
                samples.append(sample)
    if not samples:
        raise ValueError("the train pipeline dropped every image it was given: nothing to size")

    def shape(sample: dict) -> tuple[int, int, int]:
        height, width = sample["inputs"].shape[-2:]
        return int(height), int(width), len(sample["data_samples"].gt_instances)

    largest = max(samples, key=lambda x: (shape(x)[0] * shape(x)[1], shape(x)[2]))
    mixed: list[dict] = []
    for key in (lambda x: shape(x), lambda x: (shape(x)[1], shape(x)[0], shape(x)[2]),
                lambda x: (shape(x)[2], shape(x)[0] * shape(x)[1])):  # fmt: skip
        chosen = max(samples, key=key)
        if all(chosen is not other for other in mixed):
            mixed.append(chosen)
    return largest, mixed


@dataclass
class SizedRun:
    """What :func:`size_the_run` chose, with the lines that say so."""

    batch_size: int | None = None
    num_workers: int | None = None
    notes: list[str] = field(default_factory=list)
    chosen: list[str] = field(default_factory=list)  # the notes that name a value chosen

    def choose(self, note: str) -> None:
        """A note naming a value chosen for a setting left to auto."""
        self.notes.append(note)
        self.chosen.append(note)


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
        cores = usable_cpus()
        sized.num_workers = choose_workers(cores, processes, cuda)
        for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
            loader = cfg.get(key)
            if loader is not None:
                train = key == "train_dataloader"
                loader.num_workers = (
                    sized.num_workers if train else val_loader_workers(sized.num_workers)
                )
                loader.persistent_workers = loader.num_workers > 0
        params["num_workers"] = sized.num_workers
        where = f"{cores} usable cores, {processes} process(es)" if cuda else "the CPU"
        sized.choose(f"data-loader workers: {sized.num_workers} (auto, for {where})")
    if "train_batch_size" in auto:
        sized.batch_size = _size_the_batch(cfg, device, processes, memory, probe_factory, sized)
        params["train_batch_size"] = sized.batch_size
        lr_note = cuda and scale_lr_to_batch(cfg, sized.batch_size, processes)
        if lr_note:
            params["lr"] = float(cfg.optim_wrapper.optimizer.lr)
            sized.choose(lr_note)
    # what was chosen is in train_params and the loaders
    metadata.updated(train_params=params, auto_size=()).write(cfg)
    return sized


def _size_the_batch(
    cfg: Any,
    device: str,
    processes: int,
    memory: Any,
    probe_factory: Callable[..., Any],
    sized: SizedRun,
) -> int:
    """The train batch: searched on CUDA (on the fullest of the run's GPUs), the default on the
    CPU; written into the train loader, with the notes that say how it came about."""
    if device.startswith("cuda"):
        gpus = tuple(int(g) for g in RunMetadata.of(cfg).train_params.get("gpus") or ())
        memory = memory or CudaMemory(device, others=gpus)
        search = _search_on_cuda(cfg, device, processes, memory, probe_factory)
        batch = search.batch_size
        sized.choose(f"{search.describe()} on {device} (auto)")
        if search.limited_by == "batch 1 does not fit":
            sized.notes.append(
                "even batch 1 passes the memory budget: lower the input size or free the GPU"
            )
    else:
        batch = DEFAULT_BATCH_SIZE
        sized.choose(f"batch size {batch} (auto, on the CPU)")
    cfg.train_dataloader.batch_size = batch
    return batch


def _search_on_cuda(
    cfg: Any, device: str, processes: int, memory: Any, probe_factory: Callable[..., Any]
) -> BatchSearch:
    budget = int(memory.free_bytes() * MEMORY_FRACTION)
    probe = probe_factory(cfg, device, memory)
    try:
        cap = batch_cap(probe.images, processes, zoo_batch_size(cfg))
        return search_batch_size(probe.measure, budget, cap)
    finally:
        probe.close()
