"""The CLI checks what it is given before it writes (issue 35): ``predict`` never writes where it
reads nor over a file, and refuses tiles, model files and images it cannot use in one line;
``export`` holds the run's input-size range and never replaces an export silently; a corrupt
checkpoint says what is wrong without torch's advice; ``train --dry-run`` refuses every setting
the run would refuse at its start, and a run id whose folder never saved a checkpoint is free.

No training: the model is an untrained RTMDet-tiny saved as a checkpoint and exported to ONNX
once for the module."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from src.cli import main
from tests.helpers import RTMDET, untrained_run

RUN = "r1"


@pytest.fixture(scope="module")
def exported(tmp_path_factory, demo_project) -> dict[str, Path]:
    """App data with run ``r1`` (its config.py, an untrained checkpoint epoch_1.pth) exported to
    ``export/epoch_1.onnx``; a copy of one of the project's images."""
    from src.export.formats import export_run

    root = tmp_path_factory.mktemp("exported")
    work = root / "app_data" / RUN
    untrained_run(demo_project, work, "epoch_1.pth")
    (work / "last_checkpoint").write_text(str(work / "epoch_1.pth"))
    result = export_run(work)
    image = root / "in" / "photo.jpg"
    image.parent.mkdir()
    first = next((demo_project / "train" / "img").iterdir())
    cv2.imwrite(str(image), cv2.imread(str(first)))
    return {"root": root, "app": root / "app_data", "work": work,
            "onnx": Path(result.files["onnx"]), "image": image}  # fmt: skip


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


# ------------------------------------------------------------------ predict: where it writes


def test_predict_never_writes_into_the_folder_it_reads(exported, capsys):
    """``--out`` the image's own folder would have re-encoded the photo in place."""
    image = exported["image"]
    before = image.read_bytes()
    code = main(
        ["predict", "--onnx", str(exported["onnx"]), str(image), "--out", str(image.parent)]
    )
    line = _one_error_line(capsys)
    assert code == 2, line
    assert "is the folder of the input" in line and str(image) in line
    assert image.read_bytes() == before
    assert sorted(p.name for p in image.parent.iterdir()) == ["photo.jpg"]


def test_two_inputs_with_one_name_get_two_drawings(exported, tmp_path, capsys):
    """Two folders' photo.jpg: the second is drawn as photo_2.jpg instead of over the first."""
    a, b = tmp_path / "a" / "photo.jpg", tmp_path / "b" / "photo.jpg"
    for path, value in ((a, 40), (b, 200)):
        path.parent.mkdir()
        cv2.imwrite(str(path), np.full((96, 128, 3), value, np.uint8))
    out = tmp_path / "drawn"
    code = main(["predict", "--onnx", str(exported["onnx"]), str(a), str(b), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["photo.jpg", "photo_2.jpg"]
    assert f"{b}: drawn as photo_2.jpg" in printed
    # each drawing is its own image (the dark one first, as given)
    first, second = (cv2.imread(str(out / n)) for n in ("photo.jpg", "photo_2.jpg"))
    assert first.mean() < 100 < second.mean()


def test_predict_refuses_an_out_folder_that_holds_its_results(exported, tmp_path, capsys):
    out = tmp_path / "drawn"
    out.mkdir()
    (out / "photo.jpg").write_bytes(b"earlier result")
    code = main(["predict", "--onnx", str(exported["onnx"]), str(exported["image"]),
                 "--out", str(out)])  # fmt: skip
    line = _one_error_line(capsys)
    assert code == 2
    assert "already holds photo.jpg" in line and "never overwrites" in line
    assert (out / "photo.jpg").read_bytes() == b"earlier result"


# ------------------------------------------------------------------ predict: what it reads


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--slice-size", "-5"], "slice_size) must be from 32 to 16384 px, got -5"),
        (["--slice-size", "-3"], "got -3"),
        (["--slice-size", "1"], "got 1"),
        (["--slice-size", "64", "--slice-overlap", "1.0"], "must be from 0 to 0.9, got 1.0"),
        (["--slice-overlap", "0.5"], "--slice-overlap needs tiles"),
    ],
)
def test_predict_holds_the_tiles_to_trainings_ranges(exported, tmp_path, capsys, options, expected):
    """-5 divided by zero, 1 and an overlap of 1.0 never ended, -3 left parts unpredicted."""
    out = tmp_path / "drawn"
    started = time.monotonic()
    code = main(["predict", "--onnx", str(exported["onnx"]), str(exported["image"]),
                 "--out", str(out), *options])  # fmt: skip
    line = _one_error_line(capsys)
    assert code == 2 and expected in line, line
    assert not out.exists()
    assert time.monotonic() - started < 30


def _bad_models(tmp_path: Path, good: Path) -> dict[str, tuple[Path, str]]:
    import onnx
    from onnx import TensorProto, helper

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(os.urandom(4096))
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[:100_000])
    foreign = tmp_path / "foreign.onnx"  # a valid model without this app's metadata
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), foreign)
    return {
        "garbage": (garbage, "cannot be loaded by ONNX Runtime"),
        "empty": (empty, "is empty (0 bytes)"),
        "truncated": (truncated, "cannot be loaded by ONNX Runtime"),
        "missing": (tmp_path / "missing.onnx", "does not exist"),
        "foreign": (foreign, "not one this app exported"),
    }


@pytest.mark.parametrize("kind", ["garbage", "empty", "truncated", "missing", "foreign"])
def test_a_model_file_that_cannot_predict_is_one_line(exported, tmp_path, capsys, kind):
    model, expected = _bad_models(tmp_path, exported["onnx"])[kind]
    out = tmp_path / "drawn"
    code = main(["predict", "--onnx", str(model), str(exported["image"]), "--out", str(out)])
    line = _one_error_line(capsys)
    assert code == 2 and expected in line, line
    assert "export" in line  # what to do
    assert not out.exists()


def test_an_image_the_resize_shrinks_to_nothing_is_one_line(exported, tmp_path, capsys):
    strip = tmp_path / "strip.png"
    cv2.imwrite(str(strip), np.zeros((1, 5000, 3), np.uint8))
    out = tmp_path / "drawn"
    code = main(["predict", "--onnx", str(exported["onnx"]), str(exported["image"]), str(strip),
                 "--out", str(out)])  # fmt: skip
    line = _one_error_line(capsys)
    assert code == 2 and "strip.png is 5000x1 px" in line, line
    assert not out.exists()  # checked before anything is drawn


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("size", ["-1", "7", "100000"])
def test_export_holds_the_input_size_to_trainings_range(exported, capsys, size):
    onnx_file = exported["onnx"]
    before = onnx_file.stat().st_mtime_ns
    code = main(["export", RUN, "--app-data", str(exported["app"]), "--input-size", size])
    line = _one_error_line(capsys)
    assert code == 2 and f"must be from 32 to 4096 px for this model, got {size}" in line, line
    assert sorted(p.name for p in onnx_file.parent.iterdir()) == ["classes.json", "epoch_1.onnx"]
    assert onnx_file.stat().st_mtime_ns == before


def test_export_never_replaces_an_export_silently(exported, tmp_path, capsys):
    """An export newer than the checkpoint is kept; one older than it is refused unless --force;
    another input size is written beside the run's own."""
    app = tmp_path / "app_data"
    shutil.copytree(exported["app"], app)
    onnx_file = app / RUN / "export" / "epoch_1.onnx"
    content = onnx_file.read_bytes()

    assert main(["export", RUN, "--app-data", str(app)]) == 0
    assert "(kept: already exported from this checkpoint" in capsys.readouterr().out
    assert onnx_file.read_bytes() == content

    stale = (app / RUN / "epoch_1.pth").stat().st_mtime - 60
    os.utime(onnx_file, (stale, stale))
    assert main(["export", RUN, "--app-data", str(app)]) == 2
    line = _one_error_line(capsys)
    assert "older than epoch_1.pth" in line and "--force" in line
    assert onnx_file.stat().st_mtime == stale

    assert main(["export", RUN, "--app-data", str(app), "--input-size", "64"]) == 0
    assert "epoch_1_64px.onnx" in capsys.readouterr().out
    assert onnx_file.stat().st_mtime == stale  # the run's own export untouched
    assert (app / RUN / "export" / "epoch_1_64px.onnx").is_file()

    assert main(["export", RUN, "--app-data", str(app), "--force"]) == 0
    assert onnx_file.stat().st_mtime > stale


def test_a_corrupt_checkpoint_says_what_is_wrong_without_torchs_advice(exported, tmp_path, capsys):
    app = tmp_path / "app_data"
    shutil.copytree(exported["app"], app)
    corrupt = app / RUN / "epoch_2.pth"
    corrupt.write_bytes(os.urandom(5000))
    code = main(["export", str(corrupt), "--app-data", str(app)])
    line = _one_error_line(capsys)
    assert code == 2
    assert f"checkpoint {corrupt} is truncated or corrupt" in line
    assert "weights_only" not in line and "use another checkpoint" in line


# ------------------------------------------------------------------ train: checked at its start


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--seed", "-1"], "seed must be from 0 to 2147483647, got -1"),
        (["--seed", str(2**32)], "seed must be from 0 to 2147483647, got 4294967296"),
        (["--log-interval", "0"], "log_interval must be from 1 to 100000, got 0"),
        (["--warmup-iters", "10", "--warmup-ratio", "0"], "warmup_ratio"),
        (["--optimizer", "SGD", "--momentum", "-0.5"], "momentum must be from 0"),
        (["--optimizer", "SGD", "--nesterov", "--momentum", "0"], "nesterov needs a momentum"),
    ],
)
def test_the_dry_run_refuses_what_the_run_would_refuse_at_its_start(
    demo_project, tmp_path, capsys, options, expected
):
    """The dry run said everything builds; the run then failed at its start with a traceback."""
    app = tmp_path / "app_data"
    code = main(["train", "--project", str(demo_project), "--model", RTMDET, "--from-scratch",
                 "--app-data", str(app), "--dry-run", *options])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and expected in err, err
    assert "Traceback" not in err
    assert not app.exists() or not any(app.iterdir())


def test_a_run_id_whose_folder_never_saved_a_checkpoint_is_free(demo_project, tmp_path, capsys):
    """A run that failed at its start left config.py and app_state.json: its id said "exists:
    resume it" and its resume "no resumable run"."""
    app = tmp_path / "app_data"
    failed = app / "X"
    failed.mkdir(parents=True)
    (failed / "config.py").write_text("model = dict(type='RTMDet')\n")
    (failed / "app_state.json").write_text("{}")

    assert main(["train", "--resume", "X", "--app-data", str(app), "--dry-run"]) == 2
    line = _one_error_line(capsys)
    assert "run X never saved a checkpoint" in line and "nothing to resume" in line

    code = main(["train", "--project", str(demo_project), "--model", RTMDET, "--from-scratch",
                 "--app-data", str(app), "--run-id", "X", "--dry-run"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "never saved a checkpoint (nothing to resume): this run starts over" in captured.out

    (failed / "epoch_1.pth").write_bytes(b"a checkpoint")  # now it is a run to resume
    code = main(["train", "--project", str(demo_project), "--model", RTMDET, "--from-scratch",
                 "--app-data", str(app), "--run-id", "X", "--dry-run"])  # fmt: skip
    assert code == 2
    assert "run X already exists" in capsys.readouterr().err


def test_a_run_id_that_names_a_file_in_app_data_is_refused(demo_project, tmp_path, capsys):
    app = tmp_path / "app_data"
    app.mkdir()
    (app / "tensorboard.log").write_text("the board's log")
    code = main(["train", "--project", str(demo_project), "--model", RTMDET, "--from-scratch",
                 "--app-data", str(app), "--run-id", "tensorboard.log", "--dry-run"])  # fmt: skip
    line = _one_error_line(capsys)
    assert code == 2 and "names a file in" in line, line
    assert (app / "tensorboard.log").read_text() == "the board's log"


def _project_copy(source: Path, target: Path, renamed: dict[str, str], extra: str | None = None):
    """``source`` with its classes renamed (in meta.json and every annotation) and, with
    ``extra``, one more class that no object has."""
    import json

    shutil.copytree(source, target)
    meta = json.loads((target / "meta.json").read_text())
    for cls in meta["classes"]:
        cls["title"] = renamed.get(cls["title"], cls["title"])
    if extra:
        meta["classes"].append({**meta["classes"][0], "title": extra, "color": "#101010"})
    (target / "meta.json").write_text(json.dumps(meta))
    for ann in target.glob("*/ann/*.json"):
        data = json.loads(ann.read_text())
        for obj in data["objects"]:
            obj["classTitle"] = renamed.get(obj["classTitle"], obj["classTitle"])
        ann.write_text(json.dumps(data))
    return target


def test_a_class_name_with_a_comma_or_spaces_around_it_can_be_named(demo_project, tmp_path, capsys):
    """``--classes`` split every name at commas and stripped it: such a class could not train."""
    renamed = {"circle": "circle, big", "square": " square"}
    project = _project_copy(demo_project, tmp_path / "project", renamed)
    code = main(["train", "--project", str(project), "--model", RTMDET, "--from-scratch",
                 "--app-data", str(tmp_path / "app_data"), "--dry-run",
                 "--classes", '["circle, big", " square"]'])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "classes      circle, big,  square\n" in captured.out
    assert (
        main(
            [
                "train",
                "--project",
                str(project),
                "--model",
                RTMDET,
                "--dry-run",
                "--app-data",
                str(tmp_path / "app_data"),
                "--classes",
                '["circle", 3]',
            ]
        )
        == 2
    )
    assert "a JSON list of names" in _one_error_line(capsys)


def test_a_class_without_objects_under_class_balance_is_said(demo_project, tmp_path, capsys):
    """It trained on nothing, and the class balance repeated nothing, without a word."""
    project = _project_copy(demo_project, tmp_path / "project", {}, extra="unseen")
    code = main(["train", "--project", str(project), "--model", RTMDET, "--from-scratch",
                 "--app-data", str(tmp_path / "app_data"), "--dry-run", "--class-balance", "0.5",
                 "--classes", "square,unseen"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    warning = next(line for line in captured.out.splitlines() if "'unseen'" in line)
    assert warning.startswith("warning") and "no objects in the train split" in warning
    assert "class balance (0.5)" in warning


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("nested", "nested too deeply"), ("not utf-8", "is not UTF-8 text"),
     ("link out", "points outside"), ("folder nested", "nested too deeply")],
)  # fmt: skip
def test_a_run_whose_state_cannot_be_read_is_one_line(demo_project, tmp_path, capsys, kind,
                                                      expected):  # fmt: skip
    """--from-run of an uploaded run (or a folder) whose app_state.json nests past Python's
    stack (RecursionError), is not UTF-8 or links out of Team Files."""
    import json

    folder = tmp_path / "team" / "mmdetection-3" / "7_demo"
    folder.mkdir(parents=True)
    info = {"experiment_name": "7 rtmdet", "model_name": RTMDET, "best_checkpoint": "best.pth"}
    (folder / "experiment_info.json").write_text(json.dumps(info))
    state = folder / "app_state.json"
    if kind in ("nested", "folder nested"):
        state.write_bytes(b"[" * 200_000 + b"]" * 200_000)
    elif kind == "not utf-8":
        state.write_bytes(b'{"hyperparameters": {"x": "\xff\xfe"}}')
    else:
        outside = tmp_path / "outside.json"
        outside.write_text(json.dumps({"hyperparameters": {}, "model": RTMDET}))
        state.symlink_to(outside)
    target = str(folder) if kind == "folder nested" else "7"
    code = main(["train", "--from-run", target, "--team-files", str(tmp_path / "team"),
                 "--project", str(demo_project), "--app-data", str(tmp_path / "app_data"),
                 "--dry-run"])  # fmt: skip
    line = _one_error_line(capsys)
    assert code == 2 and expected in line, line
