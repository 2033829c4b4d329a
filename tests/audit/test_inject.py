"""Errors injected into a copy of a demo project from a seed (src/audit/inject.py): each kind is
there as the truth says, the source is untouched, the same seed gives the same errors; and the
measurement counts a suspect as finding an error only with the right kind, image and box."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from src.audit.inject import InjectedError, inject_errors, measure, read_truth
from src.audit.labels import read_item
from src.audit.scoring import KINDS, LOOSE_BOX, MISSING, SPURIOUS, WRONG_CLASS, box_iou
from src.data.demo import CLASSES
from src.data.reader import list_items


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    from src.data.demo import DemoOptions, make_demo_project

    path = tmp_path_factory.mktemp("inject") / "project"
    return make_demo_project(path, DemoOptions(images=14, seed=2, nested=True))


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _labels(project: Path) -> dict:
    return {name: read_item(name, path, list(CLASSES), set()) for name, path in list_items(project)}


def _best(boxes: list, box: list) -> float:
    return float(box_iou(np.array([box]), np.array(boxes)).max()) if boxes else 0.0


def test_each_error_is_in_the_copy_as_recorded_and_the_source_is_untouched(demo, tmp_path):
    before = _files(demo)
    truth = inject_errors(demo, tmp_path / "copy", n=10, seed=7)
    assert _files(demo) == before
    per_kind = Counter(e.kind for e in truth)
    assert set(per_kind) == set(KINDS) and sorted(per_kind.values()) == [2, 2, 3, 3]
    assert len({e.item for e in truth}) == 10  # one error an image
    assert read_truth(tmp_path / "copy") == truth
    old, new = _labels(demo), _labels(tmp_path / "copy")
    for e in truth:
        was, now = old[e.item], new[e.item]
        boxes = [(b, CLASSES[c]) for b, c in zip(now.boxes, now.classes, strict=True)]
        if e.kind == MISSING:
            assert len(now.boxes) == len(was.boxes) - 1
            assert _best(was.boxes, e.box) == pytest.approx(1.0)
            assert _best(now.boxes, e.box) < 0.5
        elif e.kind == WRONG_CLASS:
            (cls,) = [c for b, c in boxes if _best([b], e.box) > 0.99]
            assert cls == e.labelled_class != e.true_class
        elif e.kind == LOOSE_BOX:
            assert _best(now.boxes, e.box) == pytest.approx(1.0)
            assert 0.40 <= _best(was.boxes, e.box) <= 0.55
        else:
            assert e.kind == SPURIOUS and len(now.boxes) == len(was.boxes) + 1
            assert _best(was.boxes, e.box) == 0.0 and e.labelled_class in CLASSES


def test_the_same_seed_gives_the_same_errors_and_another_seed_others(demo, tmp_path):
    a = inject_errors(demo, tmp_path / "a", n=6, seed=3)
    b = inject_errors(demo, tmp_path / "b", n=6, seed=3)
    c = inject_errors(demo, tmp_path / "c", n=6, seed=4)
    assert a == b and a != c
    assert json.loads((tmp_path / "a" / "injected_errors.json").read_text()) == json.loads(
        (tmp_path / "b" / "injected_errors.json").read_text()
    )
    with pytest.raises(FileExistsError):
        inject_errors(demo, tmp_path / "a", n=1, seed=0)
    with pytest.raises(ValueError, match="images with objects"):
        inject_errors(demo, tmp_path / "d", n=99, seed=0)


def _suspect(kind: str, item: str, box: list, score: float) -> dict:
    return {"kind": kind, "item": item, "box": box, "score": score}


def test_the_measure_counts_the_right_kind_image_and_box_once():
    box = [10.0, 10.0, 50.0, 50.0]
    truth = [
        InjectedError(MISSING, "ds/a.png", box, None, "circle"),
        InjectedError(SPURIOUS, "ds/b.png", box, "square", None),
    ]
    suspects = [
        _suspect(MISSING, "ds/a.png", [12.0, 10.0, 52.0, 50.0], 0.9),  # found
        _suspect(MISSING, "ds/a.png", [11.0, 10.0, 51.0, 50.0], 0.8),  # the same error again
        _suspect(WRONG_CLASS, "ds/b.png", box, 0.95),  # the right place, the wrong kind
        _suspect(SPURIOUS, "ds/c.png", box, 0.7),  # another image
        _suspect(SPURIOUS, "ds/b.png", [30.0, 30.0, 70.0, 70.0], 0.6),  # IoU 0.14
    ]
    result = measure(suspects, truth)
    missing, spurious = result["per_kind"][MISSING], result["per_kind"][SPURIOUS]
    assert (missing["shown"], missing["found"], missing["precision"]) == (2, 1, 0.5)
    assert missing["recall"] == 1.0
    assert (spurious["shown"], spurious["found"], spurious["recall"]) == (2, 0, 0.0)
    assert result["per_kind"][LOOSE_BOX] == {
        "errors": 0, "shown": 0, "found": 0, "precision": None, "recall": None
    }  # fmt: skip
    overall = result["overall"]  # the top 4 as ranked: wrong class, missing twice, spurious c
    assert (overall["shown"], overall["found"], overall["recall"]) == (4, 1, 0.5)
    assert overall["precision"] == 0.25
    assert result["all_suspects"]["found"] == 1 and result["suspects"] == 5
