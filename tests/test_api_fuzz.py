"""Fuzzing POST /api/train (hypothesis, bounded): any JSON body gets a 200 or a 4xx with a JSON
error, never a 500, and a refused request leaves nothing started (no session, no run folder)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src.config.params import TrainParams
from src.runs.storage import LocalArtifactStore
from src.training.controller import TrainingController
from tests.helpers import api_client

MODEL = "rtmdet_tiny_8xb32-300e_coco"
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=3),
    max_leaves=6,
)  # fmt: skip
PARAMS = sorted(set(TrainParams.__dataclass_fields__) - {"task", "classes"})
# What the fuzzed hyperparameters are laid over: a run that is accepted stays small whenever the
# stop reaches it (in its preparation or at its first batch: that depends on the machine's load),
# instead of the defaults' 640-pixel batches and data-loader processes.
SMALL = {"weights": "scratch", "epochs": 1, "train_batch_size": 2, "num_workers": 0,
         "input_size": [64, 64], "evaluate": False}  # fmt: skip
FIELDS = ["task", "model", "classes", "split", "config", "keep_empty_images", "run_id", "resume"]


# Edge values of the right type, so that requests get past the type checks into the range,
# project and config checks; the sizes that pass are small (a run that starts is stopped at its
# first batch, which must stay quick).
EDGES = {
    int: st.sampled_from([-(10**9), -1, 0, 1, 2, 31, 32, 64, 4097, 100_001, 10**12]),
    float: st.sampled_from([-1.0, 0.0, 1e-4, 0.5, 1e308, float("inf"), float("nan")]),
    str: st.sampled_from(["", "x", "cpu", "cuda:0", "cuda:99", "step", "custom", "scratch",
                          "/nowhere.pth", "../x", "SGD", "heavy"]),
    bool: st.booleans(),
}  # fmt: skip


def _typed(name: str):
    import typing

    hint = typing.get_type_hints(TrainParams)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        return st.lists(EDGES[int], max_size=3)
    return EDGES.get(args[0] if args else hint, JSON)


def _bodies(project: str):
    """Mostly well-formed bodies with a few fields replaced by edge values or anything JSON can
    hold, so that validation is exercised past its first check; sometimes anything at all."""
    hyper = st.lists(st.sampled_from(PARAMS), max_size=3, unique=True).flatmap(
        lambda names: st.fixed_dictionaries({n: _typed(n) | JSON for n in names})
    )
    fields = st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=2)
    shaped = st.builds(
        lambda h, f: {"project": project, "model": MODEL, "hyperparameters": {**SMALL, **h}, **f},
        hyper, fields,
    )  # fmt: skip
    return shaped | JSON


@pytest.fixture(scope="module")
def fuzz_api(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    controller = TrainingController(root / "app_data", LocalArtifactStore(root / "team"))
    with api_client(controller) as client:
        yield client, controller, root / "app_data"


def test_any_body_gets_json_and_no_500(fuzz_api, demo_project):
    client, controller, app_data = fuzz_api

    @settings(
        max_examples=120, deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )  # fmt: skip
    @given(body=_bodies(str(demo_project)))
    def check(body):
        before = set(app_data.iterdir()) if app_data.exists() else set()
        response = client.post("/api/train", json=body)
        assert response.status_code < 500, (body, response.text)
        assert "error" in response.json() or "run_id" in response.json()
        if response.status_code == 200:  # a valid run: stopped at once, it ends cleanly
            client.post("/api/stop")
            controller.wait(300)
            assert not controller.busy
            return
        status = client.get("/api/status").json()
        assert status["state"] in ("idle", "finished", "stopped", "failed"), (body, status)
        assert not status["busy"]
        after = set(app_data.iterdir()) if app_data.exists() else set()
        assert after == before, (body, after - before)  # nothing half-started

    check()
