"""Which labels and predictions of one image look like a labelling error, and how sure it looks.

Pure numpy on boxes ``[x1, y1, x2, y2]`` (edges, as mmdet's), so the rules can be tested on
hand-made boxes without a model. The predictions are those of a model that did not train on the
image, kept down to a score near 0: every rule below reads the scores it needs itself.

- ``missing``: a confident prediction that no label overlaps at IoU ≥ 0.5, of any class (an
  object nobody labelled). Ranked by its confidence, less the more it overlaps a label (a second
  box on a labelled object is more likely than an unlabelled object half under it).
- ``spurious``: a label that no prediction above a low score overlaps at IoU ≥ 0.3, of any class
  (a box with nothing there). Ranked by 1 − the best overlapping score / the low score: 1 where
  the model sees nothing at all, towards 0 where it nearly sees something.
- ``wrong_class``: the most confident prediction over a label (IoU ≥ 0.5) is of another class, is
  confident, and is clearly more confident than any prediction of the label's own class there.
  Ranked by that margin.
- ``loose_box``: the label's class is confidently predicted over it, but no such prediction
  overlaps it at IoU ≥ 0.6, the best at 0.3 to 0.6 (a box drawn off the object). Ranked by the
  prediction's confidence, more the looser the box.

One error is reported once: a label gets one kind at most (spurious, else wrong class, else
loose), and the prediction that makes a label loose is not also a missing object; duplicate
predictions of one unlabelled object (one per class: mmdet's NMS is per class) are one
``missing``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MISSING, SPURIOUS, WRONG_CLASS, LOOSE_BOX = "missing", "spurious", "wrong_class", "loose_box"
KINDS = (MISSING, SPURIOUS, WRONG_CLASS, LOOSE_BOX)


@dataclass(frozen=True)
class Thresholds:
    """What counts as confident, as overlapping, as matching and as tight.

    Args:
        confident: a prediction's score from which the model is taken at its word (missing,
            wrong class, loose box); the audit chooses it per fold (:func:`f1_optimal_score`).
        low: spurious: no prediction of at least this score overlaps the label.
        match_iou: a prediction and a label are the same object (missing, wrong class).
        overlap_iou: a prediction is over a label at all (spurious, loose box).
        tight_iou: a label fits its object (below it, with ``overlap_iou`` and above: loose).
        class_margin: wrong class: how much more confident the other class must be.
    """

    confident: float = 0.5
    low: float = 0.1
    match_iou: float = 0.5
    overlap_iou: float = 0.3
    tight_iou: float = 0.6
    class_margin: float = 0.2

    def __post_init__(self) -> None:
        for name in ("confident", "low", "match_iou", "overlap_iou", "tight_iou", "class_margin"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if not self.overlap_iou <= self.tight_iou:
            raise ValueError(
                f"overlap_iou {self.overlap_iou} must not exceed tight_iou {self.tight_iou}"
            )


@dataclass(frozen=True)
class Finding:
    """One suspect of one image: its kind, its ranking score in [0, 1] and the box to look at
    (the label's; a missing object's: the prediction's). ``label`` indexes the image's labels
    (None: missing); the classes are indices (None where there is none)."""

    kind: str
    score: float
    box: tuple[float, float, float, float]
    label: int | None
    labelled_class: int | None
    predicted_class: int | None
    iou: float | None = None  # between the label and the prediction that accuses it
    prediction_score: float | None = None
    prediction_box: tuple[float, float, float, float] | None = None  # the accusing prediction


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4): (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    inter = _intersection(a, b)
    area_a = _area(a)[:, None]
    area_b = _area(b)[None, :]
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return np.clip(width, 0, None) * np.clip(height, 0, None)


def _as_box(row: np.ndarray) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in row)
    return x1, y1, x2, y2


def _inside_ignore(boxes: np.ndarray, ignore: np.ndarray) -> np.ndarray:
    """Whether half of each box or more lies in one ignore region (as COCO matches a detection to
    a crowd region): never a missing object there."""
    if len(ignore) == 0 or len(boxes) == 0:
        return np.zeros(len(boxes), dtype=bool)
    covered = _intersection(boxes, ignore) / np.maximum(_area(boxes), 1e-12)[:, None]
    return (covered >= 0.5).any(axis=1)


@dataclass(frozen=True)
class ImageBoxes:
    """One image's labels and predictions, as arrays (classes as indices)."""

    label_boxes: np.ndarray  # (N, 4)
    label_classes: np.ndarray  # (N,)
    pred_boxes: np.ndarray  # (M, 4)
    pred_scores: np.ndarray  # (M,)
    pred_classes: np.ndarray  # (M,)
    ignore_boxes: np.ndarray | None = None  # (K, 4): ignore regions

    @classmethod
    def of(cls, labels, label_classes, preds, scores, pred_classes, ignore=None) -> ImageBoxes:
        """From lists or arrays, empty ones included."""
        return cls(
            np.asarray(labels, dtype=np.float64).reshape(-1, 4),
            np.asarray(label_classes, dtype=np.int64).reshape(-1),
            np.asarray(preds, dtype=np.float64).reshape(-1, 4),
            np.asarray(scores, dtype=np.float64).reshape(-1),
            np.asarray(pred_classes, dtype=np.int64).reshape(-1),
            None if ignore is None else np.asarray(ignore, dtype=np.float64).reshape(-1, 4),
        )


def score_image(image: ImageBoxes, thr: Thresholds) -> list[Finding]:
    """Every suspect of one image: each label judged once, then the unexplained confident
    predictions (missing objects)."""
    iou = box_iou(image.label_boxes, image.pred_boxes)
    findings: list[Finding] = []
    explained: list[int] = []  # predictions that accuse a label: not also a missing object
    for i in range(len(image.label_boxes)):
        finding, accuser = _judge_label(image, iou[i], i, thr)
        if finding is not None:
            findings.append(finding)
        if accuser is not None:
            explained.append(accuser)
    findings += _missing(image, iou, explained, thr)
    return findings


def _judge_label(
    image: ImageBoxes, iou: np.ndarray, i: int, thr: Thresholds
) -> tuple[Finding | None, int | None]:
    """Label ``i`` (its IoU with each prediction): spurious, wrong class, loose, or fine; and
    the prediction that makes it loose (None: none)."""
    scores, classes = image.pred_scores, image.pred_classes
    own = int(image.label_classes[i])
    box = _as_box(image.label_boxes[i])
    over = iou >= thr.overlap_iou
    best_over = float(scores[over].max()) if over.any() else 0.0
    if best_over < thr.low:
        score = 1.0 - best_over / thr.low if thr.low > 0 else 1.0
        return Finding(SPURIOUS, score, box, i, own, None, None, best_over), None
    matched = iou >= thr.match_iou
    if matched.any():
        j = int(np.flatnonzero(matched)[np.argmax(scores[matched])])
        same = matched & (classes == own)
        own_score = float(scores[same].max()) if same.any() else 0.0
        margin = float(scores[j]) - own_score
        if classes[j] != own and scores[j] >= thr.confident and margin >= thr.class_margin:
            accuser = (float(iou[j]), float(scores[j]), _as_box(image.pred_boxes[j]))
            return Finding(WRONG_CLASS, margin, box, i, own, int(classes[j]), *accuser), None
    sure = over & (classes == own) & (scores >= thr.confident)
    if sure.any() and float(iou[sure].max()) < thr.tight_iou:
        j = int(np.flatnonzero(sure)[np.argmax(scores[sure])])
        looseness = (1.0 - float(iou[j])) / max(1.0 - thr.overlap_iou, 1e-12)
        score = float(np.clip(scores[j] * looseness, 0.0, 1.0))
        accuser = (float(iou[j]), float(scores[j]), _as_box(image.pred_boxes[j]))
        return Finding(LOOSE_BOX, score, box, i, own, own, *accuser), j
    return None, None


def _missing(
    image: ImageBoxes, iou: np.ndarray, explained: list[int], thr: Thresholds
) -> list[Finding]:
    """Confident predictions no label matches, one per object: the most confident of a group
    of overlapping ones (IoU ≥ ``match_iou``); none where a loose label's accuser is, nor in
    an ignore region."""
    scores = image.pred_scores
    unmatched = ~(iou >= thr.match_iou).any(axis=0) if len(iou) else np.ones(len(scores), bool)
    ignore = image.ignore_boxes if image.ignore_boxes is not None else np.zeros((0, 4))
    candidates = unmatched & (scores >= thr.confident) & ~_inside_ignore(image.pred_boxes, ignore)
    kept: list[int] = list(explained)
    findings = []
    for j in sorted(np.flatnonzero(candidates), key=lambda k: -scores[k]):
        if kept and box_iou(image.pred_boxes[j], image.pred_boxes[kept]).max() >= thr.match_iou:
            continue
        kept.append(int(j))
        box = _as_box(image.pred_boxes[j])
        cls = int(image.pred_classes[j])
        overlap = float(iou[:, j].max()) if len(iou) else 0.0
        score = float(scores[j]) * (1.0 - overlap)
        found = Finding(MISSING, score, box, None, None, cls, overlap, float(scores[j]), box)
        findings.append(found)
    return findings


def matched_scores(image: ImageBoxes, match_iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Each prediction's score and whether it matches a label of its class (greedy, the most
    confident first, each label once: COCO's matching at one IoU), for :func:`f1_optimal_score`."""
    order = np.argsort(-image.pred_scores, kind="stable")
    iou = box_iou(image.label_boxes, image.pred_boxes)
    taken = np.zeros(len(image.label_boxes), dtype=bool)
    hits = np.zeros(len(order), dtype=bool)
    for rank, j in enumerate(order):
        ok = (~taken) & (image.label_classes == image.pred_classes[j]) & (iou[:, j] >= match_iou)
        if ok.any():
            taken[int(np.flatnonzero(ok)[np.argmax(iou[ok, j])])] = True
            hits[rank] = True
    return image.pred_scores[order], hits


def f1_optimal_score(images: list[ImageBoxes], fallback: float = 0.5) -> float:
    """The score at which the predictions best agree with the labels (the largest F1 of
    precision and recall at IoU 0.5, class-aware): where this model's confidence means "an
    object is there". A few labelling errors barely move it. ``fallback`` when nothing matches."""
    matched = [matched_scores(image) for image in images]
    labels = sum(len(image.label_boxes) for image in images)
    if not matched or labels == 0:
        return fallback
    scores = np.concatenate([m[0] for m in matched])
    hits = np.concatenate([m[1] for m in matched])
    if not hits.any():
        return fallback
    order = np.argsort(-scores, kind="stable")
    scores, hits = scores[order], hits[order]
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(tp) + 1)
    recall = tp / labels
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(scores[int(np.argmax(f1))])
