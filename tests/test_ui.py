"""The widgets UI, driven the way the page drives it: POST /<widget_id>/<route> with the state,
then read /sly/state and /sly/data. One app per process (sly.Application is a singleton): the
tests share it, so each one first sets the page it needs (``small_run_page``); the run the page
trains, stops, resumes and uploads is trained once (``trained``) for the tests that read it; the
locks of a fresh page are tested in an app process of their own. Any test passes alone and in
any order."""

from __future__ import annotations

import importlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.helpers import API_TOKEN, AppProcess, free_port

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture(scope="session")
def ui(tmp_path_factory, demo_project):
    """The app, built once per process from its environment (read only while src.web.main is
    imported, then restored, so that no other test sees it): sly.Application is a singleton."""
    root = tmp_path_factory.mktemp("ui")
    mp = pytest.MonkeyPatch()
    mp.setenv("PROJECT_DIR", str(demo_project))
    mp.setenv("SLY_APP_DATA_DIR", str(root / "app_data"))
    mp.setenv("TEAM_FILES_DIR", str(root / "team"))
    mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
    mp.setenv("TRAIN_MMDET3_API_TOKEN", API_TOKEN)
    try:
        main = importlib.import_module("src.web.main")
    finally:
        mp.undo()
    with TestClient(main.app.get_server(), headers=AUTH) as client:
        yield client, main.app, root


def state(client) -> dict:
    return client.post("/sly/state", json={}).json()


def data(client) -> dict:
    return client.post("/sly/data", json={}).json()


def post(client, route: str, st: dict | None = None):
    response = client.post(route, json={"state": st or state(client), "context": {}})
    assert response.status_code == 200, response.text
    return response


def choose_rtmdet(client) -> None:
    st = state(client)
    st["model_arch"]["value"] = "RTMDet"
    post(client, "/model_arch/value_changed", st)


def set_small_run(st: dict) -> dict:
    st["hp_epochs"]["value"] = 6
    st["hp_train_bs"]["value"] = 2
    st["hp_val_bs"]["value"] = 2
    st["hp_workers"]["value"] = 0
    st["hp_size"]["value"] = 128
    st["hp_lr"]["value"] = 0.002
    st["hp_seed"]["value"] = 3
    st["model_pre"]["checked"] = False
    st["split_tabs"]["value"] = "By datasets"
    return st


CLASSES = ["square", "circle", "triangle"]


def small_run_page(client) -> dict:
    """The page set for a small RTMDet run from scratch, whatever an earlier test left on it: no
    edits in the Config step and not in advanced mode, object detection, the Pretrained tab with
    RTMDet's default model, the light preset, every class. Returns the state with the small
    run's values (``set_small_run``), not posted yet."""
    post(client, "/cfg_discard/button_clicked_cb")
    st = state(client)
    st["cfg_advanced"]["value"] = False
    post(client, "/cfg_advanced/value_changed", st)
    st = state(client)
    st["task_radio"]["value"] = "object-detection"
    post(client, "/task_radio/value_changed", st)
    st = state(client)
    st["model_tabs"]["value"] = "Pretrained"
    st["model_arch"]["value"] = "RTMDet"
    post(client, "/model_arch/value_changed", st)
    st = state(client)
    st["aug_preset"]["value"] = "light"
    post(client, "/aug_preset/value_changed", st)
    st = set_small_run(state(client))
    st["classes_select"]["value"] = list(CLASSES)
    return st


def wait_state(client, states, timeout=300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.get("/api/status").json()
        final = status["state"] in ("finished", "stopped", "failed")
        if status["state"] in states and not (final and status["busy"]):
            return status
        time.sleep(0.1)
    raise AssertionError(f"never reached {states}: {status}")


def switch_task_there_and_back(client) -> None:
    """Instance segmentation lists the segmentation zoo; then back to object detection."""
    st = state(client)
    st["task_radio"]["value"] = "instance-segmentation"
    post(client, "/task_radio/value_changed", st)
    assert any(item["value"] == "RTMDet-Ins" for item in data(client)["model_arch"]["items"])
    st = state(client)
    st["task_radio"]["value"] = "object-detection"
    post(client, "/task_radio/value_changed", st)


def locked(client, card: str) -> bool:
    disabled = state(client)[card]["disabled"]  # a bool until the card is first locked
    return bool(disabled["disabled"] if isinstance(disabled, dict) else disabled)


def test_the_app_server_guards_its_http_api(ui):
    """Through the real app (the SDK's middleware included): no token, 401; a JSON array body,
    a JSON 400 (the SDK's middleware alone would answer a plain-text 500); the page's own
    routes need no token from this machine while the server listens here only (an in-process
    client listens nowhere), and need it from any other address (tests/test_access.py has the
    rule in full)."""
    client, app, _ = ui
    bare = {"Authorization": ""}
    assert client.get("/api/status", headers=bare).status_code == 401
    assert client.post("/api/train", json={"config": "x = 1"}, headers=bare).status_code == 401
    response = client.post("/api/train", json=[1, 2])
    assert response.status_code == 400 and "JSON object" in response.json()["error"]
    server = app.get_server()
    local = TestClient(server, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 50000))
    assert local.post("/sly/state", json={}).status_code == 200
    assert local.get("/api/status").status_code == 401
    remote = TestClient(server, base_url="http://192.0.2.2:8000", client=("192.0.2.9", 50000))
    assert remote.post("/sly/state", json={}).status_code == 401
    assert remote.post("/sly/state", json={}, headers=AUTH).status_code == 200


def test_step_titles_are_numbered_in_the_order_of_the_step_list(ui):
    """The page numbers its cards from ``AppUI.steps`` (one list), not from numbers written
    into each step's title: what the page shows is the order the steps unlock in."""
    client, app, _ = ui
    page = data(client)
    titles = [page[step.card.widget_id]["title"] for step in app.ui.steps]
    assert titles == [
        "1. Input project", "2. Task", "3. Model", "4. Classes", "5. Train/val split",
        "6. Augmentations", "7. Hyperparameters", "8. Config", "9. Training",
    ]  # fmt: skip


@pytest.fixture
def fresh_page(tmp_path, demo_project):
    """A page no test has touched: the app in a process of its own (``uvicorn src.web.main:app``;
    sly.Application is one per process), driven over HTTP from this machine (the page's routes
    need no token here)."""
    port = free_port()
    env = {
        "PROJECT_DIR": str(demo_project),
        "SLY_APP_DATA_DIR": str(tmp_path / "app_data"),
        "TEAM_FILES_DIR": str(tmp_path / "team"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    app = AppProcess(env, "127.0.0.1", port)
    try:
        app.wait_for_line("Listening on", timeout=180)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client
    finally:
        app.close()


def test_steps_unlock_in_order_and_stay_open(fresh_page):
    client = fresh_page
    # the page opens on the zoo's first architecture, with its default model first
    assert data(client)["model_table"]["raw_rows_data"][0][0] == "dino-4scale_r50_8xb2-12e_coco"
    cards = ["card_task", "card_model", "card_classes", "card_split", "card_aug", "card_hp"]
    assert not locked(client, "card_project")
    assert all(locked(client, card) for card in [*cards, "card_config", "card_training"])
    post(client, "/next_1/button_clicked_cb")
    assert not locked(client, "card_task") and locked(client, "card_model")
    post(client, "/next_2/button_clicked_cb")
    post(client, "/next_3/button_clicked_cb")
    assert not locked(client, "card_classes") and locked(client, "card_split")
    # a step that is not done says why and opens nothing
    st = state(client)
    st["classes_select"]["value"] = []
    post(client, "/next_4/button_clicked_cb", st)
    assert "no classes selected" in data(client)["next_4_msg"]["text"]
    assert locked(client, "card_split")
    st = state(client)
    st["classes_select"]["value"] = ["square", "circle", "triangle"]
    post(client, "/next_4/button_clicked_cb", st)
    post(client, "/next_5/button_clicked_cb")
    post(client, "/next_6/button_clicked_cb")
    assert not any(locked(client, card) for card in cards)
    assert locked(client, "card_config")  # until the config is composed
    # an earlier step can be changed again: the task switch still lists its zoo
    switch_task_there_and_back(client)
    assert not locked(client, "card_hp")


def test_steps_show_the_project_zoo_and_classes(ui):
    client, _, _ = ui
    small_run_page(client)  # object detection
    d = data(client)
    assert "16 images" in d["project_info"]["text"]
    st = state(client)
    st["model_arch"]["value"] = d["model_arch"]["items"][0]["value"]  # the zoo's first
    post(client, "/model_arch/value_changed", st)
    assert data(client)["model_table"]["raw_rows_data"][0][0] == "dino-4scale_r50_8xb2-12e_coco"
    st = state(client)
    st["model_arch"]["value"] = "RTMDet"
    post(client, "/model_arch/value_changed", st)
    rows = data(client)["model_table"]["raw_rows_data"]
    selected = state(client)["model_table"]["selectedRow"]
    assert rows[selected][0] == "rtmdet_tiny_8xb32-300e_coco"  # the architecture's default
    assert [row[0] for row in d["classes_table"]["table_data"]["data"]] == CLASSES
    # the picked model brings its own input size (longer x shorter edge, mmdet's test scale)
    st = state(client)
    assert (st["hp_size"]["value"], st["hp_size_short"]["value"]) == (640, 0)  # RTMDet: square
    st["model_arch"]["value"] = "Faster R-CNN"
    post(client, "/model_arch/value_changed", st)
    st = state(client)
    assert (st["hp_size"]["value"], st["hp_size_short"]["value"]) == (1333, 800)
    choose_rtmdet(client)
    switch_task_there_and_back(client)


def test_the_zoo_leaderboard_lists_every_model_in_the_chosen_order(ui):
    from src.config import zoo
    from src.ui.model import LEADERBOARD

    client, _, _ = ui
    st = state(client)
    st["model_arch"]["value"] = LEADERBOARD
    post(client, "/model_arch/value_changed", st)
    st = state(client)
    st["model_sort"]["value"] = "box AP"
    post(client, "/model_sort/value_changed", st)
    table = data(client)["model_table"]
    rows = table["raw_rows_data"]
    assert len(rows) == len(zoo.list_models("object-detection"))
    assert [h["title"] for h in table["header"][:3]] == ["architecture", "model", "box AP"]
    aps = [float(r[2]) for r in rows if r[2] != "-"]
    assert len({r[0] for r in rows}) > 10 and aps == sorted(aps, reverse=True)
    st = state(client)
    st["model_sort"]["value"] = "zoo order"
    st["model_arch"]["value"] = "RTMDet"
    post(client, "/model_sort/value_changed", st)
    post(client, "/model_arch/value_changed", st)


def test_augmentation_preview_and_a_custom_pipeline(ui):
    """A project image before and after the preset's pipeline, another sample on a button; the
    preset's transforms become an editable custom pipeline; a bad one is named; the custom
    transforms are in the composed config."""
    client, _, _ = ui
    st = small_run_page(client)
    st["aug_preset"]["value"] = "heavy"
    post(client, "/aug_preset/value_changed", st)
    st = state(client)
    assert "PhotoMetricDistortion" in st["aug_pipeline"]["text"]
    assert data(client)["aug_pipeline"]["editor_options"]["readOnly"] is True
    post(client, "/aug_preview_btn/button_clicked_cb", st)
    d = data(client)
    assert d["aug_message"]["text"] == "", d["aug_message"]
    first = (d["aug_before"]["url"], d["aug_after"]["url"], d["aug_caption"]["text"])
    assert all(url.startswith("data:image/jpeg;base64,") and len(url) < 60_000
               for url in first[:2])  # fmt: skip
    assert "after the training pipeline: " in first[2]
    post(client, "/aug_resample/button_clicked_cb")
    d = data(client)
    assert d["aug_caption"]["text"] != first[2]  # another sample (a new draw, maybe a new image)

    # custom: the heavy preset's text, now editable; a typo is named, the fix previews
    st = state(client)
    st["aug_preset"]["value"] = "custom"
    post(client, "/aug_preset/value_changed", st)
    assert data(client)["aug_pipeline"]["editor_options"]["readOnly"] is False
    st = state(client)
    assert "PhotoMetricDistortion" in st["aug_pipeline"]["text"]  # started from the preset
    st["aug_pipeline"]["text"] = "- {type: RandomFlipp, prob: 1.0}\n"
    post(client, "/aug_preview_btn/button_clicked_cb", st)
    message = data(client)["aug_message"]
    assert "transform 1 (RandomFlipp) is not an mmdet or mmcv transform" in message["text"]
    post(client, "/compose/button_clicked_cb", st)
    assert "RandomFlipp" in data(client)["compose_message"]["text"]
    st["aug_pipeline"]["text"] = "- {type: RandomFlip, prob: 1.0, direction: vertical}\n"
    post(client, "/aug_preview_btn/button_clicked_cb", st)
    assert data(client)["aug_message"]["text"] == ""
    post(client, "/compose/button_clicked_cb", st)
    assert "config composed" in data(client)["compose_message"]["text"]
    assert "direction='vertical'" in state(client)["cfg_editor"]["text"]
    st = state(client)
    st["aug_preset"]["value"] = "light"
    post(client, "/aug_preset/value_changed", st)


def test_invalid_settings_get_clear_messages_and_start_nothing(ui):
    client, _app, _ = ui
    before = client.get("/api/status").json()  # idle, or a run an earlier test ended
    st = small_run_page(client)
    st["classes_select"]["value"] = []
    st["hp_train_bs"]["value"] = 0
    post(client, "/compose/button_clicked_cb", st)
    message = data(client)["compose_message"]["text"]
    assert "no classes selected" in message
    post(client, "/train_start/button_clicked_cb")
    said = data(client)["train_status"]["text"]
    assert said.startswith("not started") and "no classes selected" in said, said
    after = client.get("/api/status").json()
    assert (after["state"], after["run_id"]) == (before["state"], before["run_id"])
    post(client, "/train_stop/button_clicked_cb")
    assert "nothing to stop" in data(client)["train_status"]["text"]


def test_editor_warns_when_an_edit_drops_the_stride_padding(ui):
    """Valid Python, but images that are not stride multiples would crash the model: say so."""
    client, _, _ = ui
    post(client, "/compose/button_clicked_cb", small_run_page(client))
    st = state(client)
    st["cfg_advanced"]["value"] = True
    post(client, "/cfg_advanced/value_changed", st)
    post(client, "/cfg_validate/button_clicked_cb")
    assert data(client)["cfg_result"]["text"] == "the config is valid"
    st = state(client)
    assert "pad_size_divisor=32" in st["cfg_editor"]["text"]
    st["cfg_editor"]["text"] = st["cfg_editor"]["text"].replace(
        "pad_size_divisor=32", "pad_size_divisor=1"
    )
    post(client, "/cfg_validate/button_clicked_cb", st)
    result = data(client)["cfg_result"]
    assert result["status"] == "warning"
    assert result["text"].startswith("the config is valid, but")
    assert "train_dataloader: images reach the model padded to multiples of 1 px" in result["text"]
    assert "pad_size_divisor=32" in result["text"]
    post(client, "/cfg_discard/button_clicked_cb")
    st = state(client)
    assert "pad_size_divisor=32" in st["cfg_editor"]["text"]
    st["cfg_advanced"]["value"] = False
    post(client, "/cfg_advanced/value_changed", st)


@dataclass
class Trained:
    """The run the page trained, stopped, resumed and uploaded."""

    run_id: str
    stopped_at: int  # the iteration Stop ended the first session at
    page: dict  # the page's data once the resumed run finished and was uploaded
    folder: Path  # its folder in (the local) Team Files


def train_stop_resume_finish(client, app, root) -> Trained:
    """Compose, edit the text in advanced mode (the edit is never lost), start, stop, resume from
    the Resume tab, finish: each step checks what the page shows as it goes."""
    st = small_run_page(client)
    st["hp_sync"]["value"] = 1  # copy each epoch's checkpoint to (the local) Team Files
    post(client, "/compose/button_clicked_cb", st)
    assert "config composed" in data(client)["compose_message"]["text"]
    st = state(client)
    assert not st["card_config"]["disabled"]["disabled"]
    text = st["cfg_editor"]["text"]
    assert "max_keep_ckpts=2" in text and "batch_size=2" in text

    # advanced mode: edit the text, then change a setting: the edit is kept, the change shown
    st["cfg_advanced"]["value"] = True
    post(client, "/cfg_advanced/value_changed", st)
    st = state(client)
    edited = st["cfg_editor"]["text"].replace("max_keep_ckpts=2", "max_keep_ckpts=7")
    st["cfg_editor"]["text"] = edited
    st["hp_train_bs"]["value"] = 3
    post(client, "/compose/button_clicked_cb", st)
    st, d = state(client), data(client)
    assert st["cfg_editor"]["text"] == edited  # not overwritten
    assert "train_dataloader.batch_size: 2 -> 3" in d["cfg_pending"]["text"]
    assert d["cfg_pending_box"]["hide"] is False
    # starting with an undecided change is refused
    post(client, "/train_start/button_clicked_cb", st)
    assert "pending" in data(client)["compose_message"]["text"]
    # the user applies the change: batch size 3 and the edit both in the text
    post(client, "/cfg_apply/button_clicked_cb")
    text = state(client)["cfg_editor"]["text"]
    assert "max_keep_ckpts=7" in text and "batch_size=3" in text
    post(client, "/cfg_validate/button_clicked_cb")
    assert data(client)["cfg_result"]["text"] == "the config is valid"

    # start: charts grow while training; the server answers meanwhile
    post(client, "/train_start/button_clicked_cb")
    d = data(client)
    assert "not started" not in d["train_status"]["text"], d["train_status"]
    status = wait_state(client, {"training", "validating"})
    run_id = status["run_id"]
    deadline = time.time() + 120
    while time.time() < deadline:
        series = {s["name"]: s["data"] for s in data(client)["train_losses"]["series"]}
        if len(series.get("loss", [])) >= 6:  # past epoch 1, whose end is logged
            break
        time.sleep(0.1)
    assert len(series["loss"]) >= 3 and "loss_cls" in series
    # the augmentation preview would draw from the run's random generators: refused meanwhile
    post(client, "/aug_preview_btn/button_clicked_cb")
    said = data(client)["aug_message"]["text"]
    assert "off while a run is in progress" in said, (said, client.get("/api/status").json())
    post(client, "/train_stop/button_clicked_cb")
    status = wait_state(client, {"stopped"})
    stopped_at = status["iteration"]
    app.ui.training.wait(30)
    assert "Team Files holds the checkpoint of iteration" in data(client)["train_status"]["text"]
    work_dir = root / "app_data" / run_id
    trained = (work_dir / "config.py").read_text()
    assert "max_keep_ckpts=7" in trained  # the edited text is what trains

    # resume from the Resume tab; charts continue from the run's logged history
    post(client, "/model_runs_refresh/button_clicked_cb")
    st = state(client)
    runs = data(client)["model_runs"]["raw_rows_data"]
    st["model_tabs"]["value"] = "Resume"
    st["model_runs"]["selectedRow"] = next(i for i, r in enumerate(runs) if r[0] == run_id)
    post(client, "/train_start/button_clicked_cb", st)
    status = wait_state(client, {"finished", "failed"}, timeout=600)
    assert status["state"] == "finished", status
    assert status["run_id"] == run_id
    app.ui.training.wait(30)
    [folder] = (root / "team" / "mmdetection-3").glob(f"{run_id}_*")
    return Trained(run_id, stopped_at, data(client), folder)


@pytest.fixture(scope="module")
def trained(ui) -> Trained:
    """The page's run, trained once for the tests that read it (``train_stop_resume_finish``)."""
    client, app, root = ui
    return train_stop_resume_finish(client, app, root)


@pytest.mark.slow
def test_compose_edit_never_lost_start_stop_resume_finish(trained):
    """The flow checks each step as it goes (``train_stop_resume_finish``); then the page shows
    the finished run: its artifacts, validation previews, evaluation, and charts that continue
    the stopped session's history."""
    d = trained.page
    assert "artifacts:" in d["train_artifacts"]["text"]
    # after each validation: a few validation images, ground truth | predictions, small JPEGs
    previews = [d[f"train_val_img_{i}"]["url"] for i in range(4)]
    assert all(url.startswith("data:image/jpeg;base64,") for url in previews)
    assert max(len(url) for url in previews) < 60_000  # bounded: the page data stays small
    assert "ground truth | predictions" in d["train_val_caption"]["text"]
    # the Training step shows the evaluation's key metrics and where its report is
    assert "evaluation of " in d["train_evaluation"]["text"]
    assert "/evaluation/report.html" in d["train_evaluation"]["text"]
    losses = {s["name"]: s["data"] for s in d["train_losses"]["series"]}
    # history restored from the run's logged scalars: points from before the stop come first
    xs = [x for x, _ in losses["loss"]]
    assert xs[0] <= trained.stopped_at and xs == sorted(xs) and xs[-1] > trained.stopped_at
    maps = {s["name"]: s["data"] for s in d["train_map"]["series"]}
    assert len(maps["bbox_mAP"]) >= 1
    assert (trained.folder / "config.py").is_file()


@pytest.mark.slow
def test_start_from_an_experiment_fills_every_step_and_keeps_its_edited_config(ui, trained):
    """The page's run, uploaded with its settings (app_state.json), chosen in "Start from an
    experiment": every step shows what it trained with, still editable; its edited config comes
    back as the user's edit; "continue" puts its best checkpoint in the Custom weights tab."""
    client, app, _ = ui
    # the run's TensorBoard, served by the app beside its charts (the button opens it)
    assert data(client)["train_tensorboard"]["link"] == "/tensorboard/"
    deadline = time.time() + 90
    while time.time() < deadline:
        tags = client.get("/tensorboard/data/plugin/scalars/tags")
        if tags.status_code == 200 and tags.json():
            break
        time.sleep(0.5)
    assert any("loss" in run_tags for run_tags in tags.json().values()), tags.text
    run_dir, run_id = trained.folder, trained.run_id
    assert json.loads((run_dir / "app_state.json").read_text())["run_id"] == run_id
    post(client, "/exp_refresh/button_clicked_cb")
    assert run_id in [item["value"] for item in data(client)["exp_select"]["items"]]
    st = state(client)  # other values first: the load must replace them
    st["hp_epochs"]["value"], st["hp_lr"]["value"], st["hp_seed"]["value"] = 20, 0.01, 0
    st["classes_select"]["value"] = ["square"]
    st["split_tabs"]["value"] = "Random"
    st["model_pre"]["checked"] = True
    st["exp_select"]["value"], st["exp_mode"]["value"] = run_id, "new"
    post(client, "/exp_load/button_clicked_cb", st)
    st, d = state(client), data(client)
    assert f"Loaded its settings from run {run_id}" in d["exp_message"]["text"], d["exp_message"]
    assert (st["hp_epochs"]["value"], st["hp_lr"]["value"], st["hp_seed"]["value"]) == (6, 0.002, 3)
    assert (st["hp_train_bs"]["value"], st["hp_size"]["value"]) == (3, 128)
    assert st["classes_select"]["value"] == ["square", "circle", "triangle"]
    assert st["split_tabs"]["value"] == "By datasets" and st["model_pre"]["checked"] is False
    assert st["model_tabs"]["value"] == "Pretrained"
    rows = d["model_table"]["raw_rows_data"]
    assert rows[st["model_table"]["selectedRow"]][0] == "rtmdet_tiny_8xb32-300e_coco"
    assert not locked(client, "card_hp")
    post(client, "/compose/button_clicked_cb")
    text = state(client)["cfg_editor"]["text"]
    assert "max_keep_ckpts=7" in text and "batch_size=3" in text  # its edit, as it trained
    assert "trains as written" in data(client)["cfg_result"]["text"]
    assert app.ui.request().params.lr == 0.002

    st = state(client)
    st["exp_mode"]["value"] = "continue"
    post(client, "/exp_load/button_clicked_cb", st)
    st = state(client)
    best = json.loads((run_dir / "experiment_info.json").read_text())["best_checkpoint"]
    assert st["model_tabs"]["value"] == "Custom weights"
    assert st["model_w"]["value"] == f"/mmdetection-3/{run_dir.name}/{best}"
    post(client, "/compose/button_clicked_cb")
    assert "config composed" in data(client)["compose_message"]["text"]
    post(client, "/cfg_discard/button_clicked_cb")  # the next tests compose their own


@pytest.mark.slow
def test_custom_weights_given_as_team_files_paths_compose(ui, trained):
    """The Model step offers Team Files paths for custom weights: Compose fetches them (as
    Start does) instead of answering "does not exist"."""
    client, _app, _ = ui
    run_dir = trained.folder
    checkpoint = sorted(p.name for p in run_dir.glob("*.pth"))[0]
    remote = f"/mmdetection-3/{run_dir.name}"
    st = small_run_page(client)
    st["model_tabs"]["value"] = "Custom weights"
    st["model_w"]["value"] = f"{remote}/{checkpoint}"
    st["model_cfg"]["value"] = f"{remote}/config.py"
    post(client, "/compose/button_clicked_cb", st)
    message = data(client)["compose_message"]["text"]
    assert "config composed" in message, message


@pytest.mark.slow
def test_custom_weights_picked_from_earlier_runs_find_their_config(ui, trained, tmp_path):
    """The picker lists the checkpoints of runs in (the local) Team Files; picking one fills
    the path, and Compose uses the config.py beside it. A checkpoint with no config beside it
    is refused with what to do."""
    client, _app, root = ui
    post(client, "/model_ckpt_refresh/button_clicked_cb")
    items = [i["value"] for i in data(client)["model_ckpt_pick"]["items"]]
    assert items and all(i.startswith("/mmdetection-3/") and i.endswith(".pth") for i in items)
    assert any(i.startswith(f"/mmdetection-3/{trained.folder.name}/") for i in items)
    st = small_run_page(client)
    st["model_tabs"]["value"] = "Custom weights"
    st["model_ckpt_pick"]["value"] = items[-1]
    post(client, "/model_ckpt_pick/value_changed", st)
    st = state(client)
    assert st["model_w"]["value"] == items[-1] and st["model_cfg"]["value"] == ""
    post(client, "/compose/button_clicked_cb", st)
    message = data(client)["compose_message"]["text"]
    assert "config composed" in message, message

    lone = tmp_path / "lone" / "weights.pth"
    lone.parent.mkdir()
    lone.write_bytes((root / "team" / items[-1].lstrip("/")).read_bytes())
    st["model_w"]["value"] = str(lone)
    post(client, "/compose/button_clicked_cb", st)
    message = data(client)["compose_message"]["text"]
    assert f"no config.py beside the checkpoint {lone}" in message, message


@pytest.mark.slow
def test_custom_weights_picked_from_a_folder_of_this_machine(ui, trained, tmp_path):
    """Off the platform the Custom weights tab searches a local folder for checkpoints: each is
    listed with whether its config.py is beside it, picking fills the path, and Compose uses
    that config. A folder that does not exist says so."""
    client, _app, _ = ui
    source = trained.folder
    root = tmp_path
    mine = root / "downloads" / "old app" / "run 7"
    mine.mkdir(parents=True)
    checkpoint = sorted(source.glob("*.pth"))[0]
    (mine / "model.pth").write_bytes(checkpoint.read_bytes())
    (mine / "config.py").write_text((source / "config.py").read_text())
    (mine.parent / "lone.pth").write_bytes(b"x")
    st = state(client)
    st["model_local_dir"]["value"] = str(root / "downloads")
    post(client, "/model_local_find/button_clicked_cb", st)
    items = {i["value"]: i["label"] for i in data(client)["model_local_pick"]["items"]}
    assert items == {
        str(mine.parent / "lone.pth"): str(mine.parent / "lone.pth") + "  (no config.py beside)",
        str(mine / "model.pth"): str(mine / "model.pth"),
    }
    assert data(client)["model_local_message"]["text"] == "2 checkpoints found"
    st = small_run_page(client)
    st["model_tabs"]["value"] = "Custom weights"
    st["model_local_pick"]["value"] = str(mine / "model.pth")
    post(client, "/model_local_pick/value_changed", st)
    st = state(client)
    assert st["model_w"]["value"] == str(mine / "model.pth") and st["model_cfg"]["value"] == ""
    post(client, "/compose/button_clicked_cb", st)
    message = data(client)["compose_message"]["text"]
    assert "config composed" in message, message

    st["model_local_dir"]["value"] = str(root / "nowhere")
    post(client, "/model_local_find/button_clicked_cb", st)
    assert (
        "is not a folder: give a folder of this machine"
        in (data(client)["model_local_message"]["text"])
    )
    assert data(client)["model_local_pick"]["items"] == []


# ---------------------------------------------------------------- after training: the two cards
def wait_text(client, widget: str, done, what: str, timeout: float = 600) -> str:
    """The text of ``widget`` once ``done(text)`` holds (a deadline, then the last text)."""
    deadline = time.monotonic() + timeout
    while True:
        text = data(client)[widget]["text"]
        if done(text):
            return text
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s; last: {text}"
        time.sleep(0.1)


def test_the_prelabel_card_asks_for_a_run_and_the_audit_card_for_a_zoo_model(ui):
    """What the cards cannot start with is said on them, and nothing starts."""
    client, app, root = ui
    st = state(client)
    for bad in ("", ["../../etc"], 7):  # what the page's state can hold, not only the list's
        app.ui.prelabel.status.set("", "text")  # each case says it again
        st["prelabel_run"]["value"] = bad
        post(client, "/prelabel_start/button_clicked_cb", st)
        assert "choose a run first" in data(client)["prelabel_status"]["text"]
    st["prelabel_run"]["value"] = "any_run"
    st["prelabel_datasets"]["value"] = ["train", 3]  # checked as the API's body is
    app.ui.prelabel.status.set("", "text")
    post(client, "/prelabel_start/button_clicked_cb", st)
    assert "datasets must be a list of dataset names" in data(client)["prelabel_status"]["text"]
    st["prelabel_datasets"]["value"] = []  # the page as it was
    post(client, "/prelabel_refresh/button_clicked_cb", st)
    st = small_run_page(client)
    st["model_tabs"]["value"] = "Custom weights"
    post(client, "/audit_start/button_clicked_cb", st)
    assert "the audit trains a zoo model" in data(client)["audit_status"]["text"]
    st = small_run_page(client)
    st["classes_select"]["value"] = []
    post(client, "/audit_start/button_clicked_cb", st)
    assert "no classes selected" in data(client)["audit_status"]["text"]
    for bad in ("3; rm -rf", 1, 500, 2.5):
        st = small_run_page(client)
        st["audit_folds"]["value"] = bad
        app.ui.audit.status.set("", "text")
        post(client, "/audit_start/button_clicked_cb", st)
        assert "folds must be a whole number" in data(client)["audit_status"]["text"]
    st["audit_folds"]["value"] = 5  # the page as it was (the state travels with any post)
    post(client, "/prelabel_refresh/button_clicked_cb", st)
    assert app.ui.audit.audits.status()["state"] == "idle"
    assert not (root / "app_data" / "_audits").exists()


@pytest.mark.slow
def test_the_prelabel_card_labels_a_copy_with_the_run_the_page_trained(trained, ui):
    """The run just trained is offered; with "labelled images too" its predictions are added
    beside the labels in a copy under app data, and the project is left as it was."""
    client, app, root = ui
    post(client, "/prelabel_refresh/button_clicked_cb")
    offered = [item["value"] for item in data(client)["prelabel_run"]["items"]]
    assert offered[0] == trained.run_id
    st = state(client)
    st["prelabel_run"]["value"] = trained.run_id
    st["prelabel_overwrite"]["checked"] = True
    post(client, "/prelabel_start/button_clicked_cb", st)
    text = wait_text(client, "prelabel_status", lambda t: not t.startswith("pre-labelling"),
                     "the pre-labelling's end")  # fmt: skip
    assert text.startswith("pre-labelled 16 of 16 images"), text
    out = Path(text.split("copy: ")[1].split(";")[0])
    assert out.parent == root / "app_data" / "_prelabelled"
    from src.data.reader import list_items
    from src.prelabel.labels import CONFIDENCE_TAG

    project = app.ui.project.directory
    before = {n: json.loads(p.read_text())["objects"] for n, p in list_items(project)}
    after = {n: json.loads(p.read_text())["objects"] for n, p in list_items(out)}
    assert after.keys() == before.keys()
    added: dict[str, int] = {}
    for name, objects in before.items():
        assert after[name][: len(objects)] == objects  # the labels are kept, first
        for obj in after[name][len(objects) :]:  # then the predictions, each with its score
            assert CONFIDENCE_TAG in [t["name"] for t in obj["tags"]]
            added[obj["classTitle"]] = added.get(obj["classTitle"], 0) + 1
    said = ", ".join(f"{c} {n}" for c, n in sorted(added.items())) or "none"
    assert f"objects added: {said};" in text  # what the card says is what the copy holds

    # "when its training finishes": what the platform's end of a finished run calls
    import threading

    ended = threading.Event()
    assert not app.ui.prelabel.after_run(trained.run_id, ended.set)  # not checked: nothing
    st = state(client)
    st["prelabel_after"]["checked"] = True
    post(client, "/prelabel_refresh/button_clicked_cb", st)
    assert app.ui.prelabel.after_run(trained.run_id, ended.set)
    assert ended.wait(300), "the pre-labelling after the run never ended"
    assert data(client)["prelabel_status"]["text"].startswith("pre-labelled 16 of 16 images")
    st = state(client)
    st["prelabel_after"]["checked"] = False  # the page as it was
    post(client, "/prelabel_refresh/button_clicked_cb", st)


@pytest.mark.slow
def test_the_audit_card_audits_with_the_steps_settings_and_says_what_it_found(ui):
    client, app, root = ui
    st = small_run_page(client)
    st["hp_epochs"]["value"] = 1
    st["hp_size"]["value"] = 64
    st["audit_folds"]["value"] = 2
    post(client, "/audit_start/button_clicked_cb", st)
    text = wait_text(client, "audit_status", lambda t: " done in " in t or "failed" in t,
                     "the audit's end", timeout=900)  # fmt: skip
    assert " done in " in text, text
    audit_id = app.ui.audit.last_id
    outputs = root / "app_data" / "_audits" / audit_id / "outputs"
    assert f"report: {outputs / 'report.html'}" in text
    suspects = json.loads((outputs / "suspects.json").read_text())
    assert suspects["model"] == "rtmdet_tiny_8xb32-300e_coco" and len(suspects["folds"]) == 2
    assert suspects["images"] == 16
