"""HTTP API flow (FastAPI TestClient): train, status, stop, runs, resume, errors."""

from __future__ import annotations

import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from src.api import build_router
from src.controller import TrainingController
from src.storage import LocalArtifactStore

HYPER = {
    "epochs": 2,
    "train_batch_size": 2,
    "val_batch_size": 2,
    "num_workers": 0,
    "input_size": 128,
    "lr": 0.002,
    "weights": "scratch",
    "seed": 3,
}


@pytest.fixture
def api(tmp_path):
    controller = TrainingController(tmp_path / "app_data", LocalArtifactStore(tmp_path / "team"))
    server = FastAPI()
    server.include_router(build_router(controller))
    with TestClient(server) as client:
        yield client, controller, tmp_path


def _body(project, **extra):
    return {
        "project": str(project),
        "task": "object-detection",
        "model": "rtmdet_tiny_8xb32-300e_coco",
        "split": {"train": ["train"], "val": ["val"]},
        "hyperparameters": dict(HYPER),
        **extra,
    }


def _wait_state(client, states, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.get("/api/status").json()
        if status["state"] in states:
            return status
        time.sleep(0.05)
    raise AssertionError(f"state never reached {states}: {status}")


def test_train_stop_runs_resume_finish_and_artifacts(api, demo_project):
    client, controller, tmp_path = api
    assert client.get("/api/status").json()["state"] == "idle"
    assert client.post("/api/stop").status_code == 409

    started = client.post("/api/train", json=_body(demo_project, run_id="api1"))
    assert started.status_code == 200, started.json()
    assert started.json() == {"run_id": "api1"}
    status = _wait_state(client, {"training", "validating"})
    assert status["run_id"] == "api1" and status["model"] == "rtmdet_tiny_8xb32-300e_coco"

    again = client.post("/api/train", json=_body(demo_project, run_id="api2"))
    assert again.status_code == 409
    assert "still in progress" in again.json()["error"]

    while client.get("/api/status").json()["iteration"] < 3:
        time.sleep(0.05)
    assert client.post("/api/stop").json() == {"stopping": True}
    controller.wait(300)
    status = client.get("/api/status").json()
    assert status["state"] == "stopped"
    assert status["stopped_checkpoint"].endswith(".pth")
    assert status["outcome"]["artifacts"]  # a stopped run is uploaded too

    runs = client.get("/api/runs").json()["runs"]
    assert [r["run_id"] for r in runs] == ["api1"]
    assert runs[0]["mid_epoch"] or runs[0]["epoch"] >= 1

    resumed = client.post("/api/train", json={"resume": "api1"})
    assert resumed.status_code == 200, resumed.json()
    controller.wait(600)
    status = client.get("/api/status").json()
    assert status["state"] == "finished", status
    assert status["epoch"] == 2 and status["metrics"]["bbox_mAP"] >= 0
    artifacts = tmp_path / "team" / "mmdetection-3"
    run_dir = next(artifacts.glob("api1_*"))
    assert (run_dir / "config.py").is_file() and list(run_dir.glob("epoch_2.pth"))
    assert status["outcome"]["artifacts"] == str(run_dir)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"project": "/nowhere", "model": "rtmdet_tiny_8xb32-300e_coco"}, "does not exist"),
        ({"model": "rtmdet_tiny_8xb32-300e_coco"}, "project is required"),
        ({"project": "P", "hyperparameters": {"learning_rate": 1}}, "unknown hyperparameters"),
        ({"project": "P", "model": "rtmdet_tiny_8xb32-300e_coco",
          "hyperparameters": {"train_batch_size": 0, "lr": -1}}, "train_batch_size must be"),
        ({"project": "P", "model": "rtmdet_tiny_8xb32-300e_coco", "classes": ["cat"]},
         "match nothing"),
        ({"project": "P", "config": "a = dict(\n"}, "line 1"),
        ({"resume": "nope"}, "no resumable run"),
    ],
)  # fmt: skip
def test_bad_requests_get_json_errors(api, demo_project, body, expected):
    client, _, _ = api
    body = {k: (str(demo_project) if v == "P" else v) for k, v in body.items()}
    response = client.post("/api/train", json=body)
    assert response.status_code == 400, response.json()
    assert expected in response.json()["error"]
    assert client.get("/api/status").json()["state"] == "idle"  # nothing started half-way


def test_invalid_json_body(api):
    client, _, _ = api
    response = client.post(
        "/api/train", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]


def test_a_failed_export_is_shown_keeps_the_files_and_ends_the_run(
    demo_project, tmp_path, monkeypatch
):
    """A checkpoint that cannot be exported (corrupt, or a torch without the loader's API) is an
    error the client sees, with the run's files kept and the app's end-of-run step run."""
    import src.artifacts
    from src.checkpoints import CheckpointError

    def broken_export(src, dst):
        raise CheckpointError(f"checkpoint {src} is truncated or corrupt (EOFError)")

    monkeypatch.setattr(src.artifacts, "export_for_inference", broken_export)
    ended = []
    app_data = tmp_path / "app_data"
    controller = TrainingController(
        app_data, LocalArtifactStore(tmp_path / "team"), cleanup_after_upload=True,
        on_run_end=ended.append,
    )  # fmt: skip
    server = FastAPI()
    server.include_router(build_router(controller))
    with TestClient(server) as client:
        body = _body(demo_project, hyperparameters=dict(HYPER, epochs=1))
        response = client.post("/api/train", json=body)
        assert response.status_code == 200, response.text
        deadline = time.time() + 300
        while time.time() < deadline and not client.get("/api/status").json()["outcome"]:
            time.sleep(0.1)
        status = client.get("/api/status").json()
    outcome = status["outcome"]
    assert outcome is not None, status
    assert "traceback" not in status  # the log has it; clients get one line
    assert "truncated or corrupt" in outcome["upload_error"]
    assert outcome["artifacts"] is None
    work_dir = app_data / outcome["run_id"]
    assert outcome["local_dir"] == str(work_dir.resolve())
    assert list(work_dir.glob("epoch_1.pth"))  # kept, although cleanup after upload is on
    assert not any((app_data / "_upload").glob("*"))  # no half-packed copy left
    assert [o.run_id for o in ended] == [outcome["run_id"]]
