"""The devices a run can train on here: the GPUs with their free and total memory, else the CPU.

The UI lists them (the freest GPU preselected), the CLI checks ``--device`` against them, and a
session pins its worker thread to the chosen GPU (``torch.cuda.set_device``: mmengine then builds
the model on the current device).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Device:
    name: str  # "cuda:N" or "cpu"
    free_gib: float | None = None
    total_gib: float | None = None

    @property
    def label(self) -> str:
        if self.total_gib is None:
            return self.name
        return f"{self.name} ({self.free_gib:.1f} of {self.total_gib:.1f} GiB free)"


def list_devices() -> list[Device]:
    """The GPUs, the freest first; the CPU alone where there is none."""
    import torch

    if not torch.cuda.is_available():
        return [Device("cpu")]
    gpus = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        gpus.append(Device(f"cuda:{index}", free / 2**30, total / 2**30))
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


def use_device(device: str) -> None:
    """Make ``device`` the calling thread's current CUDA device (mmengine places the model on
    the current device); nothing for the CPU."""
    if device.startswith("cuda:"):
        import torch

        torch.cuda.set_device(int(device[5:]))
