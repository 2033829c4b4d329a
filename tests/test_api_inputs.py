"""The HTTP API answers a reason, never a 500 (issue 35): settings the run would refuse at its
start are a 400 before it answers; a run id that names a file, an uploaded run whose
``app_state.json`` is nested past Python's stack, not UTF-8 or a link out of Team Files, a
control character in a path, and malformed bodies on every route get a 4xx and one line.
Nothing here trains: every request is refused before a run starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src.runs.storage import LocalArtifactStore
from src.training.controller import TrainingController
from tests.helpers import API_TOKEN, RTMDET, FakeProcess

HYPER = {"epochs": 1, "train_batch_size": 2, "num_workers": 0, "input_size": 128,
         "weights": "scratch"}  # fmt: skip


@pytest.fixture
def server(tmp_path):
    """The app's server as ``src.web.main`` mounts it (API, TensorBoard forwarding with a board
    running, the guard); (client, app data, the store's folder)."""
    from src.web.access import guard_server
    from src.web.api import mount_api
    from src.web.tensorboard import TensorBoard, mount_tensorboard

    app_data, team = tmp_path / "app_data", tmp_path / "team"
    controller = TrainingController(app_data, LocalArtifactStore(team))
    board = TensorBoard(popen=FakeProcess)
    board.serve(tmp_path)
    app = FastAPI()
    mount_api(app, controller)
    mount_tensorboard(app, board)
    guard_server(app, API_TOKEN, on_platform=False)
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    with TestClient(app, headers=headers, raise_server_exceptions=False) as client:
        yield client, app_data, team
    board.stop()


def _body(project: Path, **hyper) -> dict:
    return {"project": str(project), "model": RTMDET, "split": {"train": ["train"], "val": ["val"]},
            "hyperparameters": {**HYPER, **hyper}}  # fmt: skip


def _refused(response, *expected: str) -> str:
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert "Traceback" not in response.text and "\n" not in error
    for words in expected:
        assert words in error, error
    return error


@pytest.mark.parametrize(
    ("hyper", "expected"),
    [
        ({"seed": -1}, "seed must be from 0 to 2147483647, got -1"),
        ({"seed": 2**32}, "seed must be from 0 to 2147483647, got 4294967296"),
        ({"log_interval": 0}, "log_interval must be from 1 to 100000, got 0"),
        ({"warmup_iters": 5, "warmup_ratio": 0}, "warmup_ratio"),
        ({"keep_checkpoints": 0}, "keep_checkpoints must be from 1"),
    ],
)
def test_settings_the_run_refuses_at_its_start_are_a_400(server, demo_project, hyper, expected):
    """They were a 200, then a failed run whose folder blocked its id."""
    client, app_data, _ = server
    _refused(client.post("/api/train", json=_body(demo_project, **hyper)), expected)
    assert client.get("/api/status").json()["state"] == "idle"
    assert not app_data.exists() or not any(app_data.iterdir())


def test_a_run_id_that_names_a_file_in_app_data_is_a_400(server, demo_project):
    """It was a 500 (FileExistsError) after the request had been composed."""
    client, app_data, _ = server
    app_data.mkdir()
    (app_data / "tensorboard.log").write_text("the board's log")
    body = {**_body(demo_project), "run_id": "tensorboard.log"}
    _refused(client.post("/api/train", json=body), "names a file in")
    assert (app_data / "tensorboard.log").read_text() == "the board's log"
    assert sorted(p.name for p in app_data.iterdir()) == ["tensorboard.log"]


def _uploaded_run(team: Path, state: bytes | Path) -> None:
    """A run of this app in the store (``/mmdetection-3/7_demo``) with ``state`` as its
    ``app_state.json`` (bytes, or a link to this file)."""
    folder = team / "mmdetection-3" / "7_demo"
    folder.mkdir(parents=True)
    info = {"experiment_name": "7 rtmdet", "model_name": RTMDET, "best_checkpoint": "best.pth"}
    (folder / "experiment_info.json").write_text(json.dumps(info))
    if isinstance(state, Path):
        (folder / "app_state.json").symlink_to(state)
    else:
        (folder / "app_state.json").write_bytes(state)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("nested", "nested too deeply"),
        ("not utf-8", "is not UTF-8 text"),
        ("link out", "points outside"),
    ],
)
def test_an_uploaded_run_whose_state_cannot_be_read_is_a_400(
    server, demo_project, tmp_path, kind, expected
):
    """RecursionError, UnicodeDecodeError and a link out of Team Files were 500s."""
    client, _, team = server
    if kind == "nested":
        state = b"[" * 200_000 + b"]" * 200_000
    elif kind == "not utf-8":
        state = b'{"hyperparameters": {"x": "\xff\xfe"}}'
    else:
        state = tmp_path / "outside.json"
        state.write_text(json.dumps({"hyperparameters": {}, "model": RTMDET}))
    _uploaded_run(team, state)
    body = {"from_run": "7", "project": str(demo_project)}
    _refused(client.post("/api/train", json=body), expected)


def test_a_control_character_in_a_path_is_a_400(server):
    """``GET /tensorboard/%00`` was a 500 (httpx.InvalidURL)."""
    client, _, _ = server
    for path in ("/tensorboard/%00", "/tensorboard/a%0Ab", "/api/status%7F"):
        _refused(client.get(path), "control character")


ROUTES = [("POST", "/api/train"), ("POST", "/api/stop"), ("GET", "/api/status"),
          ("GET", "/api/runs"), ("GET", "/tensorboard/x"), ("POST", "/tensorboard/x"),
          ("POST", "/api/nowhere")]  # fmt: skip
MALFORMED = [b"", b"{", b"\xff\xfe\x00", b"[" * 100_000, b'{"a":' * 50_000, b"null", b"[]",
             b'"x"', b"1e999", b"NaN", b'{"resume": {}}', b'{"from_run": [1]}',
             b'{"hyperparameters": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"]  # fmt: skip


def _answered(response) -> None:
    """A 4xx, a 200, or the forwarding's own 503 (no TensorBoard listens here): with a reason."""
    busy = response.status_code == 503 and "error" in response.json()
    assert response.status_code < 500 or busy, (response.status_code, response.text[:300])
    assert "Traceback" not in response.text


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_malformed_bodies_on_every_route_get_no_500(server, method, path):
    """A body nested past Python's stack was a 500 (RecursionError in the body check)."""
    client, _, _ = server
    for body in MALFORMED:
        response = client.request(method, path, content=body)
        _answered(response)
        if path.startswith("/api/") and method == "POST" and body.strip() not in (b"", b"{}"):
            assert response.status_code in (400, 404, 405, 409), (body[:40], response.text)
    assert client.get("/api/status").json()["state"] == "idle"


def test_any_bytes_on_any_route_get_no_500(server):
    client, _, _ = server
    # a path's tail of printable characters and percent escapes (httpx refuses to send others)
    tails = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="?#"),
                    max_size=6)  # fmt: skip

    @settings(
        max_examples=80, deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )  # fmt: skip
    @given(route=st.sampled_from(ROUTES), body=st.binary(max_size=64), tail=tails)
    def check(route, body, tail):
        method, path = route
        _answered(client.request(method, path + tail, content=body))

    check()
    assert client.get("/api/status").json()["state"] == "idle"
