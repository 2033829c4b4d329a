"""GPU choice with the GPUs a machine has (no GPU here: torch.cuda answers as on a machine with
three cards of which the second is the freest)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

GIB = 2**30
CARDS = {0: (10 * GIB, 80 * GIB), 1: (70 * GIB, 80 * GIB), 2: (30 * GIB, 40 * GIB)}


@pytest.fixture
def three_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(CARDS))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=None: CARDS[index])


def test_gpus_are_listed_freest_first_with_their_memory(three_gpus):
    from src.engine.devices import list_devices

    assert [d.label for d in list_devices()] == [
        "cuda:1 (70.0 of 80.0 GiB free)",
        "cuda:2 (30.0 of 40.0 GiB free)",
        "cuda:0 (10.0 of 80.0 GiB free)",
    ]


def test_a_device_is_checked_against_the_gpus_there_are(three_gpus):
    from src.engine.devices import device_problem

    assert device_problem("cuda:2") is None and device_problem("cpu") is None
    problem = device_problem("cuda:3")
    assert problem == (
        "device cuda:3 does not exist here; available: cuda:1 (70.0 of 80.0 GiB free), "
        "cuda:2 (30.0 of 40.0 GiB free), cuda:0 (10.0 of 80.0 GiB free)"
    )


# In a child process: widgets with the app's ids register routes process-wide, which the UI
# tests' app would then find taken.
UI_CHILD = """
import sys, torch
sys.path.insert(0, {root!r})
cards = {cards!r}
torch.cuda.is_available = lambda: True
torch.cuda.device_count = lambda: len(cards)
torch.cuda.mem_get_info = lambda index=None: cards[index]
from src.ui.hyperparameters import HyperparametersStep
step = HyperparametersStep(sync_every_epochs=0)
print(step.device.get_value(), [i.value for i in step.device.get_items()],
      [i.value for i in step.gpus.get_items()])
"""


def test_the_hyperparameters_step_preselects_the_freest_gpu():
    root = Path(__file__).resolve().parents[2]
    code = UI_CHILD.format(root=str(root), cards=CARDS)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=root
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == (
        "cuda:1 ['cuda:1', 'cuda:2', 'cuda:0'] ['cuda:1', 'cuda:2', 'cuda:0']"
    )
