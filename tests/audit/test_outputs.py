"""The audit without training: its folds (src/audit/plan.py), a fold's suspects from hand-made
predictions over a demo project's labels (src/audit/suspects.py), and what it writes
(src/audit/outputs.py, report.py): suspects.json, the report, the tagged copy; the project itself
is only read, and --out may not overlap it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from src.audit.labels import read_labels
from src.audit.outputs import (
    SCORE_TAG,
    SUSPECT_TAG,
    check_out_dir,
    write_suspects,
    write_tagged_copy,
)
from src.audit.plan import AuditPlan, load_plan, make_folds, save_plan
from src.audit.report import write_report
from src.audit.scoring import MISSING, SPURIOUS, WRONG_CLASS, Thresholds
from src.audit.suspects import counts, fold_suspects, ranked
from src.core.errors import RequestError
from src.data.demo import CLASSES
from src.data.reader import list_items


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    from src.data.demo import DemoOptions, make_demo_project

    path = tmp_path_factory.mktemp("audit") / "project"
    return make_demo_project(path, DemoOptions(images=11, seed=4, nested=True))


def test_the_folds_split_every_image_once_the_same_way_for_a_seed(demo):
    items = [name for name, _ in list_items(demo)]
    folds = make_folds(demo, 3, seed=1)
    assert sorted(n for fold in folds for n in fold) == sorted(items)
    assert sorted(len(fold) for fold in folds) == [3, 4, 4]
    assert any(n.startswith("train/extra/") for n in items)  # nested datasets are in
    assert make_folds(demo, 3, seed=1) == folds and make_folds(demo, 3, seed=2) != folds
    with pytest.raises(RequestError, match="at least 2"):
        make_folds(demo, 1, seed=0)
    with pytest.raises(RequestError, match="fewer than the folds"):
        make_folds(demo, 12, seed=0)


def test_a_plan_splits_by_fold_and_reads_back(demo, tmp_path):
    folds = make_folds(demo, 2, seed=0)
    plan = AuditPlan("a1", str(demo), str(tmp_path / "out"), folds, seed=0)
    split = plan.split(2)
    assert split.val_items == folds[1] and split.train_items == sorted(folds[0])
    assert plan.run_id(2) == "a1_fold2"
    save_plan(plan, tmp_path)
    assert load_plan(tmp_path, "a1") == plan
    with pytest.raises(RequestError, match="there are: a1"):
        load_plan(tmp_path, "a2")
    with pytest.raises(RequestError, match="not allowed"):
        load_plan(tmp_path, "../x")


def _predictions(demo: Path) -> dict:
    """The labels as confident predictions, but: the first image's first label not predicted
    (spurious), the second's predicted as another class (wrong class), an object predicted in
    the third's top-left corner that no label has (missing)."""
    items = [name for name, _ in list_items(demo)]
    labels = read_labels(demo, items, list(CLASSES))
    result = {}
    for n, item in enumerate(items):
        own = labels[item]
        boxes, classes = list(own.boxes), list(own.classes)
        if n == 0:
            boxes, classes = boxes[1:], classes[1:]
        if n == 1:
            classes[0] = (classes[0] + 1) % 3
        if n == 2:
            boxes, classes = [*boxes, [0.0, 0.0, 6.0, 6.0]], [*classes, 2]
        result[item] = {"boxes": boxes, "scores": [0.9] * len(boxes), "labels": classes}
    return {"classes": list(CLASSES), "ignore": [], "items": result}, items


def test_suspects_are_written_ranked_reported_and_tagged_in_a_copy(demo, tmp_path):
    before = {p: hashlib.sha256(p.read_bytes()).digest() for p in demo.rglob("*") if p.is_file()}
    predictions, items = _predictions(demo)
    found, thr = fold_suspects(demo, 1, predictions, Thresholds(), auto_confident=True)
    assert thr.confident == 0.9  # every prediction scores 0.9: where they agree with the labels
    found = ranked(found)
    by_kind = {s.kind: s for s in found}
    assert counts(found) == {MISSING: 1, SPURIOUS: 1, WRONG_CLASS: 1, "loose_box": 0}
    assert by_kind[SPURIOUS].item == items[0] and by_kind[SPURIOUS].object == 0
    assert by_kind[WRONG_CLASS].item == items[1]
    assert by_kind[MISSING].box == [0.0, 0.0, 6.0, 6.0] and by_kind[MISSING].object is None
    assert (demo / by_kind[MISSING].image).is_file()

    out = tmp_path / "out"
    out.mkdir()
    write_suspects(out / "suspects.json", {"audit_id": "t"}, found)
    body = json.loads((out / "suspects.json").read_text())
    assert [s["rank"] for s in body["suspects"]] == [1, 2, 3]
    assert body["counts"][MISSING] == 1 and body["suspects"][0]["kind"] == found[0].kind
    write_report(out / "report.html", demo, found, {"audit_id": "t", "folds": []})
    assert (out / "report.html").read_text().count("data:image/jpeg;base64,") == 3
    _check_copy(write_tagged_copy(demo, found, out / "project"), found)
    write_tagged_copy(demo, found[:1], out / "project")  # again: replaced, not added to
    _check_copy(out / "project", found[:1])
    after = {p: hashlib.sha256(p.read_bytes()).digest() for p in demo.rglob("*") if p.is_file()}
    assert after == before


def _check_copy(copy_dir: Path, found) -> None:
    import supervisely as sly

    copy = sly.Project(str(copy_dir), sly.OpenMode.READ)
    tagged = {}
    for dataset in copy.datasets:
        for name in dataset.get_items_names():
            for label in dataset.get_ann(name, copy.meta).labels:
                if (kind := label.tags.get(SUSPECT_TAG)) is not None:
                    score = label.tags.get(SCORE_TAG).value
                    tagged[(label.obj_class.name, kind.value)] = score
    expected = {
        (s.predicted_class if s.kind == MISSING else s.labelled_class, s.kind): s.score
        for s in found
    }
    assert tagged == expected


def test_out_may_not_overlap_the_project(demo, tmp_path):
    for bad in (demo, demo / "out", demo.parent):
        with pytest.raises(RequestError, match="overlaps the project"):
            check_out_dir(bad, demo)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RequestError, match="is a file"):
        check_out_dir(tmp_path / "file", demo)
    assert check_out_dir(tmp_path / "out", demo) == (tmp_path / "out").resolve()
