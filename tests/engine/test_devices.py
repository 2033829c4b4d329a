"""GPU choice with the GPUs a machine has (no GPU here: torch.cuda answers as on a machine with
three cards of which the second is the freest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.caching_allocator import CachingCard, FakeNvml

GIB = 2**30
# three cards, the second the freest: 80 GiB with 70 used, 80 with 10, 40 with 10
TOTALS, USED = [80, 80, 40], [70, 10, 10]


@pytest.fixture
def three_gpus(monkeypatch):
    """torch.cuda as on a machine with three cards (every context it opens recorded), and NVML."""
    card = CachingCard(TOTALS, others=USED).install(monkeypatch, listing=True)
    FakeNvml(card).install(monkeypatch)
    return card


def test_gpus_are_listed_freest_first_with_their_memory_and_no_cuda_context(three_gpus):
    """NVML reads the free memory; a CUDA context on each card would cost ~0.5 GB there for the
    app's lifetime (and fail on a card in exclusive-process mode)."""
    from src.engine.devices import list_devices

    assert [d.label for d in list_devices()] == [
        "cuda:1 (70.0 of 80.0 GiB free)",
        "cuda:2 (30.0 of 40.0 GiB free)",
        "cuda:0 (10.0 of 80.0 GiB free)",
    ]
    assert three_gpus.contexts == set()


def test_without_nvml_the_gpus_are_listed_by_index_with_their_total_memory(three_gpus, monkeypatch):
    from src.engine.devices import list_devices

    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed
    assert [d.label for d in list_devices()] == [
        "cuda:0 (80.0 GiB)",
        "cuda:1 (80.0 GiB)",
        "cuda:2 (40.0 GiB)",
    ]
    assert three_gpus.contexts == set()


def test_a_device_is_checked_against_the_gpus_there_are(three_gpus):
    from src.engine.devices import device_problem

    assert device_problem("cuda:2") is None and device_problem("cpu") is None
    problem = device_problem("cuda:3")
    assert problem == (
        "device cuda:3 does not exist here; available: cuda:1 (70.0 of 80.0 GiB free), "
        "cuda:2 (30.0 of 40.0 GiB free), cuda:0 (10.0 of 80.0 GiB free)"
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, "expandable_segments:True"), ("max_split_size_mb:128", "max_split_size_mb:128")],
)
def test_the_cli_sets_expandable_segments_unless_the_user_set_the_allocator(
    given, expected, monkeypatch
):
    from src.cli import main

    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    if given is not None:
        monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", given)
    with pytest.raises(SystemExit):
        main(["--help"])
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == expected


# In a child process: widgets with the app's ids register routes process-wide, which the UI
# tests' app would then find taken.
UI_CHILD = """
import sys
sys.path.insert(0, {root!r})
import pytest
from tests.engine.caching_allocator import CachingCard, FakeNvml
patch = pytest.MonkeyPatch()
FakeNvml(CachingCard({totals!r}, others={used!r}).install(patch, listing=True)).install(patch)
from src.ui.hyperparameters import HyperparametersStep
step = HyperparametersStep(sync_every_epochs=0)
print(step.device.get_value(), [i.value for i in step.device.get_items()],
      [i.value for i in step.gpus.get_items()])
"""


def test_the_hyperparameters_step_preselects_the_freest_gpu():
    root = Path(__file__).resolve().parents[2]
    code = UI_CHILD.format(root=str(root), totals=TOTALS, used=USED)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=root
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == (
        "cuda:1 ['cuda:1', 'cuda:2', 'cuda:0'] ['cuda:1', 'cuda:2', 'cuda:0']"
    )
