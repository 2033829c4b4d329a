"""A stand-in for ``torch.cuda`` on a machine with several cards, for tests on a CPU-only machine.

It behaves like the real one where the multi-GPU bugs live: the current device is per thread
(the CUDA runtime keeps it per host thread: a new thread starts on device 0, whatever its parent
chose), ``set_device`` refuses an ordinal the machine lacks, and a ``"cuda"`` without an index
means the calling thread's current device (what ``model.to("cuda")`` in mmengine resolves to).
"""

from __future__ import annotations

import threading
from typing import Any

import torch


class FakeCuda:
    """``count`` cards; every ``set_device`` is recorded with the thread that made it."""

    NAMES = ("is_available", "device_count", "current_device", "set_device", "get_device_name")

    def __init__(self, count: int = 8) -> None:
        self.count = count
        self._local = threading.local()
        self.calls: list[tuple[str, int]] = []  # (thread name, index) of every set_device

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return self.count

    def current_device(self) -> int:
        return getattr(self._local, "index", 0)

    def set_device(self, device: Any) -> None:
        index = self.index_of(device)
        if not 0 <= index < self.count:
            raise RuntimeError(f"CUDA error: invalid device ordinal {index}")
        self._local.index = index
        self.calls.append((threading.current_thread().name, index))

    def get_device_name(self, device: Any = None) -> str:
        return f"Stand-in GPU {self.index_of(device)}"

    def index_of(self, device: Any) -> int:
        """The card ``device`` names in the calling thread (None, "cuda": the current one)."""
        if device is None:
            return self.current_device()
        if isinstance(device, int):
            return device
        device = torch.device(device)
        if device.type != "cuda":
            raise ValueError(f"not a CUDA device: {device}")
        return self.current_device() if device.index is None else device.index

    def install(self, monkeypatch: Any) -> FakeCuda:
        """Patch ``torch.cuda``'s functions (every caller of ``torch.cuda.X`` sees the stand-in)."""
        for name in self.NAMES:
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))
        return self
