"""Train again from an experiment: every run uploads its settings (``app_state.json``, named in
``experiment_info.json`` as the SDK reads it); the API's ``from_run`` and the CLI's ``--from-run``
start a new run with them ("continue": from its best checkpoint); a state that does not hold in
the project is loaded as far as it does, and says what it dropped."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch

from src.data.project import open_local_project
from src.runs.storage import LocalArtifactStore
from src.setup.app_state import load_app_state, parse_app_state
from src.setup.requests import request_from_json
from src.training.controller import TrainingController
from tests.helpers import api_client
from tests.test_cli import run_cli

MODEL = "rtmdet_tiny_8xb32-300e_coco"
HYPER = {"epochs": 1, "train_batch_size": 2, "val_batch_size": 2, "num_workers": 0,
         "input_size": 128, "lr": 0.003, "weights": "scratch", "seed": 5}  # fmt: skip


@pytest.fixture(scope="module")
def uploaded(tmp_path_factory, demo_project):
    """One short run, trained through the API with non-default settings (two classes, an item
    split, an edited config) and uploaded to a local store: (root, controller, run folder)."""
    root = tmp_path_factory.mktemp("from_run")
    controller = TrainingController(root / "app_data", LocalArtifactStore(root / "team"))
    project = open_local_project(demo_project)
    items = sorted(p.stem for p in (demo_project / "train" / "ann").glob("*.json"))
    split = {"train_items": [f"train/{n}" for n in items[:9]],
             "val_items": [f"train/{n}" for n in items[9:]]}  # fmt: skip
    composed = controller.compose(
        request_from_json(
            {"model": MODEL, "classes": ["square", "circle"], "split": split,
             "hyperparameters": HYPER}, str(root / "app_data"), default_project=project,
        )
    )  # fmt: skip
    config = composed.config_text.replace("max_keep_ckpts=2", "max_keep_ckpts=4")
    body = {"model": MODEL, "classes": ["square", "circle"], "split": split,
            "hyperparameters": HYPER, "config": config, "run_id": "first"}  # fmt: skip
    with api_client(controller, default_project=project) as client:
        assert client.post("/api/train", json=body).status_code == 200
        controller.wait(600)
    assert controller.status().state == "finished", controller.status()
    folder = next((root / "team" / "mmdetection-3").glob("first_*"))
    return root, controller, folder, project


@pytest.fixture
def own_copy(uploaded, tmp_path):
    """The uploaded run in a copy of app data and of the store, with a controller of its own: for
    a test that trains from it, resumes it or adds to the store (the shared one stays as it
    was trained). Same tuple as ``uploaded``. A run the test left going is stopped (one
    training session per process)."""
    root, _, folder, project = uploaded
    copy = tmp_path / "copy"
    for part in ("app_data", "team"):
        shutil.copytree(root / part, copy / part)
    controller = TrainingController(copy / "app_data", LocalArtifactStore(copy / "team"))
    yield copy, controller, copy / "team" / "mmdetection-3" / folder.name, project
    controller.stop()
    controller.wait(600)


def _wait(controller) -> None:
    deadline = time.time() + 600
    while controller.busy and time.time() < deadline:
        time.sleep(0.1)
    assert controller.status().state == "finished", controller.status()


def test_every_run_uploads_its_settings_and_the_sdk_finds_them(uploaded):
    from supervisely.nn.experiments import ExperimentInfo

    _, _, folder, _ = uploaded
    info = ExperimentInfo(**json.loads((folder / "experiment_info.json").read_text()))
    assert info.app_state == "app_state.json" and (folder / info.app_state).is_file()
    state = parse_app_state((folder / "app_state.json").read_text(), "state")
    assert state["run_id"] == "first" and state["model"] == MODEL
    assert state["classes"] == ["square", "circle"]
    assert len(state["split"]["train_items"]) == 9 and state["split"]["train"] is None
    assert state["hyperparameters"]["lr"] == 0.003 and state["hyperparameters"]["seed"] == 5
    assert "max_keep_ckpts=4" in state["config"]  # the edited text, as it trained
    assert (folder / "resume" / "app_state.json").is_file()  # a resumed run keeps it


def test_api_from_run_trains_with_its_settings_and_the_bodys_overrides(own_copy):
    root, controller, folder, project = own_copy
    with api_client(controller, default_project=project) as client:
        answer = client.post(
            "/api/train",
            json={"from_run": "first", "hyperparameters": {"lr": 0.001}, "run_id": "second"},
        )
        assert answer.status_code == 200, answer.json()
        # the run trained an edited config: the lr given is put into that text (with what
        # the lr sets besides, the schedule's floor), and each key changed is said
        notes = answer.json()["from_run"]["notes"]
        prefix = "the experiment's edited config changed by the settings given: "
        assert prefix + "optim_wrapper.optimizer.lr: 0.003 -> 0.001" in notes
        assert all(note.startswith(prefix) for note in notes), notes
        assert "run first" in answer.json()["from_run"]["source"]
        _wait(controller)
    first = json.loads((folder / "app_state.json").read_text())
    second_dir = next((root / "team" / "mmdetection-3").glob("second_*"))
    second = json.loads((second_dir / "app_state.json").read_text())
    assert second["hyperparameters"] == dict(first["hyperparameters"], lr=0.001)
    assert second["split"] == first["split"] and second["classes"] == first["classes"]
    trained = (second_dir / "config.py").read_text()
    assert "max_keep_ckpts=4" in trained  # the experiment's edit, kept
    assert "lr=0.001" in trained.replace(" ", "") and "lr=0.003" not in trained.replace(" ", "")
    merged = second["config"].replace(" ", "")  # what the next "train again" starts from
    assert "max_keep_ckpts=4" in merged and "lr=0.001" in merged


def test_continue_fine_tunes_from_the_runs_best_checkpoint(own_copy):
    root, controller, folder, project = own_copy
    best = json.loads((folder / "experiment_info.json").read_text())["best_checkpoint"]
    loaded = controller.from_run("first", project, mode="continue")
    hyper = loaded.with_overrides()["hyperparameters"]
    assert hyper["weights"] == "custom"
    assert hyper["weights_path"] == f"/mmdetection-3/{folder.name}/{best}"
    with api_client(controller, default_project=project) as client:
        answer = client.post(
            "/api/train", json={"from_run": "first", "from_run_mode": "continue",
                                "run_id": "third"},
        )  # fmt: skip
        assert answer.status_code == 200, answer.json()
        _wait(controller)
    config = (root / "app_data" / "third" / "config.py").read_text()
    load_from = config.split("load_from = ")[1].split("\n")[0].strip("'\"")
    start = torch.load(load_from, map_location="cpu", weights_only=False)["state_dict"]
    trained = torch.load(folder / best, map_location="cpu", weights_only=False)["state_dict"]
    assert all(torch.equal(start[k], trained[k]) for k in trained)  # started from its best


def test_cli_from_run_shows_the_runs_settings_with_the_options_given_over_them(uploaded, tmp_path):
    root, _, folder, _ = uploaded
    common = ["--app-data", str(tmp_path / "app"), "--team-files", str(root / "team"), "--dry-run"]
    result = run_cli("train", "--from-run", "first", "--lr", "0.0001", *common)
    assert result.returncode == 0, result.stderr
    assert "settings from run first" in result.stdout
    assert "schedule     1 epochs, batch 2, AdamW lr 0.0001" in result.stdout  # == the default
    assert (
        "classes      square, circle" in result.stdout and "train        9 images" in result.stdout
    )
    # a run's folder (a copy of it on this machine) works as well, continue included
    copy = shutil.copytree(folder, tmp_path / "copy")
    result = run_cli("train", "--from-run", str(copy), "--from-run-mode", "continue", *common)
    assert result.returncode == 0, result.stderr
    assert f"weights      custom: {copy.resolve()}/best_" in result.stdout
    # refusals: one line each
    result = run_cli("train", "--from-run", "first", "--resume", *common)
    assert result.returncode == 2 and "--from-run and --resume contradict" in result.stderr
    result = run_cli("train", "--from-run", "nope", *common)
    assert result.returncode != 0 and "runs there: first" in result.stderr


def test_api_from_run_refusals_name_the_problem(uploaded):
    _, controller, _, project = uploaded
    with api_client(controller, default_project=project) as client:
        for body, said in [
            ({"from_run": "first", "resume": "first"}, "from_run and resume contradict"),
            ({"from_run": 7}, "from_run must be a run id"),
            ({"from_run": "first", "from_run_mode": "again"}, "from_run_mode must be"),
            ({"from_run": "nope"}, "no uploaded run 'nope'"),
            ({"from_run": "../x"}, "is not allowed"),
            ({"from_run": "first", "hyperparameters": {"lr": "fast"}}, "lr must be a number"),
        ]:
            answer = client.post("/api/train", json=body)
            assert answer.status_code == 400 and said in answer.json()["error"], answer.json()


def test_a_state_that_does_not_hold_in_the_project_loads_as_far_as_it_does(uploaded, hard_project):
    """Another project (other classes, nested datasets): its classes and images are gone; a
    newer version's setting is dropped, an ill-typed one too; each is said."""
    _, _, folder, _ = uploaded
    state = json.loads((folder / "app_state.json").read_text())
    state["app_state_version"] = 99
    state["hyperparameters"]["a_future_setting"] = 1
    state["hyperparameters"]["epochs"] = "many"
    state["classes"] = ["square", "hexagon"]
    state["split"]["train_items"] = ["gone/img_1.png", "gone/img_2.png"]
    project = open_local_project(hard_project)
    loaded = load_app_state(state, project)
    notes = " | ".join(loaded.notes)
    assert "another version of the app (format 99" in notes
    assert "a_future_setting" in notes and "epochs must be a whole number" in notes
    assert "classes hexagon are not in project" in notes
    assert "2 images of the experiment's train split are not in the project" in notes
    assert "the default split is used instead" in notes
    assert loaded.body["classes"] == ["square"] and "split" not in loaded.body
    assert loaded.body["hyperparameters"]["lr"] == 0.003  # what holds is kept
    assert "epochs" not in loaded.body["hyperparameters"]


def test_a_run_of_an_older_version_without_app_state_loads_its_hyperparameters(own_copy):
    root, controller, folder, project = own_copy
    old = shutil.copytree(folder, root / "team" / "mmdetection-3" / "old1_demo")
    (old / "app_state.json").unlink()
    info = json.loads((old / "experiment_info.json").read_text())
    info["experiment_name"] = info["experiment_name"].replace("first", "old1", 1)
    info.pop("app_state")
    (old / "experiment_info.json").write_text(json.dumps(info))
    controller.catalog.forget()
    loaded = controller.from_run("old1", project)
    assert "an older version of the app trained it" in loaded.notes[0]
    assert loaded.body["hyperparameters"]["lr"] == 0.003
    assert loaded.body["classes"] == ["square", "circle"] and loaded.body["model"] == MODEL


def test_a_resume_for_more_epochs_records_them_in_the_runs_settings(uploaded, own_copy):
    root, controller, _, _ = own_copy
    shared_root, _, shared_folder, _ = uploaded
    shared_files = sorted(p.name for p in (shared_root / "app_data" / "first").rglob("*"))
    controller.resume("first", epochs=2)
    _wait(controller)
    folder = next((root / "team" / "mmdetection-3").glob("first_*"))
    state = json.loads((folder / "app_state.json").read_text())
    assert state["hyperparameters"]["epochs"] == 2  # train again: as long as it trained
    assert state["hyperparameters"]["lr"] == 0.003  # the rest as it was
    # resumed in its own copy: the run the other tests read is as it was trained
    shared = json.loads((shared_folder / "app_state.json").read_text())
    assert shared["hyperparameters"]["epochs"] == 1
    assert sorted(p.name for p in (shared_root / "app_data" / "first").rglob("*")) == shared_files
