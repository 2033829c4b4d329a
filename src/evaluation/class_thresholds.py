"""Per-class score thresholds: each class's F1-optimal confidence on the validation split.

The SDK's Model Benchmark picks one confidence for the whole model
(``MetricProvider.calculate`` → ``_MetricProvider._calculate_score_profile`` and
``get_f1_optimal_conf``): every true and false positive sorted by score, TP and FP counted at each
IoU threshold 0.50:0.95, F1 averaged over those thresholds (``nanmean``), the score of the best
F1 taken. A rare class, or one the model is unsure of, often wants a lower threshold than a
frequent, confident one, and mmdet, Ultralytics and the SDK offer only the one (mmdetection#4114,
yolov5#8073). Here the SDK's own profile is computed on one class's matches at a time: its true
positives, its false positives (a false positive's class is the predicted one) and the false
negatives of its ground truth, from the same match list the evaluator made — so a threshold means
what the platform's numbers mean. Over all matches together this is the SDK's global threshold
(tests/app/test_class_thresholds.py replays it against a real evaluator run).

A class whose predictions never match an object (no true positive) has no profile to optimise: it
keeps the global threshold, and its entry says so (``source: "global"``).

numpy only: the SDK's matches are plain dicts.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

OWN, GLOBAL = "class", "global"  # where a class's threshold comes from


@dataclass(frozen=True)
class ScoreProfile:
    """The SDK's confidence score profile: one point per true or false positive, best score
    first; precision and recall averaged over the IoU thresholds, F1 their per-threshold F1's
    ``nanmean`` (as ``_MetricProvider._calculate_score_profile``)."""

    scores: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    ground_truth: int  # the objects the recall is out of (TP + FN)

    def optimum(self) -> tuple[float, float] | None:
        """(F1-optimal confidence, its F1) as the SDK's ``get_f1_optimal_conf`` picks it (the
        first of equal F1s); None when no point has an F1 (no true positive)."""
        if not np.any(~np.isnan(self.f1)):
            return None
        best = int(np.nanargmax(self.f1))
        return float(self.scores[best]), float(self.f1[best])

    def at(self, threshold: float) -> dict[str, float | None]:
        """Precision, recall and F1 of the detections scoring ``threshold`` or more (what keeping
        them gives, as the SDK's ``filter_by_conf``); precision is None when none is kept,
        recall when there is no ground truth."""
        kept = int(np.count_nonzero(self.scores >= threshold))
        if kept == 0:
            return {"precision": None, "recall": 0.0 if self.ground_truth else None, "f1": 0.0}
        i = kept - 1
        f1 = float(self.f1[i])
        return {
            "precision": float(self.precision[i]),
            "recall": float(self.recall[i]) if self.ground_truth else None,
            "f1": 0.0 if np.isnan(f1) else f1,  # no true positive at any IoU threshold
        }


def score_profile(
    matches: Iterable[Mapping[str, Any]], iou_thresholds: Sequence[float]
) -> ScoreProfile:
    """The SDK's score profile of ``matches`` (its match dicts: ``type`` TP/FP/FN, ``score``,
    ``iou``), computed as ``_MetricProvider._calculate_score_profile`` does, ties in its order."""
    matches = list(matches)
    tp = [m for m in matches if m["type"] == "TP"]
    fp = [m for m in matches if m["type"] == "FP"]
    n_gt = len(tp) + sum(1 for m in matches if m["type"] == "FN")
    ranked = sorted(tp + fp, key=lambda m: m["score"], reverse=True)
    thresholds = np.asarray(iou_thresholds, dtype=float)
    scores = np.array([m["score"] for m in ranked], dtype=float)
    ious = np.array([m["iou"] if m["type"] == "TP" else 0.0 for m in ranked], dtype=float)
    iou_idxs = np.searchsorted(thresholds, ious + np.spacing(1))
    f1s, precision, recall = [], np.zeros(len(scores)), np.zeros(len(scores))
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of a column of NaN only
        for k in range(len(thresholds)):
            hits = iou_idxs > k
            tps, fps = np.cumsum(hits), np.cumsum(~hits)
            p, r = tps / (tps + fps), tps / n_gt
            f1s.append(2 * p * r / (p + r))
            precision, recall = precision + p, recall + r
        f1 = np.nanmean(np.array(f1s), axis=0) if f1s and len(scores) else np.zeros(0)
    n = max(len(thresholds), 1)
    return ScoreProfile(scores, precision / n, recall / n, f1, n_gt)


def class_thresholds(
    matches: Sequence[Mapping[str, Any]],
    iou_thresholds: Sequence[float],
    classes: Mapping[int, str],
    global_threshold: float,
) -> dict[str, Any]:
    """Each class's threshold (``classes``: category id → name) and what it gives against the
    global one: ``{"global_threshold", "thresholds": {name: threshold applied}, "classes":
    {name: {threshold, source, ground_truth, precision, recall, f1, at_global: {...}}}}``."""
    by_class: dict[int, list[Mapping[str, Any]]] = {cat: [] for cat in classes}
    for match in matches:
        by_class.setdefault(match["category_id"], []).append(match)
    entries = {}
    for cat, name in classes.items():
        profile = score_profile(by_class[cat], iou_thresholds)
        best = profile.optimum()
        threshold = best[0] if best else float(global_threshold)
        entries[name] = {
            "threshold": threshold,
            "source": OWN if best else GLOBAL,
            "ground_truth": profile.ground_truth,
            **profile.at(threshold),
            "at_global": profile.at(float(global_threshold)),
        }
    return {
        "global_threshold": float(global_threshold),
        "thresholds": {name: entry["threshold"] for name, entry in entries.items()},
        "classes": entries,
    }


def of_metric_provider(mp: Any, order: Sequence[str] = ()) -> dict[str, Any] | None:
    """The thresholds of an SDK evaluation (its ``MetricProvider``: matches, IoU thresholds,
    classes, the global F1-optimal confidence), the classes in ``order`` (the run's: the SDK
    sorts them its own way) and then the rest; None when it has no matches to choose from (a
    model with no true positive at all: the SDK has no global threshold either)."""
    if getattr(mp, "f1_optimal_conf", None) is None or not hasattr(mp, "matches"):
        return None
    rank = {name: i for i, name in enumerate(order)}
    pairs = sorted(zip(mp.cat_ids, mp.cat_names, strict=True),
                   key=lambda pair: rank.get(pair[1], len(rank)))  # fmt: skip
    return class_thresholds(mp.matches, mp.iouThrs, dict(pairs), float(mp.f1_optimal_conf))


def fallback_notes(thresholds: Mapping[str, Any] | None, split: str = "val") -> list[str]:
    """A note for each class that keeps the global threshold, and why."""
    if not thresholds:
        return []
    value = thresholds["global_threshold"]
    return [
        f"class {name}: no prediction of it matched an object on the {split} split, so it has "
        f"no score threshold of its own and keeps the global one ({value:.3f})"
        for name, entry in thresholds["classes"].items()
        if entry["source"] == GLOBAL
    ]
