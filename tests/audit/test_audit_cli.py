"""``python -m src.cli audit`` end to end on a tiny project (K=2, 128 px, 2 epochs): stopped by
Ctrl-C in its first fold, continued with ``--resume``, it writes suspects.json, the report and a
tagged copy of the project, and leaves the project it audits as it was; with
``--learning-curve`` it trains fold 1 on nested 25 and 50 % subsets too and writes the curve."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

import pytest

from src.audit.outputs import SCORE_TAG, SUSPECT_TAG
from src.audit.scoring import KINDS, MISSING

MODEL = "rtmdet_tiny_8xb32-300e_coco"


def _fingerprint(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


class _CtrlCAt:
    """Presses Ctrl-C once (SIGINT to this process) at the first fold's iteration ``k``."""

    def __init__(self, k: int) -> None:
        self.k, self.done = k, False

    def __call__(self, progress) -> None:
        if not self.done and progress.iteration == self.k:
            self.done = True
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.slow  # it trains two folds (and one of them twice in part)
def test_an_audit_stops_resumes_and_marks_suspects_in_a_copy(tmp_path, monkeypatch, capsys):
    from src.cli.parser import main
    from src.cli.train_output import ProgressBar
    from src.data.demo import DemoOptions, make_demo_project

    project = make_demo_project(tmp_path / "demo", DemoOptions(images=10, seed=5, nested=True))
    before = _fingerprint(project)
    app_data, out = tmp_path / "app_data", tmp_path / "out"
    where = ["--app-data", str(app_data), "--team-files", str(tmp_path / "team"), "--no-cache"]
    ctrl_c = _CtrlCAt(2)
    shown = ProgressBar.on_train_iter
    monkeypatch.setattr(
        ProgressBar, "on_train_iter", lambda bar, progress: (shown(bar, progress), ctrl_c(progress))
    )
    code = main(
        ["audit", "--project", str(project), "--model", MODEL, "--folds", "2", "--out", str(out),
         "--audit-id", "a1", "--learning-curve", "--from-scratch", "--epochs", "2",
         "--input-size", "128", "--batch-size", "2", "--workers", "0", "--device", "cpu", *where]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert (
        "audit a1 stopped in fold 1; continue with: python -m src.cli audit --resume a1" in printed
    )
    stopped = sorted(p.name for p in (app_data / "a1_fold1").glob("iter_*.pth"))
    assert stopped, "a stop mid-epoch saves its checkpoint"
    assert not (app_data / "a1_fold2").exists() and not out.exists()

    assert main(["audit", "--resume", "a1", *where]) == 0
    printed = capsys.readouterr().out
    assert f"resuming run a1_fold1 from {stopped[-1]}" in printed
    assert "fold 2/2: " in printed and "audit a1 done in" in printed

    plan = json.loads((app_data / "_audits" / "a1" / "audit.json").read_text())
    items = sorted(item for fold in plan["folds"] for item in fold)
    assert len(items) == 10 and any(item.startswith("train/extra/") for item in items)
    assert plan["finished"] == [1, 2] and plan["curve_finished"] == [25, 50]
    _check_outputs(project, out)
    _check_curve(plan, app_data, out, printed)
    assert _fingerprint(project) == before  # the audited project is only read


def _check_outputs(project: Path, out: Path) -> None:
    import supervisely as sly

    body = json.loads((out / "suspects.json").read_text())
    suspects = body["suspects"]
    assert suspects, "a model of 2 epochs at 128 px finds something to suspect"
    assert sum(body["counts"].values()) == len(suspects)
    assert [f["fold"] for f in body["folds"]] == [1, 2]
    assert [s["rank"] for s in suspects] == list(range(1, len(suspects) + 1))
    assert [s["score"] for s in suspects] == sorted((s["score"] for s in suspects), reverse=True)
    for s in suspects:
        assert s["kind"] in KINDS and s["fold"] in (1, 2)
        assert (project / s["image"]).is_file() and s["item"].startswith(s["dataset"] + "/")
        x1, y1, x2, y2 = s["box"]
        assert 0 <= x1 < x2 <= 256 and 0 <= y1 < y2 <= 256
        assert (s["labelled_class"] is None) == (s["kind"] == MISSING)
    report = (out / "report.html").read_text()
    assert report.count("data:image/jpeg;base64,") == min(100, len(suspects))

    copy = sly.Project(str(out / "project"), sly.OpenMode.READ)
    assert copy.meta.get_tag_meta(SUSPECT_TAG) is not None
    tagged = added = 0
    for dataset in copy.datasets:
        for name in dataset.get_items_names():
            ann = dataset.get_ann(name, copy.meta)  # the SDK reads every object back
            for label in ann.labels:
                kind = label.tags.get(SUSPECT_TAG)
                if kind is not None:
                    tagged += 1
                    added += kind.value == MISSING
                    assert label.tags.get(SCORE_TAG) is not None
    missing = sum(s["kind"] == MISSING for s in suspects)
    assert (tagged, added) == (len(suspects), missing)


def _check_curve(plan: dict, app_data: Path, out: Path, printed: str) -> None:
    """Fold 1's 5 training images in nested subsets of 2 and 3 (and 5: the fold's own run),
    each validated on the fold's held-out images; the curve in its file, the report and the
    console."""
    curve = json.loads((out / "learning_curve.json").read_text())
    assert [(r["share"], r["run"], r["images"]) for r in curve["runs"]] == [
        (25, "a1_fold1_curve25", 2), (50, "a1_fold1_curve50", 3), (100, "a1_fold1", 5),
    ]  # fmt: skip
    assert curve["validation_images"] == len(plan["folds"][0]) == 5
    for share in (25, 50):
        config = (app_data / f"a1_fold1_curve{share}" / "config.py").read_text()
        for item in plan["folds"][0]:  # the held-out images validate, never train
            assert config.count(item.rsplit("/", 1)[1]) == 1
    counts = [sum(r["instances"].values()) for r in curve["runs"]]
    assert 0 < counts[0] <= counts[1] <= counts[2]
    assert curve["classes"], "each class has an AP at each point (0 after 2 epochs is one)"
    for c in curve["classes"]:
        assert c["shares"] == [25, 50, 100] and 0 <= c["expected_2x"] <= 1
    assert "How much more labelling would help" in (out / "report.html").read_text()
    assert "learning curve (fold 1; AP now -> expected at 2x objects" in printed
