"""One rule for which validation numbers matter: the headline mAPs and the primary one.

The primary metric picks the best checkpoint (mmengine's ``save_best``), the best epoch in a
run's summary and the mAP shown for a run (CLI ``runs``, the Model step's Resume table): mask
mAP for instance segmentation, box mAP for detection. A segmentation run logs both, so a
run's metrics alone tell its task: ``segm_mAP`` present means segmentation.
"""

from __future__ import annotations

from src.core.tasks import DETECTION, SEGMENTATION

HEADLINE_SUFFIXES = ("mAP", "mAP_50", "mAP_75")


def primary_metric(task: str) -> str:
    """``segm_mAP`` for instance segmentation, ``bbox_mAP`` otherwise (as mmdet's CocoMetric
    names them, without its ``coco/`` prefix)."""
    return "segm_mAP" if task == SEGMENTATION else "bbox_mAP"


def headline(metrics: dict[str, float]) -> dict[str, float]:
    """The mAP, mAP50 and mAP75 of every kind (bbox, segm), in their order."""
    return {k: v for k, v in metrics.items() if k.endswith(HEADLINE_SUFFIXES)}


def primary_value(metrics: dict[str, float], task: str | None = None) -> float | None:
    """The primary mAP of ``metrics``; without ``task``, the run's metrics say it."""
    if task is None:
        task = SEGMENTATION if "segm_mAP" in metrics else DETECTION
    return metrics.get(primary_metric(task))
