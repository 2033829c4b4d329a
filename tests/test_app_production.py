"""The app as the platform runs it (``ENV=production``), against the local Supervisely protocol
server: the project comes from the server, a run's artifacts go to Team Files, the task output is
set, the app data is freed, and the app ends itself with ``app.stop()``. The platform's Stop
(``/sly/shutdown``) mid-run takes the same graceful path. The app process exits, so it runs in a
subprocess; the protocol server runs in the test. Before a run trains, a version of the project is
made (or the platform's current one named) and the workflow records the run's inputs; after the
upload, its output. The server refuses any body the platform would not take, and leaving it fails
a test on a refusal (``tests/sly_server.py``)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port
from tests.sly_server import FakeSupervisely
from tests.test_app_shutdown import ROOT

TEAM_ID, TASK_ID, PROJECT_ID = 1, 4242, 77
BODY = {
    "model": "rtmdet_tiny_8xb32-300e_coco",
    "split": {"train": ["train"], "val": ["val"]},
}


@pytest.fixture
def platform(tmp_path, demo_project):
    """The project is unchanged since its current version (31): the platform names that one."""
    with FakeSupervisely(tmp_path / "team_files") as fake:
        fake.state.add_project(demo_project, PROJECT_ID)
        yield fake


@pytest.fixture
def unversioned_platform(tmp_path, demo_project):
    """The project has no version yet: the app makes one before training."""
    with FakeSupervisely(tmp_path / "team_files") as fake:
        fake.state.add_project(demo_project, PROJECT_ID, version=None)
        yield fake


def _start_app(
    fake: FakeSupervisely, tmp_path: Path, log_name: str = "app.log", **variables: str | None
) -> tuple[subprocess.Popen, str]:
    """The app as the platform starts it; ``variables`` change its environment (None: unset)."""
    port = free_port()
    env = dict(
        os.environ,
        ENV="production",
        SERVER_ADDRESS=fake.address,
        API_TOKEN="x" * 128,
        TEAM_ID=str(TEAM_ID),
        TASK_ID=str(TASK_ID),
        PROJECT_ID=str(PROJECT_ID),
        SLY_APP_DATA_DIR=str(tmp_path / "app_data"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        SUPERVISELY_PUBLIC_API_RETRY_SLEEP_SEC="0",
    )
    env.pop("PROJECT_DIR", None)
    for name, value in variables.items():
        env.pop(name, None) if value is None else env.update({name: value})
    log = open(tmp_path / log_name, "w")  # noqa: SIM115 (closed with the process)
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "src.web.main:app", "--host", "127.0.0.1",
         "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline and server.poll() is None:
        try:
            if httpx.get(f"{base}/api/status", timeout=2).status_code == 200:
                return server, base
        except httpx.TransportError:
            time.sleep(0.5)
    server.kill()
    raise AssertionError((tmp_path / log_name).read_text()[-3000:])


def _ended(server: subprocess.Popen, tmp_path: Path, timeout: float) -> None:
    try:
        server.wait(timeout)
    except subprocess.TimeoutExpired:
        server.kill()
        raise AssertionError(
            "the app did not end: " + (tmp_path / "app.log").read_text()[-3000:]
        ) from None


def _train(base: str, epochs: int, batch_size: int, evaluate: bool = True) -> None:
    """POST /api/train with no project: the app's own project trains."""
    hyper = {"epochs": epochs, "train_batch_size": batch_size, "num_workers": 0,
             "input_size": 128, "weights": "scratch", "evaluate": evaluate}  # fmt: skip
    response = httpx.post(f"{base}/api/train", json=dict(BODY, hyperparameters=hyper), timeout=60)
    assert response.status_code == 200, response.text


@pytest.mark.slow
@pytest.mark.train
def test_platform_run_uploads_sets_output_frees_app_data_and_stops_the_app(
    unversioned_platform, tmp_path, monkeypatch
):
    platform = unversioned_platform
    server, base = _start_app(platform, tmp_path)
    # custom weights on the platform: the SDK's Team Files selector, browsing this team's files
    page = httpx.post(f"{base}/sly/data", json={}, timeout=10).json()
    assert page["model_tf"]["teamId"] == TEAM_ID
    assert page["model_tf"]["options"]["initialFolder"] == {"path": "/mmdetection-3/"}
    _train(base, epochs=2, batch_size=4)
    _ended(server, tmp_path, 600)  # app.stop() after the upload ends the process

    remote = platform.state.local("/mmdetection-3")
    run_dirs = list(remote.iterdir())
    assert len(run_dirs) == 1
    run_dir = run_dirs[0]  # named after the task, as the platform's apps do
    assert run_dir.name == f"{TASK_ID}_{platform.state.projects[PROJECT_ID].name}"
    assert (run_dir / "epoch_2.pth").is_file() and (run_dir / "README.md").is_file()
    config_tail = (run_dir / "config.py").read_text().rstrip().rsplit("sly_metadata", 1)[1]
    assert "project_id=77" in config_tail and "task_type='object_detection'" in config_tail
    state = json.loads((run_dir / "resume" / "state.json").read_text())
    assert state["epoch"] == 2 and state["project_id"] == PROJECT_ID

    # the task's output is the run as an experiment, as the uploaded experiment_info.json says
    from supervisely.nn.experiments import ExperimentInfo

    remote_dir = f"/mmdetection-3/{run_dir.name}"
    output = platform.state.outputs[TASK_ID]["experiment"]["data"]
    assert output == dict(
        json.loads((run_dir / "experiment_info.json").read_text()), task_id=TASK_ID
    )
    experiment = ExperimentInfo(**output)  # the SDK's own reader of it
    assert experiment.framework_name == "MMDetection 3.0"
    assert experiment.artifacts_dir == remote_dir + "/" and experiment.task_id == TASK_ID
    assert experiment.project_id == PROJECT_ID and experiment.task_type == "object detection"
    assert experiment.best_checkpoint in experiment.checkpoints
    for name in [
        *experiment.checkpoints,
        experiment.model_files["config"],
        experiment.model_meta,
        experiment.hyperparameters,
        experiment.train_val_split,
    ]:
        assert (run_dir / name).is_file(), name  # fmt: skip
    assert experiment.train_size == 12 and experiment.val_size == 4
    # the finished run was evaluated; its report went up with it
    assert experiment.evaluation_metrics["mAP"] is not None and output["primary_metric"] == "mAP"
    assert (run_dir / "evaluation" / "report.html").is_file()
    assert not (tmp_path / "app_data" / str(TASK_ID)).exists()  # verified upload: freed
    # the project came from the server, into the cache keyed by id and update time
    assert list((tmp_path / "cache" / "train-mmdet3" / "projects").glob("77_*/meta.json"))

    # the platform's own parser of MMDetection 3 runs (what the serving app lists) reads the run
    from supervisely.nn.artifacts import MMDetection3

    monkeypatch.setenv("SERVER_ADDRESS", platform.address)
    monkeypatch.setenv("API_TOKEN", "x" * 128)
    [info] = MMDetection3(TEAM_ID).get_list()
    assert info.task_id == str(TASK_ID) and info.artifacts_folder == remote_dir
    assert info.task_type == "object detection"
    assert info.project_name == platform.state.projects[PROJECT_ID].name
    assert info.config_path == f"{remote_dir}/config.py"
    assert {c.name for c in info.checkpoints} >= {"epoch_2.pth"}
    assert all(c.path.count("/") == 3 for c in info.checkpoints)  # not resume/'s full state
    # and the SDK's conversion of such a run into the Experiments page's record
    converted = MMDetection3(TEAM_ID).convert_train_to_experiment_info(info)
    assert converted is not None
    assert converted.project_id == PROJECT_ID and converted.task_id == str(TASK_ID)
    assert converted.model_files == {"config": "/config.py"}
    assert converted.best_checkpoint in {c.name for c in info.checkpoints}

    # the project had no version: one was made before training (the SDK's backup of it in Team
    # Files, committed with the app's title); it is in the run's settings and its experiment,
    # and it is the workflow's input; the run's folder is the output
    [commit] = platform.state.bodies_of("projects.versions.commit")
    version_id = commit["id"]
    assert commit["title"] == "Train MMDetection 3"
    assert commit["description"].endswith(f"task with ID: {TASK_ID}")
    backup = platform.state.file_path(commit["teamFileId"])
    assert backup.startswith(f"/system/versions/{PROJECT_ID}/")
    assert platform.state.projects[PROJECT_ID].version == {"id": version_id, "version": 1}
    app_state = json.loads((run_dir / "app_state.json").read_text())
    assert experiment.app_state == "app_state.json" and experiment.project_version == version_id
    # what the Experiments page and TrainApp read of a task: the SDK's own call
    assert platform.api().nn.get_experiment_info(TASK_ID).app_state == "app_state.json"
    assert app_state["project"] == dict(app_state["project"], id=PROJECT_ID, version_id=version_id)
    assert "Failed to add" not in (tmp_path / "app.log").read_text()  # the SDK's error line
    [(kind_in, node_in), (kind, node)] = platform.state.workflow
    task_node = {"type": "task", "id": TASK_ID}
    assert kind_in == "input"
    assert node_in == {"teamId": TEAM_ID, "node": task_node, "type": "project_version",
                       "id": version_id}  # fmt: skip
    assert (kind, node["type"], node["id"]) == ("output", "folder", remote_dir)
    assert node["teamId"] == TEAM_ID
    assert node["node"] == {"type": "task", "id": TASK_ID}
    best = platform.state.file_id(f"{remote_dir}/{experiment.best_checkpoint}")
    relation, card = node["meta"]["customRelationSettings"], node["meta"]["customNodeSettings"]
    assert relation["mainLink"]["url"] == f"/files/{best}/true"  # the checkpoints' folder
    assert card["mainLink"]["url"] == f"/apps/555/sessions/{TASK_ID}"  # this app session

    # the platform's own Model Benchmark report (tests/app/test_platform_report.py builds one):
    # this two-epoch model finds nothing, so the report is a warning, and nothing is left behind
    assert "Model Benchmark report was not built" in (tmp_path / "app.log").read_text()
    assert experiment.evaluation_report_id is None and experiment.evaluation_report_link is None
    assert set(platform.state.projects) == {PROJECT_ID}

    # the Experiments page's "train again", continue: a new task of the app with the finished
    # task's id (no project in its context: the experiment's), every step filled from the run
    server, base = _start_app(
        platform, tmp_path, "again.log", TASK_ID="4243", PROJECT_ID=None,
        **{"modal.state.trainTaskId": str(TASK_ID), "modal.state.trainMode": "continue"},
    )  # fmt: skip
    try:
        st = httpx.post(f"{base}/sly/state", json={}, timeout=10).json()
        page = httpx.post(f"{base}/sly/data", json={}, timeout=10).json()
        assert f"from run {TASK_ID}" in page["exp_message"]["text"], page["exp_message"]
        assert (st["hp_epochs"]["value"], st["hp_train_bs"]["value"]) == (2, 4)
        assert (st["hp_size"]["value"], st["hp_workers"]["value"]) == (128, 0)
        assert st["split_tabs"]["value"] == "By datasets"
        assert st["model_tabs"]["value"] == "Custom weights"
        assert st["model_w"]["value"] == f"{remote_dir}/{experiment.best_checkpoint}"
        assert not st["card_hp"]["disabled"]["disabled"]  # filled and open, still editable
        httpx.post(f"{base}/compose/button_clicked_cb", json={"state": st, "context": {}},
                   timeout=120)  # fmt: skip
        text = httpx.post(f"{base}/sly/state", json={}, timeout=10).json()["cfg_editor"]["text"]
        assert f"/{experiment.best_checkpoint}'" in text.split("load_from = ")[1].split("\n")[0]
    finally:
        server.kill()


@pytest.mark.slow
@pytest.mark.train
def test_a_refused_workflow_input_is_a_warning_and_the_run_finishes(platform, tmp_path):
    """The platform's workflow refuses the inputs (a 500 each time): the SDK's error line in the
    task log, not a failure. The project is unchanged since its version 31, so no version is
    made and that one is still the run's; the run is uploaded and its output recorded."""
    server, base = _start_app(platform, tmp_path)
    platform.state.fail("workflow.node.add-input", 500, times=20)
    _train(base, epochs=1, batch_size=4, evaluate=False)
    _ended(server, tmp_path, 600)

    [run_dir] = platform.state.local("/mmdetection-3").iterdir()
    assert (run_dir / "epoch_1.pth").is_file()
    assert "Failed to add input" in (tmp_path / "app.log").read_text()
    assert "projects.versions.reserve" in platform.state.calls
    assert platform.state.bodies_of("projects.versions.commit") == []
    assert platform.state.outputs[TASK_ID]["experiment"]["data"]["project_version"] == 31
    app_state = json.loads((run_dir / "app_state.json").read_text())
    assert app_state["project"]["version_id"] == 31
    [(kind, node)] = platform.state.workflow  # the output only
    assert (kind, node["type"]) == ("output", "folder")
    assert node["id"] == f"/mmdetection-3/{run_dir.name}"


@pytest.mark.slow
@pytest.mark.train
def test_stop_button_offers_resume_then_platform_stop_saves_uploads_and_exits(platform, tmp_path):
    """Stop (the button / API): the run is uploaded and offered for resume, the app stays up.
    Resumed, then the platform's Stop mid-run: the same graceful path, and the app ends."""
    server, base = _start_app(platform, tmp_path)
    _train(base, epochs=50, batch_size=2)
    status = _wait(base, lambda s: s["iteration"] >= 3)
    assert httpx.post(f"{base}/api/stop", timeout=30).status_code == 200
    status = _wait(base, lambda s: s["state"] == "stopped" and not s["busy"])
    first_stop = status["iteration"]
    time.sleep(2)
    assert server.poll() is None  # still up: the run is offered for resume
    runs = httpx.get(f"{base}/api/runs", timeout=60).json()["runs"]
    assert [(r["run_id"], r["where"]) for r in runs] == [(str(TASK_ID), "Team Files")]
    assert runs[0]["iteration"] == first_stop

    response = httpx.post(f"{base}/api/train", json={"resume": str(TASK_ID)}, timeout=120)
    assert response.status_code == 200, response.text
    _wait(base, lambda s: s["state"] == "training" and s["iteration"] > first_stop + 2)
    with contextlib.suppress(httpx.TransportError):  # it may end before it answers
        httpx.post(f"{base}/sly/shutdown", json={}, timeout=300)
    _ended(server, tmp_path, 300)

    run_dir = next(platform.state.local("/mmdetection-3").glob(f"{TASK_ID}_*"))
    state = json.loads((run_dir / "resume" / "state.json").read_text())
    assert state["iteration"] > first_stop + 2 and state["epoch"] < 50  # a batch boundary
    assert (run_dir / "resume" / state["checkpoint"]).is_file()
    assert TASK_ID in platform.state.outputs
    assert "stopped" in (run_dir / "README.md").read_text()


def _wait(base: str, condition, timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = httpx.get(f"{base}/api/status", timeout=10).json()
        if condition(status):
            return status
        time.sleep(0.2)
    raise AssertionError(f"condition never met: {status}")
