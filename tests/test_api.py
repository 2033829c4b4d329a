"""HTTP API flow (FastAPI TestClient): train, status, stop, runs, resume, errors."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from src.runs.storage import LocalArtifactStore
from src.training.controller import TrainingController
from src.web.tensorboard import TensorBoard
from tests.helpers import FakeProcess, api_client

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
    with api_client(controller) as client:
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


def _wait_status(client, reached, what: str, timeout: float = 300) -> dict:
    """Poll /api/status until ``reached(status)``; fails saying ``what`` was awaited, and the
    last status, when ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        status = client.get("/api/status").json()
        if reached(status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s; the last status: {status}")
        time.sleep(0.05)


def _wait_state(client, states, timeout=300):
    return _wait_status(client, lambda s: s["state"] in states, f"state in {states}", timeout)


def _scalars(work_dir: Path) -> list[dict]:
    """mmengine's own log of a run's scalars, every session of it, oldest first."""
    return [
        json.loads(line)
        for path in sorted(work_dir.glob("*/vis_data/scalars.json"))
        for line in path.read_text().splitlines()
    ]


@pytest.fixture
def api_with_tensorboard(tmp_path):
    """The API with the app's TensorBoard told of each run (as ``src.web.main`` wires it); the
    processes it starts are stand-ins."""
    started: list[FakeProcess] = []

    def popen(command, **kwargs):
        started.append(FakeProcess(command, **kwargs))
        return started[-1]

    board = TensorBoard(popen=popen)
    controller = TrainingController(
        tmp_path / "app_data", LocalArtifactStore(tmp_path / "team"), on_run_start=board.serve
    )
    with api_client(controller) as client:
        yield client, controller, tmp_path, board, started


def test_train_stop_runs_resume_finish_and_artifacts(api_with_tensorboard, demo_project):
    client, controller, tmp_path, board, tensorboards = api_with_tensorboard
    work_dir = (tmp_path / "app_data" / "api1").resolve()
    assert client.get("/api/status").json()["state"] == "idle"
    assert client.post("/api/stop").status_code == 409

    started = client.post("/api/train", json=_body(demo_project, run_id="api1"))
    assert started.status_code == 200, started.json()
    assert started.json() == {"run_id": "api1"}
    status = _wait_state(client, {"training", "validating"})
    assert status["run_id"] == "api1" and status["model"] == "rtmdet_tiny_8xb32-300e_coco"
    # TensorBoard shows the run's folder
    assert [t.logdir.resolve() for t in tensorboards] == [work_dir] and board.running

    again = client.post("/api/train", json=_body(demo_project, run_id="api2"))
    assert again.status_code == 409
    assert "still in progress" in again.json()["error"]

    _wait_status(client, lambda s: s["iteration"] >= 3, "3 iterations trained")
    assert client.post("/api/stop").json() == {"stopping": True}
    controller.wait(300)
    status = client.get("/api/status").json()
    assert status["state"] == "stopped"
    assert status["stopped_checkpoint"].endswith(".pth")
    assert status["outcome"]["artifacts"]  # a stopped run is uploaded too
    assert status["outcome"]["evaluation"] is None  # and evaluated only on request

    runs = client.get("/api/runs").json()["runs"]
    assert [r["run_id"] for r in runs] == ["api1"]
    assert runs[0]["mid_epoch"] or runs[0]["epoch"] >= 1

    board.serve(tmp_path / "another_run")  # (the board shows something else meanwhile)
    resumed = client.post("/api/train", json={"resume": "api1"})
    assert resumed.status_code == 200, resumed.json()
    # the resume restarted TensorBoard on the run's folder, the one before it was stopped
    assert [t.logdir.resolve() for t in tensorboards[2:]] == [work_dir]
    assert [t.poll() for t in tensorboards] == [-15, -15, None] and board.running
    controller.wait(600)
    status = client.get("/api/status").json()
    assert status["state"] == "finished", status
    assert status["epoch"] == 2
    # the metrics reported are those mmengine logged for the run's last validation (epoch 2)
    mAP = status["metrics"]["bbox_mAP"]
    assert isinstance(mAP, float) and math.isfinite(mAP) and 0.0 <= mAP <= 1.0, mAP
    logged = [r for r in _scalars(work_dir) if "coco/bbox_mAP" in r][-1]
    assert logged["step"] == 2, logged
    expected = {
        key.split("/", 1)[1]: value for key, value in logged.items()
        if key.startswith("coco/") and isinstance(value, float) and "_precision" not in key
    }  # fmt: skip
    assert "bbox_mAP" in expected and status["metrics"] == pytest.approx(expected)
    artifacts = tmp_path / "team" / "mmdetection-3"
    run_dir = next(artifacts.glob("api1_*"))
    assert (run_dir / "config.py").is_file() and list(run_dir.glob("epoch_2.pth"))
    assert status["outcome"]["artifacts"] == str(run_dir)
    # the resumed run finished: evaluated, the report uploaded with it, /api/status says so
    assert status["outcome"]["evaluation"]["metrics"]["mAP"] is not None
    assert (run_dir / "evaluation" / "report.html").is_file()


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
        ({"project": "P", "model": "rtmdet_tiny_8xb32-300e_coco",
          "hyperparameters": {"frozen_stages": 9}}, "frozen_stages must be from -1 to 4"),
        ({"project": "P", "model": "rtmdet_tiny_8xb32-300e_coco",
          "hyperparameters": {"score_thr": 2.0}}, "score_thr must be from 0 to 1"),
        ({"project": "P", "model": "rtmdet_tiny_8xb32-300e_coco",
          "hyperparameters": {"nesterov": True}}, "nesterov applies to the SGD optimizer only"),
        ({"project": "P", "model": "rtmdet_tiny_8xb32-300e_coco",
          "hyperparameters": {"augmentation": "custom", "augmentation_pipeline": [
              {"type": "RandomFlip", "prob": 0.5}, {"type": "Mosaic", "img_scale": [64, 64]}]}},
         "transform 2 (Mosaic) mixes several images"),
        ({"project": "P", "model": "rtmdet_tiny_8xb32-300e_coco",
          "hyperparameters": {"augmentation": "custom", "augmentation_pipeline": [
              {"type": "RandomCrop", "crop_size": [64, 64], "crop_typ": "absolute"}]}},
         "unexpected keyword argument 'crop_typ'"),
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
    import src.runs.artifacts
    from src.runs.checkpoint_io import CheckpointError

    def broken_export(src, dst):
        raise CheckpointError(f"checkpoint {src} is truncated or corrupt (EOFError)")

    monkeypatch.setattr(src.runs.artifacts, "export_for_inference", broken_export)
    ended = []
    app_data = tmp_path / "app_data"
    controller = TrainingController(
        app_data, LocalArtifactStore(tmp_path / "team"), cleanup_after_upload=True,
        on_run_end=ended.append,
    )  # fmt: skip
    with api_client(controller) as client:
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


M = "rtmdet_tiny_8xb32-300e_coco"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"hyperparameters": {"lr": "0.1"}}, 'lr must be a number, got "0.1"'),
        ({"hyperparameters": {"epochs": "x"}}, "epochs must be a whole number"),
        ({"hyperparameters": {"epochs": 1.5}}, "epochs must be a whole number"),
        ({"hyperparameters": {"input_size": [1, 2, 3]}}, "input_size must be 2 whole numbers"),
        ({"hyperparameters": {"amp": "yes"}}, "amp must be true or false"),
        ({"hyperparameters": [1]}, "hyperparameters must be an object"),
        ({"classes": "square"}, "classes must be a list of class names"),
        ({"split": {"train": "train"}}, "split must be an object of name lists"),
        ({"model": 5}, "model must be a string"),
        ({"keep_empty_images": "no"}, "keep_empty_images must be true or false"),
        ({"config": "a = 1", "model": None}, "the config defines no model"),
        ({"resume": 5}, "resume must be a run id"),
        ({"resume": "x", "hyperparameters": {"epochs": "2"}}, "epochs must be a whole number"),
        ({"resume": "x", "hyperparameters": {"nproc": "2"}}, "nproc must be a whole number"),
        # one style for a field in a new run and in a resume
        ({"hyperparameters": {"gpus": "0,1"}}, "gpus must be a list of whole numbers"),
        ({"resume": "x", "hyperparameters": {"gpus": "0,1"}}, "gpus must be a list of whole"),
        ({"resume": "x", "hyperparameters": {"epochs": 0}}, "epochs must be from 1 to 100000"),
    ],
)  # fmt: skip
def test_ill_typed_json_is_a_400_naming_the_field(api, demo_project, body, expected):
    client, _, _ = api
    full = {"project": str(demo_project), "model": M, **body}
    response = client.post("/api/train", json=full)
    assert response.status_code == 400, response.text
    assert expected in response.json()["error"]
    assert client.get("/api/status").json()["state"] == "idle"


def test_more_cpu_processes_than_cores_is_a_400_before_anything_starts(api, demo_project):
    """nproc above the usable cores (within its declared range) is refused with the count to use:
    31 ranks on 2 cores once took minutes only to start and then to stop."""
    from src.engine.cpus import usable_cpus

    client, _, root = api
    cores = usable_cpus()
    if cores >= 64:
        pytest.skip("nproc's range ends at 64: no count above the cores is in it here")
    body = {"project": str(demo_project), "model": M, "hyperparameters": {"nproc": cores + 1}}
    response = client.post("/api/train", json=body)
    assert response.status_code == 400, response.text
    assert f"use nproc {cores} or fewer" in response.json()["error"]
    assert client.get("/api/status").json()["state"] == "idle"
    assert not (root / "app_data").exists() or not list((root / "app_data").iterdir())


def test_a_body_that_is_not_an_object_is_a_400(api):
    client, _, _ = api
    for body in ([1, 2], "train", 3):
        response = client.post("/api/train", json=body)
        assert response.status_code == 400, response.text
        assert "must be a JSON object" in response.json()["error"]


def test_every_api_route_needs_the_token(tmp_path):
    """Also when the server has already served a request before the API is mounted: in production
    the SDK's Application constructor GETs "/" from a worker thread (for its offline page), which
    races with ``mount_api`` (CI saw "Cannot add middleware after an application has started")."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from src.web.access import guard_server
    from src.web.api import mount_api

    controller = TrainingController(tmp_path / "app_data", LocalArtifactStore(tmp_path / "team"))
    server = FastAPI()
    TestClient(server).get("/")  # the middleware stack is built: the server has started
    mount_api(server, controller)
    guard_server(server, "secret", on_platform=True)  # on the platform: /api/* only, when set
    marker = tmp_path / "pwned.txt"
    with TestClient(server) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "secret"}):
            for method, route in (("get", "/api/status"), ("post", "/api/stop"),
                                  ("get", "/api/runs"), ("post", "/api/train")):  # fmt: skip
                body = {"json": {"config": f"open({str(marker)!r}, 'w').write('ran')"}}
                kwargs = body if method == "post" else {}
                response = getattr(client, method)(route, headers=headers, **kwargs)
                assert response.status_code == 401, (route, headers, response.text)
        assert not marker.exists()
        ok = client.get("/api/status", headers={"Authorization": "Bearer secret"})
        assert ok.status_code == 200


def _project_copy(demo_project, tmp_path):
    import shutil

    project = tmp_path / "project"
    shutil.copytree(demo_project, project)
    return project


def test_a_class_whose_objects_are_all_points_is_refused_before_the_run(
    api, demo_project, tmp_path
):
    """The dry run's checks answer the request: a class that has only points cannot train."""
    import json

    client, _, _ = api
    project = _project_copy(demo_project, tmp_path)
    meta = json.loads((project / "meta.json").read_text())
    meta["classes"].append({"title": "pin", "shape": "point", "color": "#FF0000"})
    (project / "meta.json").write_text(json.dumps(meta))
    for ann_path in (project / "train" / "ann").glob("*.json"):
        ann = json.loads(ann_path.read_text())
        ann["objects"].append(
            {"classTitle": "pin", "geometryType": "point",
             "points": {"exterior": [[10, 10]], "interior": []}}
        )  # fmt: skip
        ann_path.write_text(json.dumps(ann))
    body = _body(project, classes=["pin"])
    response = client.post("/api/train", json=body)
    assert response.status_code == 400, response.text
    assert "no usable objects of the selected classes" in response.json()["error"]
    assert client.get("/api/status").json()["state"] == "idle"


def test_a_missing_image_is_refused_before_the_run_with_its_name(api, demo_project, tmp_path):
    client, _, _ = api
    project = _project_copy(demo_project, tmp_path)
    victim = sorted((project / "val" / "img").iterdir())[0]
    victim.unlink()
    response = client.post("/api/train", json=_body(project))
    assert response.status_code == 400, response.text
    assert victim.name in response.json()["error"] and "missing" in response.json()["error"]
    assert client.get("/api/status").json()["state"] == "idle"


def test_resume_from_a_folder_outside_app_data_runs_nothing(api, tmp_path):
    """A run folder's config.py is Python that resuming executes: only app data's runs."""
    client, _, _ = api
    outside = tmp_path / "elsewhere" / "run"
    outside.mkdir(parents=True)
    marker = tmp_path / "pwned.txt"
    (outside / "config.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (outside / "epoch_1.pth").write_bytes(b"not really")
    response = client.post("/api/train", json={"resume": str(outside / "epoch_1.pth")})
    assert response.status_code == 400, response.text
    assert "only runs in app data" in response.json()["error"]
    assert not marker.exists()


def test_stop_during_preparation_cancels_the_start_and_the_server_keeps_answering(
    api, demo_project, monkeypatch
):
    """Preparation (project parsing, config execution) runs off the event loop: status and
    stop answer meanwhile, and a Stop then means the run never starts."""
    import threading

    import src.training.controller

    client, _, tmp_path = api
    release = threading.Event()
    real_prepare = src.training.controller.prepare

    def slow_prepare(request, **kwargs):
        release.wait(60)
        return real_prepare(request, **kwargs)

    monkeypatch.setattr(src.training.controller, "prepare", slow_prepare)
    answers = {}
    starter = threading.Thread(
        target=lambda: answers.setdefault(
            "train", client.post("/api/train", json=_body(demo_project, run_id="cancelled"))
        )
    )
    starter.start()
    status = _wait_state(client, {"preparing"}, timeout=30)  # answered while preparing
    assert status["busy"]
    second = client.post("/api/train", json=_body(demo_project, run_id="other"))
    assert second.status_code == 409 and "being prepared" in second.json()["error"]
    assert client.post("/api/stop").json() == {"stopping": True}
    release.set()
    starter.join(120)
    response = answers["train"]
    assert response.status_code == 409, response.text
    assert "was not started" in response.json()["error"]
    status = client.get("/api/status").json()
    assert status["state"] == "idle" and not status["busy"]
    assert not (tmp_path / "app_data" / "cancelled").exists()


def test_stopped_means_a_resume_succeeds_now(api, demo_project, monkeypatch):
    """The documented flow: train, stop, poll until "stopped", resume → 200. The upload is held
    until the client has seen the state "uploading" (not "stopped") while it lasts."""
    import threading

    from src.runs.storage import LocalArtifactStore

    client, controller, _ = api
    real_upload = LocalArtifactStore.upload_dir
    uploading, release = threading.Event(), threading.Event()

    def held_upload(self, *args, **kwargs):
        uploading.set()
        assert release.wait(300), "the test never let the upload go on"
        return real_upload(self, *args, **kwargs)

    monkeypatch.setattr(LocalArtifactStore, "upload_dir", held_upload)
    body = _body(demo_project, run_id="flow", hyperparameters=dict(HYPER, epochs=3))
    assert client.post("/api/train", json=body).status_code == 200
    _wait_status(client, lambda s: s["iteration"] >= 2, "2 iterations trained")
    assert client.post("/api/stop").status_code == 200
    try:
        assert uploading.wait(300), client.get("/api/status").json()  # the upload has begun
        status = client.get("/api/status").json()
        assert status["state"] == "uploading" and status["run_state"] == "stopped", status
        assert client.post("/api/train", json={"resume": "flow"}).status_code == 409
    finally:
        release.set()
    status = _wait_state(client, {"stopped", "failed"})
    assert status["state"] == "stopped" and status["run_state"] == "stopped", status
    resumed = client.post("/api/train", json={"resume": "flow"})
    assert resumed.status_code == 200, resumed.text
    controller.wait(600)
    assert client.get("/api/status").json()["state"] == "finished"


def test_app_data_is_kept_when_the_artifacts_hold_no_resumable_state(
    demo_project, tmp_path, monkeypatch
):
    """Cleanup after upload needs the resume snapshot in the store: without it, the app-data
    copy is the only resumable one and stays, and the outcome says so."""
    import src.runs.artifacts
    from src.runs.checkpoint_io import CheckpointError

    def no_snapshot(*args, **kwargs):
        raise CheckpointError("no resumable checkpoint (made to fail)")

    monkeypatch.setattr(src.runs.artifacts, "snapshot_run_state", no_snapshot)
    app_data = tmp_path / "app_data"
    controller = TrainingController(
        app_data, LocalArtifactStore(tmp_path / "team"), cleanup_after_upload=True
    )
    with api_client(controller) as client:
        body = _body(demo_project, run_id="keep", hyperparameters=dict(HYPER, epochs=1))
        assert client.post("/api/train", json=body).status_code == 200
        controller.wait(300)
        outcome = client.get("/api/status").json()["outcome"]
    assert outcome["artifacts"] and "no resumable state" in outcome["warning"]
    assert (app_data / "keep" / "epoch_1.pth").is_file()


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _upload_resumable_state(team: Path, run_id: str, saved_at: float) -> None:
    """What a run uploaded to Team Files holds for its resume (``resume/state.json``)."""
    resume = team / "mmdetection-3" / f"{run_id}_demo" / "resume"
    resume.mkdir(parents=True)
    state = {"run_id": run_id, "checkpoint": "epoch_1.pth", "model_name": M, "epoch": 1,
             "iteration": 6, "max_epochs": 2, "saved_at": saved_at}  # fmt: skip
    (resume / "state.json").write_text(json.dumps(state))


def _listed(client) -> list[tuple[str, str]]:
    return [(r["run_id"], r["where"]) for r in client.get("/api/runs").json()["runs"]]


def test_the_runs_list_reads_team_files_once_per_interval(api):
    """Listing Team Files and reading every run's state takes seconds on the platform: within
    ``REMOTE_RUNS_TTL_S`` of a reading, /api/runs answers from it, changes or not."""
    from src.setup.catalog import REMOTE_RUNS_TTL_S

    client, controller, tmp_path = api
    clock = FakeClock()
    controller.catalog.clock = clock
    _upload_resumable_state(tmp_path / "team", "first", saved_at=1.0)
    assert _listed(client) == [("first", "Team Files")]
    _upload_resumable_state(tmp_path / "team", "second", saved_at=2.0)
    for later in (0.0, 1.0, REMOTE_RUNS_TTL_S - 0.5):
        clock.now = 1000.0 + later
        assert _listed(client) == [("first", "Team Files")], later  # not read again


def test_the_runs_list_reads_team_files_again_after_its_interval(api):
    """A reading older than ``REMOTE_RUNS_TTL_S`` is replaced: the runs uploaded since then are
    listed, and the new reading serves the next interval."""
    from src.setup.catalog import REMOTE_RUNS_TTL_S

    client, controller, tmp_path = api
    clock = FakeClock()
    controller.catalog.clock = clock
    assert _listed(client) == []  # read at 1000
    _upload_resumable_state(tmp_path / "team", "first", saved_at=1.0)
    clock.now = 1000.0 + REMOTE_RUNS_TTL_S  # the reading has expired
    assert _listed(client) == [("first", "Team Files")]  # read at 1000 + TTL
    _upload_resumable_state(tmp_path / "team", "second", saved_at=2.0)
    clock.now = 1000.0 + 2 * REMOTE_RUNS_TTL_S - 0.5
    assert _listed(client) == [("first", "Team Files")]  # the new reading serves its interval
    clock.now = 1000.0 + 2 * REMOTE_RUNS_TTL_S
    assert _listed(client) == [("second", "Team Files"), ("first", "Team Files")]


def test_a_custom_pipeline_cannot_run_a_command(api, demo_project):
    """Replays what an attacker sent: a transform type naming a Python callable (mmengine's
    registry imports unknown dotted names) was called while the request was checked."""
    client, _, tmp_path = api
    target = tmp_path / "pwned"
    command = {"type": "os.system", "command": f"touch {target}"}
    for step in (command, {"type": "RandomApply", "transforms": [command]}):
        hyper = {**HYPER, "augmentation": "custom", "augmentation_pipeline": [step]}
        response = client.post("/api/train", json=_body(demo_project, hyperparameters=hyper))
        assert response.status_code == 400, response.text
        assert "is not a transform's name" in response.json()["error"]
    assert not target.exists()


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"resume": "x", "model": "rtmdet_tiny_8xb32-300e_coco"}, "resume and model contradict"),
        ({"resume": "x", "hyperparameters": {"lr": 0.1, "epochs": 3}},
         "resume and hyperparameters.lr contradict"),
        (None, "weights 'scratch' and weights_path contradict"),
    ],
)  # fmt: skip
def test_contradicting_fields_are_refused_by_name(api, demo_project, body, named):
    """A resume keeps its run's settings, and a checkpoint path is for custom weights: a request
    that asks for both is a 400 naming them, not a silent choice."""
    client, _, _ = api
    if body is None:
        body = _body(demo_project)
        body["hyperparameters"]["weights_path"] = "w.pth"  # weights: scratch
    response = client.post("/api/train", json=body)
    assert response.status_code == 400, response.text
    assert named in response.json()["error"]
