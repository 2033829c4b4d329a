"""Pre-labelling (src/prelabel/, docs/after-training.md) with no training: a run folder made of the
config ``train --dry-run`` composes and a checkpoint of the model's own initial weights (seeded,
as tests/engine/test_onnx_export.py's ``_initial_weights``), with per-class thresholds in its
meta. RTMDet's initial head scores every box about 0.01, so a threshold of 0.005 keeps boxes and
0.5 none: enough to see which images get predictions, which classes, and which thresholds.

The CLI (``predict RUN_ID --project``) and the HTTP API (``POST /api/prelabel``) both go through
``TrainingController.prelabel``."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from src.cli import main
from src.data.demo import CLASSES
from src.data.reader import list_items
from src.prelabel.labels import CONFIDENCE_TAG
from tests.prelabel.conftest import HIGH, LOW, MODEL, UNLABELLED


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def prelabelled(project, app_data, tmp_path_factory) -> tuple[Path, dict[str, str], str]:
    """The CLI's copy (default thresholds: the checkpoint's), the project's digest before, and
    what it printed."""
    before = _digest(project)
    out = tmp_path_factory.mktemp("out") / "copy"
    code = main(["predict", "r1", "--project", str(project), "--out", str(out),
                 "--app-data", str(app_data)])  # fmt: skip
    assert code == 0
    return out, before, ""


def _annotations(root: Path) -> dict[str, dict]:
    return {name: json.loads(p.read_text()) for name, p in list_items(root)}


def test_unlabelled_images_get_predictions_with_confidence_tags_and_labelled_ones_do_not(
    project, prelabelled
):
    out, before, _ = prelabelled
    original, copied = _annotations(project), _annotations(out)
    assert copied.keys() == original.keys()
    assert any(n.startswith("train/extra/") for n in copied)  # nested datasets are kept
    predicted = []
    for name, ann in copied.items():
        if name.startswith(UNLABELLED):
            predicted += ann["objects"]
        else:
            assert ann == original[name]  # labelled: left as it was
    assert predicted  # the unlabelled images got boxes (scores about 0.01)
    for obj in predicted:
        assert obj["geometryType"] == "rectangle"
        (score,) = [t["value"] for t in obj["tags"] if t["name"] == CONFIDENCE_TAG]
        assert obj["classTitle"] == CLASSES[0] and score >= LOW  # HIGH kept the others out
    assert _digest(project) == before  # the project itself is byte-identical


def test_the_copy_reads_back_in_the_sdk_with_its_meta(project, prelabelled):
    import supervisely as sly

    out, _, _ = prelabelled
    copy = sly.Project(str(out), sly.OpenMode.READ)
    meta = copy.meta
    assert meta.get_tag_meta(CONFIDENCE_TAG).value_type == sly.TagValueType.ANY_NUMBER
    assert [c.name for c in meta.obj_classes] == [c.name for c in sly.Project(
        str(project), sly.OpenMode.READ).meta.obj_classes]  # fmt: skip
    objects = 0
    for dataset in copy.datasets:
        for item in dataset:
            ann = dataset.get_ann(item, meta)  # validates every object and tag against meta
            objects += len(ann.labels)
            for label in ann.labels:
                if label.tags.get(CONFIDENCE_TAG) is not None:
                    assert 0 < label.tags.get(CONFIDENCE_TAG).value <= 1
    assert objects
    image = next(iter(Path(out).rglob("img/*")))
    assert image.read_bytes() == (project / image.relative_to(out)).read_bytes()


def test_with_overwrite_labelled_the_chosen_datasets_get_predictions_beside_their_labels(
    project, app_data, tmp_path
):
    """``--datasets train --overwrite-labelled --score-thr LOW``: the labelled ``train`` images
    keep every label and get predictions of any class; ``train/extra`` and ``val`` are not
    predicted (not chosen), unlabelled as they are."""
    out = tmp_path / "copy"
    (out).mkdir()  # an empty folder is taken
    code = main(["predict", "r1", "--project", str(project), "--out", str(out), "--datasets",
                 "train", "--overwrite-labelled", "--score-thr", str(LOW),
                 "--app-data", str(app_data)])  # fmt: skip
    assert code == 0
    original, copied = _annotations(project), _annotations(out)
    added = []
    for name, ann in copied.items():
        before = original[name]["objects"]
        if name.startswith("train/") and not name.startswith("train/extra/"):
            assert ann["objects"][: len(before)] == before and before  # labels kept, first
            added += ann["objects"][len(before) :]
        else:
            assert ann == original[name]
    assert added and {o["classTitle"] for o in added} - {CLASSES[0]}  # one threshold for all
    assert all(t["value"] >= LOW for o in added for t in o["tags"])


def test_an_out_folder_that_holds_anything_or_overlaps_the_project_is_refused(
    project, app_data, tmp_path, capsys
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = _digest(project)
    for target, reason in ((out, "is not empty"), (project / "copy", "overlaps the project")):
        code = main(["predict", "r1", "--project", str(project), "--out", str(target),
                     "--app-data", str(app_data)])  # fmt: skip
        assert code == 2 and reason in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "mine" and _digest(project) == before
    code = main(["predict", "r2", "--project", str(project), "--out", str(tmp_path / "new"),
                 "--app-data", str(app_data)])  # fmt: skip
    assert code == 2 and "no uploaded run 'r2'" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_the_api_pre_labels_with_a_run_uploaded_to_team_files_and_checks_its_body(
    project, app_data, tmp_path
):
    """The run is only in the store (Team Files' stand-in), uploaded as the app uploads one:
    its folder with ``experiment_info.json`` naming the best checkpoint, and ``config.py``."""
    from src.runs.storage import LocalArtifactStore
    from src.training.controller import TrainingController
    from tests.helpers import api_client

    uploaded = tmp_path / "tf" / "mmdetection-3" / "r9_project"
    uploaded.mkdir(parents=True)
    info = {"experiment_name": "r9 project rtmdet", "best_checkpoint": "best.pth"}
    (uploaded / "experiment_info.json").write_text(json.dumps(info))
    shutil.copy(app_data / "r1" / "config.py", uploaded / "config.py")
    shutil.copy(app_data / "r1" / "best_coco_bbox_mAP_epoch_1.pth", uploaded / "best.pth")
    controller = TrainingController(tmp_path / "app", LocalArtifactStore(tmp_path / "tf"))
    body = {"run_id": "r9", "project": str(project), "out": str(tmp_path / "api"),
            "datasets": ["val"]}  # fmt: skip
    with api_client(controller) as client:
        bad = client.post("/api/prelabel", json={**body, "score_thr": "high", "extra": 1})
        answer = client.post("/api/prelabel", json=body)
        again = client.post("/api/prelabel", json=body)
    assert bad.status_code == 400
    assert set(bad.json()["problems"]) == {"score_thr must be a number", "unknown field 'extra'"}
    assert answer.status_code == 200, answer.text
    result = answer.json()
    val = [n for n in _annotations(project) if n.startswith("val/")]
    assert result["images"] == result["predicted"] == len(val) and result["left_labelled"] == 0
    assert result["thresholds"] == {c: (LOW if c == CLASSES[0] else HIGH) for c in CLASSES}
    assert set(result["objects"]) <= {CLASSES[0]} and result["out_dir"] == str(tmp_path / "api")
    assert again.status_code == 400 and "is not empty" in again.json()["error"]
    assert result["checkpoint"] == str(tmp_path / "app" / "_custom" / "r9_project" / "best.pth")


def test_what_only_images_take_or_a_second_run_is_a_usage_error(tmp_path, capsys):
    """``predict``'s two inputs do not mix; nothing is loaded or written before the refusal."""
    project, out = str(tmp_path / "p"), str(tmp_path / "out")
    cases = (
        (["r1", "r2", "--project", project, "--out", out], "one RUN_ID, not 2"),
        (["r1", "--project", project, "--out", out, "--onnx", "m.onnx"], "are for images"),
        (["r1", "--project", project, "--out", out, "--slice-size", "64"], "are for images"),
        (["r1", "--project", project], "needs --out"),
        (["r1", "--project", project, "--out", out, "--score-thr", "1.5"], "score_thr 1.5"),
        (["image.jpg"], "give --onnx FILE with images"),
    )
    for argv, reason in cases:
        assert main(["predict", *argv]) == 2, argv
        assert reason in capsys.readouterr().err, argv
    assert not (tmp_path / "out").exists()


def test_a_run_is_refused_while_pre_labelling_works_and_the_slot_is_free_after(
    project, app_data, labelled, tmp_path, monkeypatch
):
    """Pre-labelling and a run would share the device: a start asked meanwhile (the API's, the
    widgets') is a 409 saying why; the slot is free again once the copy is written."""
    import threading

    import src.prelabel.prelabel
    from src.runs.storage import LocalArtifactStore
    from src.training.controller import TrainingController
    from tests.helpers import api_client

    working, release = threading.Event(), threading.Event()
    real = src.prelabel.prelabel.prelabel_project

    def held(*args, **kwargs):
        working.set()
        assert release.wait(120), "the test never let pre-labelling go on"
        return real(*args, **kwargs)

    monkeypatch.setattr(src.prelabel.prelabel, "prelabel_project", held)
    shutil.copytree(app_data / "r1", tmp_path / "app" / "r1")
    controller = TrainingController(tmp_path / "app", LocalArtifactStore(tmp_path / "tf"))
    asked = {"run_id": "r1", "project": str(project), "out": str(tmp_path / "copy"),
             "datasets": ["val"]}  # fmt: skip
    train = {"project": str(labelled), "model": MODEL, "run_id": "after"}
    with api_client(controller) as client:
        answers = []
        worker = threading.Thread(target=lambda: answers.append(
            client.post("/api/prelabel", json=asked)))  # fmt: skip
        worker.start()
        try:
            assert working.wait(120), "pre-labelling never began"
            refused = client.post("/api/train", json=train)
            assert refused.status_code == 409, refused.text
            assert "pre-labelling is in progress" in refused.json()["error"]
            assert client.get("/api/status").json()["busy"]
        finally:
            release.set()
            worker.join(120)
        assert answers and answers[0].status_code == 200, answers
        assert not client.get("/api/status").json()["busy"]


def test_while_an_audit_holds_the_device_other_runs_and_pre_labelling_are_refused(
    project, app_data, labelled, tmp_path
):
    """An audit owns the device between its folds too (``TrainingController.reserved``): a
    training run that is not one of its folds is refused at its start (409, saying which audit),
    so is pre-labelling; once the audit ends, pre-labelling works."""
    from src.runs.storage import LocalArtifactStore
    from src.training.controller import TrainingController
    from tests.helpers import api_client

    shutil.copytree(app_data / "r1", tmp_path / "app" / "r1")
    controller = TrainingController(tmp_path / "app", LocalArtifactStore(tmp_path / "tf"))
    asked = {"run_id": "r1", "project": str(project), "out": str(tmp_path / "copy"),
             "datasets": ["val"]}  # fmt: skip
    train = {"project": str(labelled), "model": MODEL, "run_id": "other",
             "hyperparameters": {"weights": "scratch", "epochs": 1}}  # fmt: skip
    with api_client(controller) as client:
        with controller.reserved("audit a1", {"a1_fold1", "a1_fold2"}.__contains__):
            refused = client.post("/api/train", json=train)
            assert refused.status_code == 409, refused.text
            assert "audit a1 is in progress" in refused.json()["error"]
            assert not controller.busy and controller.status().run_id is None
            refused = client.post("/api/prelabel", json=asked)
            assert refused.status_code == 409 and "audit a1" in refused.json()["error"]
            assert not (tmp_path / "copy").exists()
        done = client.post("/api/prelabel", json=asked)
    assert done.status_code == 200, done.text
