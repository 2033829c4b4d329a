"""The devices a run can train on here: the GPUs with their free and total memory, else the CPU.

The UI lists them (the freest GPU preselected), the CLI checks ``--device`` against them, and a
session pins its worker thread to the chosen GPU (``torch.cuda.set_device``: mmengine then builds
the model on the current device).

Listing opens no CUDA context: ``torch.cuda.mem_get_info`` would create one on every card (about
0.5 GB each for the app's lifetime, and an error on a card in exclusive-process mode that another
process holds). Free memory comes from NVML (``pynvml``, the ``nvidia-ml-py`` package) where it
is importable; without it the names and total memory come from
``torch.cuda.get_device_properties`` (no context) and the free memory is unknown.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

# the CUDA caching allocator's setting the entry points put in PYTORCH_CUDA_ALLOC_CONF when the
# user has none: segments that grow in place, so batches of varying shapes do not fragment the
# cache into blocks no later batch fits (src/cli/, src/web/main.py)
CUDA_ALLOC_CONF = "expandable_segments:True"


@dataclass(frozen=True)
class Device:
    name: str  # "cuda:N" or "cpu"
    free_gib: float | None = None
    total_gib: float | None = None

    @property
    def label(self) -> str:
        if self.total_gib is None:
            return self.name
        if self.free_gib is None:
            return f"{self.name} ({self.total_gib:.1f} GiB)"
        return f"{self.name} ({self.free_gib:.1f} of {self.total_gib:.1f} GiB free)"


@contextmanager
def _nvml() -> Iterator[Any]:
    """The ``pynvml`` module, initialised (None where it is missing or NVML does not start)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # not installed, no driver library: the torch fallback
        logger.debug("NVML unavailable: %s", exc)
        yield None
        return
    try:
        yield pynvml
    finally:
        pynvml.nvmlShutdown()


def _nvml_handle(nvml: Any, index: int) -> Any:
    """NVML's handle of CUDA device ``index``: by its UUID (NVML numbers the cards in PCI order
    and ignores CUDA_VISIBLE_DEVICES; CUDA's order may differ), else by the same index."""
    import torch

    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    if uuid is not None:
        try:
            return nvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
        except Exception:
            logger.debug("NVML has no card with UUID %s", uuid)
    return nvml.nvmlDeviceGetHandleByIndex(index)


def gpu_memory(indices: list[int]) -> dict[int, tuple[int | None, int]]:
    """(free bytes or None, total bytes) of the CUDA devices ``indices``, without a CUDA context:
    free from NVML, None where NVML is missing."""
    import torch

    found: dict[int, tuple[int | None, int]] = {}
    with _nvml() as nvml:
        for index in indices:
            total = int(torch.cuda.get_device_properties(index).total_memory)
            free = None
            if nvml is not None:
                try:
                    free = int(nvml.nvmlDeviceGetMemoryInfo(_nvml_handle(nvml, index)).free)
                except Exception as exc:
                    logger.debug("NVML cannot read cuda:%d: %s", index, exc)
            found[index] = (free, total)
    return found


def list_devices() -> list[Device]:
    """The GPUs, the freest first (by index where the free memory is unknown); the CPU alone
    where there is none."""
    import torch

    if not torch.cuda.is_available():
        return [Device("cpu")]
    memory = gpu_memory(list(range(torch.cuda.device_count())))
    gpus = [
        Device(f"cuda:{i}", None if free is None else free / 2**30, total / 2**30)
        for i, (free, total) in memory.items()
    ]
    return sorted(gpus, key=lambda d: -(d.free_gib or 0))


def device_problem(device: str) -> str | None:
    """Why ``device`` cannot be used here (None: it can)."""
    if device == "cpu":
        return None
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not device.startswith("cuda:") or not device[5:].isdigit():
        return f"device {device!r} is unknown: use cpu or cuda:N"
    if int(device[5:]) >= count:
        have = ", ".join(d.label for d in list_devices())
        return f"device {device} does not exist here; available: {have}"
    return None


def release_cuda_cache() -> None:
    """Give the CUDA cache's free blocks back to the card (after a run, before a sizing): a
    process keeps what it freed reserved, and the card's free memory does not count it."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def use_device(device: str) -> None:
    """Make ``device`` the calling thread's current CUDA device (mmengine places the model on
    the current device); nothing for the CPU."""
    if device.startswith("cuda:"):
        import torch

        torch.cuda.set_device(int(device[5:]))
