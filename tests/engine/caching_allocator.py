"""A stand-in for a CUDA card's memory as torch's caching allocator shows it, for the sizing tests
on a CPU-only machine (src/engine/autosize.py, src/engine/devices.py).

It behaves like the real one where the sizing's bugs live:

- a training step costs memory by the **padded** batch: the model's data preprocessor pads a batch
  to its largest height x largest width, and the step's activations grow with batch x that area;
- freed blocks stay **reserved** (cached) by the process until ``empty_cache``, and the card's free
  memory (``mem_get_info``) does not count them as free; an allocation that the cache cannot hold
  and the card cannot grow into is a ``torch.cuda.OutOfMemoryError``;
- ``max_memory_reserved`` is the reserved high-water mark since ``reset_peak_memory_stats``;
- ``mem_get_info`` (and anything else that needs one) creates a CUDA context on its card, which
  is recorded; ``get_device_properties`` does not.

NVML is :class:`FakeNvml`, installed as the ``pynvml`` module.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from typing import Any

import torch

GIB = 2**30


@dataclass
class StepCost:
    """What one training step holds: the model's weights (while the probe lives), ``per_image``
    plus ``per_pixel`` x padded area per image (activations, during the step), ``clip`` more while
    the gradients are clipped (AMP's unscaled copies and the norms)."""

    weights: float = 0.5  # GiB
    per_image: float = 0.0  # GiB
    per_pixel: float = 0.0  # GiB per padded pixel
    clip: float = 0.0  # GiB

    def step_bytes(self, batch: int, height: int, width: int) -> int:
        return int(batch * (self.per_image + self.per_pixel * height * width) * GIB)


class CachingCard:
    """Cards of ``totals`` GiB of which other processes use ``others`` GiB; this process's
    allocations live on card 0 (where the sizing runs)."""

    def __init__(self, totals: list[float], others: list[float] | None = None) -> None:
        self.totals = [int(t * GIB) for t in totals]
        self.others = [int(o * GIB) for o in (others or [0.0] * len(totals))]
        self.allocated = self.reserved = self.peak = 0
        self.contexts: set[int] = set()
        self.ooms: list[str] = []  # where each out-of-memory error happened
        self.cost = StepCost()
        self.steps: list[tuple[int, int, int]] = []  # (batch, padded height, padded width)

    # torch.cuda's API
    def mem_get_info(self, device: Any = None) -> tuple[int, int]:
        index = self._index(device)
        self.contexts.add(index)
        mine = self.reserved if index == 0 else 0
        return self.totals[index] - self.others[index] - mine, self.totals[index]

    def memory_reserved(self, device: Any = None) -> int:
        self.contexts.add(self._index(device))
        return self.reserved

    def memory_allocated(self, device: Any = None) -> int:
        self.contexts.add(self._index(device))
        return self.allocated

    def max_memory_reserved(self, device: Any = None) -> int:
        self.contexts.add(self._index(device))
        return self.peak

    def reset_peak_memory_stats(self, device: Any = None) -> None:
        self.contexts.add(self._index(device))
        self.peak = self.reserved

    def empty_cache(self) -> None:
        self.reserved = self.allocated

    def synchronize(self, device: Any = None) -> None:
        self.contexts.add(self._index(device))

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return len(self.totals)

    def get_device_properties(self, device: Any) -> Any:
        index = self._index(device)
        return types.SimpleNamespace(
            name=f"Stand-in GPU {index}", total_memory=self.totals[index], uuid=f"uuid-{index}"
        )

    API = ("mem_get_info", "memory_reserved", "memory_allocated", "max_memory_reserved",
           "reset_peak_memory_stats", "empty_cache", "synchronize",
           "get_device_properties")  # fmt: skip
    LISTING = ("is_available", "device_count")

    def install(self, monkeypatch: Any, listing: bool = False) -> CachingCard:
        """Patch ``torch.cuda``'s memory functions (and with ``listing``, the ones that say which
        cards there are: the model steps of the sizing tests stay on the CPU without them)."""
        for name in self.API + (self.LISTING if listing else ()):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))
        return self

    # the caching allocator
    def allocate(self, nbytes: int, where: str) -> None:
        need = self.allocated + nbytes
        if need > self.reserved:  # the cache cannot hold it: grow into the card
            if need > self.totals[0] - self.others[0]:
                self.ooms.append(where)
                raise torch.cuda.OutOfMemoryError(
                    f"CUDA out of memory. Tried to allocate {nbytes / GIB:.2f} GiB ({where})"
                )
            self.reserved = need
        self.allocated = need
        self.peak = max(self.peak, self.reserved)

    def free(self, nbytes: int) -> None:
        """The tensors die; their blocks stay reserved (cached) until ``empty_cache``."""
        self.allocated -= nbytes

    def step(self, batch: int, height: int, width: int) -> None:
        """One training step's activations, allocated and freed (a run's step, outside a probe)."""
        nbytes = self.cost.step_bytes(batch, height, width)
        self.allocate(nbytes, "forward")
        self.free(nbytes)

    def _index(self, device: Any) -> int:
        if device is None:
            return 0
        if isinstance(device, int):
            return device
        return torch.device(device).index or 0

    # the run's model, as the sizing builds it
    def probe(self, cfg: Any, device: str, memory: Any, **kwargs: Any) -> Any:
        """A real probe on the CPU whose model's steps cost this card's memory."""
        from src.engine.autosize import TrainStepProbe

        probe = TrainStepProbe(cfg, "cpu", memory, **kwargs)
        weights = int(self.cost.weights * GIB)
        self.allocate(weights, "weights")
        model = probe.model
        preprocess, train_step = model.data_preprocessor.forward, model.train_step
        close = probe.close
        held: list[int] = []

        def forward(data: dict, training: bool = False) -> dict:
            out = preprocess(data, training)
            batch, _, height, width = out["inputs"].shape
            self.steps.append((int(batch), int(height), int(width)))
            nbytes = self.cost.step_bytes(int(batch), int(height), int(width))
            self.allocate(nbytes, "forward")
            held.append(nbytes)
            return out

        def step(data: Any, optim_wrapper: Any) -> Any:
            try:
                return train_step(data, optim_wrapper)
            finally:
                while held:
                    self.free(held.pop())

        def closing() -> None:
            close()
            self.free(weights)

        model.data_preprocessor.forward = forward
        model.train_step = step
        probe.close = closing
        return probe

    def clipping(self, monkeypatch: Any) -> None:
        """Gradient clipping costs ``cost.clip`` GiB on this card (after AMP's ``unscale_``)."""
        from mmengine.optim import OptimWrapper

        clip_grad = OptimWrapper._clip_grad

        def _clip_grad(wrapper: Any) -> None:
            nbytes = int(self.cost.clip * GIB)
            self.allocate(nbytes, "clip")
            try:
                clip_grad(wrapper)
            finally:
                self.free(nbytes)

        monkeypatch.setattr(OptimWrapper, "_clip_grad", _clip_grad)


class FakeNvml:
    """The few NVML calls the app makes, answering for ``card``'s cards without CUDA."""

    class NVMLError(Exception):
        pass

    CALLS = (
        "nvmlInit",
        "nvmlShutdown",
        "nvmlDeviceGetCount",
        "nvmlDeviceGetHandleByIndex",
        "nvmlDeviceGetHandleByUUID",
        "nvmlDeviceGetMemoryInfo",
        "nvmlDeviceGetName",
    )

    def __init__(self, card: CachingCard) -> None:
        self.card = card
        self.initialised = 0

    def install(self, monkeypatch: Any) -> FakeNvml:
        module = types.ModuleType("pynvml")
        for name in self.CALLS:
            setattr(module, name, getattr(self, name))
        module.NVMLError = self.NVMLError
        monkeypatch.setitem(sys.modules, "pynvml", module)
        return self

    def nvmlInit(self) -> None:
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.card.totals)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> int:
        text = uuid.decode() if isinstance(uuid, bytes) else uuid
        return int(text.rsplit("-", 1)[1])

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        card = self.card
        used = card.others[handle] + (card.reserved if handle == 0 else 0)
        return types.SimpleNamespace(
            total=card.totals[handle], free=card.totals[handle] - used, used=used
        )

    def nvmlDeviceGetName(self, handle: int) -> str:
        return f"Stand-in GPU {handle}"
