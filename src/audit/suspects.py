"""A fold's suspects: its held-out images' labels (``src.audit.labels``) against the fold model's
predictions (``src.audit.predict``), judged by the rules (``src.audit.scoring``), as records a
script and a person can read: the image, the kind, the score, the box in image pixels, the
labelled and the predicted class, the fold.

The confident score is chosen per fold (each model has its own calibration): the score at which
the fold's predictions best agree with its labels (F1-optimal), never under the low score.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from src.audit.labels import ItemLabels, read_labels
from src.audit.scoring import (
    KINDS,
    Finding,
    ImageBoxes,
    Thresholds,
    f1_optimal_score,
    score_image,
)


@dataclass(frozen=True)
class Suspect:
    """One suspicious label or missing object (``suspects.json`` holds these, ranked)."""

    image: str  # the image's path relative to the project
    item: str  # dataset/name
    dataset: str
    kind: str
    score: float  # for ranking: higher is more suspicious (src.audit.scoring)
    box: list[float]  # [x1, y1, x2, y2], image pixels (edges)
    labelled_class: str | None
    predicted_class: str | None
    fold: int
    object: int | None  # the label's index in the annotation's objects (missing: None)
    iou: float | None = None  # between the label and the prediction that accuses it
    prediction_score: float | None = None
    prediction_box: list[float] | None = None  # the accusing prediction's (missing: ``box``)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def image_boxes(labels: ItemLabels, predicted: dict[str, list]) -> ImageBoxes:
    return ImageBoxes.of(
        labels.boxes, labels.classes, predicted["boxes"], predicted["scores"],
        predicted["labels"], labels.ignore,
    )  # fmt: skip


def fold_thresholds(images: list[ImageBoxes], base: Thresholds, auto: bool) -> Thresholds:
    """``base`` with the fold's confident score when ``auto`` (see the module's docstring)."""
    if not auto:
        return base
    chosen = f1_optimal_score(images, fallback=base.confident)
    return replace(base, confident=max(round(chosen, 4), base.low))


def fold_suspects(
    project_dir: str | Path,
    fold: int,
    predictions: dict[str, Any],
    base: Thresholds,
    auto_confident: bool = True,
) -> tuple[list[Suspect], Thresholds]:
    """Every suspect of the fold's images, and the thresholds they were judged with."""
    classes = predictions["classes"]
    items = predictions["items"]
    labels = read_labels(project_dir, list(items), classes, predictions.get("ignore") or ())
    boxes = {item: image_boxes(labels[item], items[item]) for item in items}
    thr = fold_thresholds(list(boxes.values()), base, auto_confident)
    root = Path(project_dir).resolve()
    found = [
        _suspect(finding, labels[item], classes, fold, root)
        for item, image in boxes.items()
        for finding in score_image(image, thr)
    ]
    return found, thr


def _rounded(values: Any, digits: int) -> Any:
    if values is None:
        return None
    if isinstance(values, float | int):
        return round(float(values), digits)
    return [round(float(v), digits) for v in values]


def _suspect(f: Finding, own: ItemLabels, classes: list[str], fold: int, root: Path) -> Suspect:
    """A finding of the rules as a record: class names, the image's path, the object's index."""
    return Suspect(
        image=str(own.image.resolve().relative_to(root)),
        item=own.item,
        dataset=own.dataset,
        kind=f.kind,
        score=round(f.score, 4),
        box=_rounded(f.box, 1),
        labelled_class=None if f.labelled_class is None else classes[f.labelled_class],
        predicted_class=None if f.predicted_class is None else classes[f.predicted_class],
        fold=fold,
        object=None if f.label is None else own.objects[f.label],
        iou=_rounded(f.iou, 3),
        prediction_score=_rounded(f.prediction_score, 4),
        prediction_box=_rounded(f.prediction_box, 1),
    )


def ranked(suspects: list[Suspect]) -> list[Suspect]:
    """The most suspicious first; ties in the kinds' order, then by image (a stable order)."""
    return sorted(suspects, key=lambda s: (-s.score, KINDS.index(s.kind), s.item, s.box))


def counts(suspects: list[Suspect]) -> dict[str, int]:
    return {kind: sum(s.kind == kind for s in suspects) for kind in KINDS}
