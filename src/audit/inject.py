"""Labelling errors put into a copy of a project from a seed, with the truth kept, and how well an
audit's ranked suspects find them: how the audit is measured (``bench/audit.py``,
docs/after-training.md).

Four kinds of error, each the kind of suspect that should find it: a dropped object (``missing``),
a swapped class (``wrong_class``), a shifted box (IoU 0.40 to 0.55 with the object: a
``loose_box``), a box where nothing is (``spurious``). Each error is on an image of its own, so
that one suspect cannot be right about two of them. A suspect finds an error when it is of the
error's kind, on its image, with a box of IoU ≥ 0.5 with the error's box (for a dropped object
the object's own box, for the others the wrong label's).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from src.audit.labels import box_object
from src.audit.scoring import KINDS, LOOSE_BOX, MISSING, SPURIOUS, WRONG_CLASS, box_iou
from src.data.geometry import object_to_instance
from src.data.reader import list_items, project_classes, read_meta

SHIFT_IOU = (0.40, 0.55)  # a shifted box's IoU with its object
FOUND_IOU = 0.5  # a suspect's box against an error's


@dataclass(frozen=True)
class InjectedError:
    """One error put into the copy: the suspect kind that should find it, the item, the box to
    find (``[x1, y1, x2, y2]``), the class the label now says and the object's true class."""

    kind: str
    item: str
    box: list[float]
    labelled_class: str | None
    true_class: str | None


def _kinds(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` kinds, as even as ``n`` allows (the remainder drawn), in a drawn order."""
    kinds = [KINDS[i % len(KINDS)] for i in range(n - n % len(KINDS))]
    kinds += list(rng.choice(KINDS, size=n % len(KINDS), replace=False))
    rng.shuffle(kinds)
    return kinds


def inject_errors(source: str | Path, target: str | Path, n: int, seed: int) -> list[InjectedError]:
    """Copy the project ``source`` to ``target`` (a new folder) and put ``n`` errors into the
    copy, drawn with ``seed``; ``target/injected_errors.json`` keeps the truth."""
    source, target = Path(source), Path(target)
    if target.exists():
        raise FileExistsError(f"{target} exists: inject into a new folder")
    rng = np.random.default_rng(seed)
    items = list_items(source)
    with_objects = [(name, path) for name, path in items if _boxes_of(path)]
    if n > len(with_objects):
        raise ValueError(
            f"{n} errors need {n} images with objects; the project has {len(with_objects)}"
        )
    shutil.copytree(source, target)
    classes = project_classes(source)
    shapes = {c["title"]: c.get("shape", "any") for c in read_meta(source)["classes"]}
    chosen = rng.choice(len(with_objects), size=n, replace=False)
    truth = []
    for kind, index in zip(_kinds(n, rng), chosen, strict=True):
        name, path = with_objects[int(index)]
        ann_path = target / path.relative_to(source)
        ann = json.loads(ann_path.read_text(encoding="utf-8"))
        truth.append(_inject(kind, name, ann, rng, classes, shapes))
        ann_path.write_text(json.dumps(ann), encoding="utf-8")
    (target / "injected_errors.json").write_text(
        json.dumps([asdict(e) for e in truth], indent=1), encoding="utf-8"
    )
    return truth


def _boxes_of(ann_path: Path) -> list[tuple[int, list[float]]]:
    """(index in ``objects``, box) of each object with a box."""
    ann = json.loads(ann_path.read_text(encoding="utf-8"))
    height, width = ann["size"]["height"], ann["size"]["width"]
    found = []
    for k, obj in enumerate(ann.get("objects") or []):
        box = object_to_instance(obj, height, width, False)
        if not isinstance(box, str):
            found.append((k, box[0]))
    return found


def _inject(
    kind: str,
    item: str,
    ann: dict[str, Any],
    rng: np.random.Generator,
    classes: list[str],
    shapes: dict[str, str],
) -> InjectedError:
    """Put one error of ``kind`` into the annotation ``ann`` (changed in place)."""
    objects = ann["objects"]
    size = (ann["size"]["height"], ann["size"]["width"])
    boxed = [(i, b) for i, b in enumerate(_box(o, size) for o in objects) if b is not None]
    k, box = boxed[int(rng.integers(len(boxed)))]
    obj = objects[k]
    if kind == MISSING:
        del objects[k]
        return InjectedError(kind, item, box, None, obj["classTitle"])
    if kind == WRONG_CLASS:
        other = str(rng.choice([c for c in classes if c != obj["classTitle"]]))
        true, obj["classTitle"] = obj["classTitle"], other
        return InjectedError(kind, item, box, other, true)
    if kind == LOOSE_BOX:
        shifted = _shift(obj, box, size, rng)
        return InjectedError(kind, item, shifted, obj["classTitle"], obj["classTitle"])
    spurious = _empty_place([b for _, b in boxed], box, size, rng)
    cls = str(rng.choice(classes))
    objects.append(box_object(cls, spurious, shapes.get(cls, "any"), []))
    return InjectedError(SPURIOUS, item, spurious, cls, None)


def _box(obj: dict[str, Any], size: tuple[int, int]) -> list[float] | None:
    found = object_to_instance(obj, size[0], size[1], False)
    return None if isinstance(found, str) else found[0]


def _moved(obj: dict[str, Any], dx: int, dy: int) -> dict[str, Any]:
    """The object with its geometry moved by (dx, dy) px, whatever its kind."""
    moved = json.loads(json.dumps(obj))
    if "bitmap" in moved:
        x, y = moved["bitmap"]["origin"]
        moved["bitmap"]["origin"] = [x + dx, y + dy]
    else:
        points = moved.get("points") or {}
        points["exterior"] = [[x + dx, y + dy] for x, y in points.get("exterior") or []]
        points["interior"] = [
            [[x + dx, y + dy] for x, y in ring] for ring in points.get("interior") or []
        ]
    return moved


def _shift(
    obj: dict[str, Any], box: list[float], size: tuple[int, int], rng: np.random.Generator
) -> list[float]:
    """Move the object (in place) so that its box's IoU with the old one falls in
    ``SHIFT_IOU``: a drawn direction, the distance found on a ladder of steps; the new box."""
    for _ in range(200):
        angle = rng.uniform(0, 2 * np.pi)
        for step in range(1, 400):
            dx, dy = round(step * 0.5 * np.cos(angle)), round(step * 0.5 * np.sin(angle))
            moved = _moved(obj, dx, dy)
            new = _box(moved, size)
            iou = 0.0 if new is None else float(box_iou(np.array([box]), np.array([new]))[0, 0])
            if iou < SHIFT_IOU[0]:
                break
            if iou <= SHIFT_IOU[1] and new is not None:
                obj.clear()
                obj.update(moved)
                return new
    raise ValueError(f"cannot shift a box {box} to IoU {SHIFT_IOU} inside the image")


def _empty_place(
    boxes: list[list[float]], like: list[float], size: tuple[int, int], rng: np.random.Generator
) -> list[float]:
    """A box the size of ``like`` where it overlaps none of ``boxes`` (drawn; a smaller one when
    the image is crowded)."""
    height, width = size
    w, h = like[2] - like[0], like[3] - like[1]
    for attempt in range(400):
        scale = 1.0 if attempt < 200 else 0.6
        bw, bh = max(4.0, w * scale), max(4.0, h * scale)
        x1, y1 = rng.uniform(0, max(1.0, width - bw)), rng.uniform(0, max(1.0, height - bh))
        candidate = [round(x1), round(y1), round(x1 + bw), round(y1 + bh)]
        if not boxes or box_iou(np.array([candidate]), np.array(boxes)).max() == 0:
            return [float(v) for v in candidate]
    raise ValueError("no empty place for a spurious box in a crowded image")


def read_truth(project: str | Path) -> list[InjectedError]:
    """The errors :func:`inject_errors` recorded in ``project``."""
    path = Path(project) / "injected_errors.json"
    return [InjectedError(**e) for e in json.loads(path.read_text(encoding="utf-8"))]


def _finds(suspect: dict[str, Any], error: InjectedError) -> bool:
    if suspect["kind"] != error.kind or suspect["item"] != error.item:
        return False
    return float(box_iou(np.array([suspect["box"]]), np.array([error.box]))[0, 0]) >= FOUND_IOU


def _precision_recall(top: list[dict], errors: list[InjectedError]) -> dict[str, Any]:
    """Of ``top``, the suspects that find an error (each error found once), and the errors
    found."""
    found: set[int] = set()
    right = 0
    for suspect in top:
        hit = next((i for i, e in enumerate(errors) if i not in found and _finds(suspect, e)), None)
        if hit is not None:
            found.add(hit)
            right += 1
    return {
        "errors": len(errors),
        "shown": len(top),
        "found": len(found),
        "precision": right / len(top) if top else None,
        "recall": len(found) / len(errors) if errors else None,
    }


def measure(suspects: list[dict], truth: list[InjectedError], factor: int = 2) -> dict[str, Any]:
    """Precision and recall of the top ``factor`` × N suspects for N errors: per kind (the top
    ``factor`` × N_kind of that kind) and overall (the top ``factor`` × N of every kind, as
    ranked); and, for scale, the recall of all suspects whatever their rank."""
    ranked = sorted(suspects, key=lambda s: -s["score"])
    result = {"per_kind": {}, "suspects": len(suspects)}
    for kind in KINDS:
        errors = [e for e in truth if e.kind == kind]
        of_kind = [s for s in ranked if s["kind"] == kind]
        result["per_kind"][kind] = _precision_recall(of_kind[: factor * len(errors)], errors)
    result["overall"] = _precision_recall(ranked[: factor * len(truth)], truth)
    result["all_suspects"] = _precision_recall(ranked, truth)
    return result
