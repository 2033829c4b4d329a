"""Shared fixtures: generated projects only, app data in a temp dir (never /sly-app-data)."""

from __future__ import annotations

import os
import sys
import types
import warnings
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

warnings.filterwarnings("ignore", category=FutureWarning)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores: each trains with one thread (the small models of
    # the suite gain little from a second one, and two workers would otherwise fight over both
    # cores); the variables reach the CLI and rank processes the tests start. TEST_THREADS=N
    # gives each worker N threads instead (the suite must be green with one and with two: thread
    # counts change float sums, issue 33).
    _threads = os.environ.get("TEST_THREADS", "1")
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _threads
    import torch

    torch.set_num_threads(int(_threads))
    # execnet runs a worker's main code as module "__channelexec__" without registering it; the SDK
    # looks callers' modules up by name in sys.modules while importing.
    sys.modules.setdefault("__channelexec__", types.ModuleType("__channelexec__"))


def pytest_collection_modifyitems(config, items):
    """Marks every test that trains ``train`` (``tests/tiers.py``) and gives it a longer time
    limit; then files with the most slow tests first (a stable sort: the order within a file is
    kept), so that two workers (`--dist loadfile --no-loadscope-reorder`: a file stays on one
    worker, with its module fixtures and ordered steps) do not end with one of them alone on a
    long file."""
    from tests.tiers import apply_tiers

    apply_tiers(items)
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])


@pytest.fixture(autouse=True)
def _no_training_unless_marked(request, monkeypatch):
    """A fast-tier test (neither ``train`` nor ``slow``) that trains fails, in this process or in
    one it starts."""
    from tests.tiers import forbid_training

    if request.node.get_closest_marker("train") or request.node.get_closest_marker("slow"):
        yield
        return
    with forbid_training(monkeypatch) as caught:
        yield
    if caught:
        pytest.fail(caught[0], pytrace=False)


@pytest.fixture(autouse=True)
def _app_data(tmp_path, monkeypatch):
    """Every test gets its own synced app-data dir and dataset cache."""
    monkeypatch.setenv("SLY_APP_DATA_DIR", str(tmp_path / "app_data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture(scope="session")
def hard_project(tmp_path_factory) -> Path:
    """Small project with every case the reader must handle (nested, border, tiny, empty, point)."""
    from src.data.demo import DemoOptions, make_demo_project

    path = tmp_path_factory.mktemp("hard") / "project"
    return make_demo_project(
        path, DemoOptions(images=28, seed=3, nested=True, hard_cases=True, max_objects=5)
    )


@pytest.fixture(scope="session")
def demo_project(tmp_path_factory) -> Path:
    from src.data.demo import DemoOptions, make_demo_project

    path = tmp_path_factory.mktemp("demo") / "project"
    return make_demo_project(path, DemoOptions(images=16, seed=1))


@pytest.fixture(scope="session")
def mixed_project(tmp_path_factory) -> Path:
    """The demo project's size (16 images, 12 to train) in photo shapes: 16:9, 4:3, portrait."""
    from src.data.demo import DemoOptions, make_demo_project

    path = tmp_path_factory.mktemp("mixed") / "project"
    return make_demo_project(path, DemoOptions(images=16, seed=1, mixed_sizes=True))


@pytest.fixture
def fake(tmp_path, hard_project):
    """The platform over real HTTP, serving the project with nested datasets and hard cases."""
    from tests.sly_server import PROJECT_ID, FakeSupervisely

    with FakeSupervisely(tmp_path / "team_files") as server:
        server.state.add_project(hard_project, PROJECT_ID)
        yield server


@pytest.fixture
def fake_demo(tmp_path, demo_project):
    """The platform over real HTTP, serving the small demo project (train / val datasets)."""
    from tests.sly_server import PROJECT_ID, FakeSupervisely

    with FakeSupervisely(tmp_path / "team_files") as server:
        server.state.add_project(demo_project, PROJECT_ID)
        yield server
