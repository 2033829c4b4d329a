"""The label-error audit through the HTTP API (``POST /api/audit``, ``GET /api/audit``): what it
cannot start with is a 400 before anything is written; an audit's folds are runs of the app's
controller, stopped by ``/api/stop`` and continued with ``{"resume": AUDIT_ID}``."""

from __future__ import annotations

import json
import time

import pytest

from src.runs.storage import LocalArtifactStore
from src.training.controller import TrainingController
from tests.helpers import api_client

MODEL = "rtmdet_tiny_8xb32-300e_coco"
TINY = {"weights": "scratch", "epochs": 3, "train_batch_size": 1, "val_batch_size": 1,
        "num_workers": 0, "input_size": 64, "evaluate": False}  # fmt: skip


@pytest.fixture
def audit_api(tmp_path):
    controller = TrainingController(tmp_path / "app_data", LocalArtifactStore(tmp_path / "team"))
    with api_client(controller) as client:
        yield client, controller, tmp_path


@pytest.fixture(scope="module")
def small_project(tmp_path_factory):
    from src.data.demo import DemoOptions, make_demo_project

    root = tmp_path_factory.mktemp("audit_api")
    return make_demo_project(root / "project", DemoOptions(images=10, seed=5, nested=True))


def _body(project, out, **extra):
    return {"project": str(project), "model": MODEL, "out": str(out), "folds": 2,
            "hyperparameters": dict(TINY), **extra}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"out": None}, "project and out are required"),
        ({"project": "/nowhere/project"}, "does not exist"),
        ({"folds": 1}, "folds 1: an audit needs at least 2 folds"),
        ({"folds": 11}, "fewer than the folds"),
        ({"folds": True}, "folds must be a whole number, got true"),
        ({"audit_id": 5}, "audit_id must be a string"),
        ({"learning_curve": "yes"}, "learning_curve true or false"),
        ({"folds": "3"}, 'folds must be a whole number, got "3"'),
        ({"low": 2}, "low"),
        ({"split": {"train": ["train"]}}, "split: not in an audit"),
        ({"hyperparameters": dict(TINY, epochs=0)}, "epochs must be from 1"),
        ({"hyperparameters": dict(TINY, lr="x")}, "lr must be a number"),
        ({"model": "no_such_model"}, "no_such_model"),
        ({"to_platform": True}, "to_platform: the app is not on the platform"),
        ({"to_platform": "yes"}, "to_platform must be"),
    ],
)  # fmt: skip
def test_what_an_audit_cannot_start_with_is_a_400_and_nothing_is_written(
    audit_api, small_project, change, expected
):
    client, _, root = audit_api
    body = {k: v for k, v in {**_body(small_project, root / "out"), **change}.items()
            if v is not None}  # fmt: skip
    response = client.post("/api/audit", json=body)
    assert response.status_code == 400, response.text
    assert expected in response.json()["error"]
    assert client.get("/api/audit").json()["state"] == "idle"
    assert not (root / "out").exists()
    assert not (root / "app_data").exists() or not any((root / "app_data").rglob("*.json"))


def test_an_out_folder_inside_the_project_is_refused(audit_api, small_project):
    client, _, _ = audit_api
    response = client.post("/api/audit", json=_body(small_project, small_project / "audit"))
    assert response.status_code == 400 and "the audit" in response.json()["error"]


def test_resuming_an_unknown_audit_names_the_ones_there(audit_api):
    client, _, _ = audit_api
    response = client.post("/api/audit", json={"resume": "nope"})
    assert response.status_code == 400 and "no audit 'nope'" in response.json()["error"]


def _wait(client, route, reached, what, timeout=600):
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(route).json()
        if reached(body):
            return body
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s; last: {body}"
        time.sleep(0.05)


@pytest.mark.train
def test_an_api_audit_is_stopped_in_its_first_fold_resumed_and_writes_its_outputs(
    audit_api, small_project
):
    client, _, root = audit_api
    out = root / "out"
    started = client.post("/api/audit", json=_body(small_project, out, audit_id="a1"))
    assert started.status_code == 200, started.text
    assert started.json() == {"state": "running", "audit_id": "a1", "folds": 2, "images": 10}
    in_fold_1 = lambda s: s["run_id"] == "a1_fold1" and s["iteration"] >= 1  # noqa: E731
    _wait(client, "/api/status", in_fold_1, "fold 1 training")
    busy = client.post("/api/audit", json=_body(small_project, root / "out2"))
    assert busy.status_code == 409  # one audit (and one run) at a time
    assert client.post("/api/stop").status_code == 200
    stopped = _wait(client, "/api/audit", lambda a: a["state"] != "running", "the audit's end")
    assert stopped["state"] == "stopped" and stopped["stopped_at"] == 1, stopped
    assert list((root / "app_data" / "a1_fold1").glob("iter_*.pth")), "the stop's checkpoint"
    assert not (root / "app_data" / "a1_fold2").exists() and not out.exists()

    resumed = client.post("/api/audit", json={"resume": "a1"})
    assert resumed.status_code == 200, resumed.text
    done = _wait(client, "/api/audit", lambda a: a["state"] != "running", "the audit's end")
    assert done["state"] == "done", done
    assert set(done["outputs"]) == {"suspects", "report", "project"}
    suspects = json.loads((out / "suspects.json").read_text())
    assert [f["fold"] for f in suspects["folds"]] == [1, 2] and suspects["model"] == MODEL
    assert sum(done["counts"].values()) == len(suspects["suspects"])
    assert any("fold 2/2" in line for line in done["log"]), done["log"]
    for fold in (1, 2):  # each fold trained to its end (fold 1 across the stop)
        assert (root / "app_data" / f"a1_fold{fold}" / "epoch_3.pth").is_file()


def test_an_audit_started_from_the_cli_is_continued_there(audit_api, small_project):
    from src.audit.plan import AuditPlan, save_plan

    client, controller, root = audit_api
    plan = AuditPlan("c1", str(small_project), str(root / "out"), [["a"], ["b"]], seed=0,
                     settings=["--no-evaluate", "--project", str(small_project)])  # fmt: skip
    save_plan(plan, controller.app_data_dir)
    response = client.post("/api/audit", json={"resume": "c1"})
    assert response.status_code == 400
    assert "python -m src.cli audit --resume c1" in response.json()["error"]
    assert client.get("/api/audit").json()["state"] == "idle"


def test_a_stop_while_fold_1_is_prepared_stops_the_audit(audit_api, small_project, monkeypatch):
    """``/api/stop`` during the fold's preparation cancels its start: the audit is stopped (and
    resumable), not failed."""
    import threading

    import src.training.controller as controller_module

    preparing, release = threading.Event(), threading.Event()
    real = controller_module.check_data

    def held(prepared):
        preparing.set()
        assert release.wait(120), "the test never let the preparation go on"
        return real(prepared)

    monkeypatch.setattr(controller_module, "check_data", held)
    client, _, root = audit_api
    started = client.post("/api/audit", json=_body(small_project, root / "out", audit_id="s1"))
    assert started.status_code == 200, started.text
    assert preparing.wait(120), "fold 1 was never prepared"
    try:
        assert client.post("/api/stop").status_code == 200
    finally:
        release.set()
    ended = _wait(client, "/api/audit", lambda a: a["state"] != "running", "the audit's end", 120)
    assert ended["state"] == "stopped" and ended["stopped_at"] == 1, ended


def test_a_stop_between_folds_keeps_the_next_fold_from_starting():
    """Between two folds nothing trains: a stop asked then (the card's, /api/stop's, the
    platform's) ends the audit before the next fold, which never reaches the controller."""
    from src.audit.plan import AuditPlan
    from src.audit.service import ApiFoldTrainer

    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"the next fold reached the controller ({name})")

    plan = AuditPlan("s1", "project", "out", [["a"], ["b"]], seed=0)
    assert ApiFoldTrainer(Untouchable(), stopping=lambda: True)(plan, 2, resume=False) == "stopped"


def test_api_stop_with_no_audit_and_no_run_is_a_409(audit_api):
    client, _, _ = audit_api
    assert client.post("/api/stop").status_code == 409
