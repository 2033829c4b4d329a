"""How a run uses its GPU: the true peak of allocated memory, and utilisation sampled meanwhile.

mmengine's log processor calls ``torch.cuda.reset_peak_memory_stats()`` whenever it logs, so a
peak read after training (or by a hook that runs after the LoggerHook) is only the peak since the
last log line. :class:`GpuStats` keeps the maximum of the peaks read by ``GpuMemoryHook``
(``src.hooks.gpu_memory``) after every iteration, before the LoggerHook. Utilisation and used
memory come from NVML through ``torch.cuda.utilization`` where ``pynvml`` is installed, else from
``nvidia-smi``, sampled every few seconds in a daemon thread (a query costs ~20 ms: never in the
training loop); where neither answers they are left out.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)
Query = Callable[[int], "tuple[float, float] | None"]  # index -> (utilisation %, used MiB)


def read_utilisation(index: int) -> tuple[float, float] | None:
    """(utilisation %, used MiB) of GPU ``index``: NVML through torch, else ``nvidia-smi``;
    None where neither answers."""
    try:
        import torch

        used = torch.cuda.device_memory_used(index) / 2**20
        return float(torch.cuda.utilization(index)), float(used)
    except Exception:  # no pynvml (or an old torch): ask nvidia-smi
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    command = [smi, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
               "-i", str(index)]  # fmt: skip
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=True)
        util, used = (float(v) for v in out.stdout.strip().splitlines()[0].split(","))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    return util, used


class GpuStats:
    """The GPU's use during one run (see the module's docstring).

    Args:
        device: "cuda:N".
        every_s: seconds between utilisation samples.
        query: reads (utilisation %, used MiB) of a GPU index (a stand-in in tests).
        peak: reads the allocator's peak since its last reset (a stand-in in tests).
    """

    def __init__(
        self,
        device: str,
        every_s: float = 2.0,
        query: Query = read_utilisation,
        peak: Callable[[int], int] | None = None,
    ) -> None:
        if not device.startswith("cuda"):
            raise ValueError(f"GpuStats watches a CUDA device, got {device!r}")
        if every_s <= 0:
            raise ValueError(f"every_s must be positive, got {every_s}")
        self.index = int(device.split(":", 1)[1]) if ":" in device else 0
        self.every_s = every_s
        self._query = query
        self._peak = peak or _allocator_peak
        self.peak_bytes = 0
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def note_peak(self) -> None:
        """Fold the allocator's peak since its last reset into the run's peak."""
        self.peak_bytes = max(self.peak_bytes, int(self._peak(self.index)))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._sample, name="gpu-stats", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            reading = self._query(self.index)
            if reading is None:
                logger.info("GPU utilisation cannot be read here (no NVML, no nvidia-smi)")
                return
            self.samples.append(reading)

    def snapshot(self) -> dict[str, float]:
        """``peak_gib`` (true peak allocated), and where sampled the latest ``util`` (%),
        ``used_gib``, and ``mean_util`` over the run."""
        values = {"peak_gib": round(self.peak_bytes / 2**30, 3)}
        samples = list(self.samples)
        if samples:
            values["util"], used = samples[-1]
            values["used_gib"] = round(used / 1024, 3)
            values["mean_util"] = round(sum(u for u, _ in samples) / len(samples), 1)
        return values


def _allocator_peak(index: int) -> int:
    import torch

    return int(torch.cuda.max_memory_allocated(index))
