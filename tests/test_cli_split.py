"""The command line chooses the train/val split the three ways the app and the API do: a random
fraction seeded by --seed, whole datasets, tags (src/cli/train_split.py). The dry run reports the
split it would train on; contradicting or unknown choices are one line and exit 2."""

from __future__ import annotations

import json
import shutil

import pytest
from mmengine.config import Config

from src.cli import main
from src.core.errors import USAGE
from src.core.tasks import DETECTION
from src.data.project import open_local_project, random_split

MODEL = "rtmdet_tiny_8xb32-300e_coco"


def _dry_run(project, tmp_path, *options: str) -> int:
    return main(["train", "--project", str(project), "--model", MODEL, "--from-scratch",
                 "--input-size", "128", "--app-data", str(tmp_path / "app"),
                 "--team-files", str(tmp_path / "team"), "--dry-run", *options])  # fmt: skip


def _sides(out: str) -> tuple[str, int, int]:
    """(the split's description, train images, val images) as the dry run prints them."""
    lines = {line[:12].strip(): line[12:].strip() for line in out.splitlines() if line[:12].strip()}
    return (
        lines["split"],
        int(lines["train"].split(" images")[0]),
        int(lines["val"].split(" images")[0]),
    )


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def tagged_project(demo_project, tmp_path_factory):
    """The demo project (12 train, 4 val images) with image tags that split it 4 / 12 instead."""
    project = tmp_path_factory.mktemp("tagged") / "project"
    shutil.copytree(demo_project, project)
    meta = json.loads((project / "meta.json").read_text())
    meta["tags"] = [{"name": n, "value_type": "none", "color": "#FF0000"} for n in ("fit", "check")]
    (project / "meta.json").write_text(json.dumps(meta))
    for i, path in enumerate(sorted(project.rglob("ann/*.json"))):
        ann = json.loads(path.read_text())
        ann["tags"] = [{"name": "fit" if i % 4 == 0 else "check"}]
        path.write_text(json.dumps(ann))
    return project


def test_the_default_split_is_the_projects_datasets(demo_project, tmp_path, capsys):
    assert _dry_run(demo_project, tmp_path) == 0
    assert _sides(capsys.readouterr().out) == ("datasets train / val", 12, 4)


def test_val_fraction_is_the_apps_random_split_seeded_by_seed(demo_project, tmp_path, capsys):
    dump = tmp_path / "cfg.py"
    assert _dry_run(demo_project, tmp_path, "--val-fraction", "0.5", "--seed", "7",
                    "--dump-config", str(dump)) == 0  # fmt: skip
    assert _sides(capsys.readouterr().out) == ("random 50% / 50%", 8, 8)
    cfg = Config.fromfile(str(dump))
    app_split = random_split(open_local_project(demo_project), 0.5, 7)  # the UI's Random tab
    assert sorted(cfg.train_dataloader.dataset["items"]) == app_split.train_items
    assert sorted(cfg.val_dataloader.dataset["items"]) == app_split.val_items
    assert app_split.val_items != random_split(open_local_project(demo_project), 0.5, 8).val_items


def test_datasets_choose_the_sides(demo_project, tmp_path, capsys):
    assert _dry_run(demo_project, tmp_path, "--train-datasets", "val", "--val-datasets",
                    "train") == 0  # fmt: skip
    assert _sides(capsys.readouterr().out) == ("by datasets", 4, 12)


def test_tags_choose_the_sides(tagged_project, tmp_path, capsys):
    assert _dry_run(tagged_project, tmp_path, "--train-tag", "fit", "--val-tag", "check") == 0
    assert _sides(capsys.readouterr().out) == ("by tags fit/check", 4, 12)


def test_a_split_given_with_from_run_replaces_the_runs_own(demo_project, tmp_path, capsys):
    folder = tmp_path / "earlier"
    folder.mkdir()
    state = {"model": MODEL, "task": DETECTION, "split": {"train": ["train"], "val": ["val"]},
             "hyperparameters": {"weights": "scratch", "input_size": [128, 128]}}  # fmt: skip
    (folder / "app_state.json").write_text(json.dumps(state))
    code = main(["train", "--from-run", str(folder), "--project", str(demo_project),
                 "--app-data", str(tmp_path / "app"), "--team-files", str(tmp_path / "team"),
                 "--val-fraction", "0.75", "--dry-run"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert _sides(capsys.readouterr().out) == ("random 25% / 75%", 4, 12)


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--val-fraction", "0.2", "--train-datasets", "train", "--val-datasets", "val"],
         "--val-fraction and --train-datasets contradict"),
        (["--train-datasets", "train", "--train-tag", "fit", "--val-tag", "check"],
         "--train-datasets and --train-tag contradict"),
        (["--train-tag", "fit"], "--train-tag needs --val-tag"),
        (["--val-datasets", "val"], "--val-datasets needs --train-datasets"),
        (["--val-fraction", "1.5"], "--val-fraction 1.5: give a fraction between 0 and 1"),
        (["--val-fraction", "0"], "--val-fraction 0: give a fraction between 0 and 1"),
        (["--train-datasets", "train", "--val-datasets", "train"], "are in both train and val"),
        (["--train-datasets", "trian", "--val-datasets", "val"],
         "trian is not a dataset of project project; its datasets: train, val"),
        (["--train-tag", "fit", "--val-tag", "nope"],
         "no image is tagged for val (nope); its tags: fit, check"),
        (["--resume", "--val-fraction", "0.2"], "--resume and --val-fraction contradict"),
    ],
)  # fmt: skip
def test_a_split_that_cannot_hold_is_one_usage_line(tagged_project, tmp_path, capsys, options,
                                                    said):  # fmt: skip
    code = main(["train", "--app-data", str(tmp_path / "app"), "--dry-run",
                 *([] if "--resume" in options else ["--project", str(tagged_project)]),
                 *options])  # fmt: skip
    line = _one_error(capsys)
    assert code == USAGE and said in line, line
