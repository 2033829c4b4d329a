"""Fixes for known mmdet 3.3.0 bugs that would stop an offered architecture from working.

Each fix is the smallest change to mmdet's classes that restores the documented behaviour, applied
once per process by :func:`apply`, and names its upstream report.
"""

from __future__ import annotations

_applied = False


def apply() -> None:
    """Apply every fix (idempotent)."""
    global _applied
    if _applied:
        return
    from mmdet.models.dense_heads import SSDHead

    # open-mmlab/mmdetection#11780: BaseDenseHead._predict_by_feat_single reads self.loss_cls,
    # which SSDHead never sets (it skips AnchorHead.__init__), so SSD cannot predict at all.
    # With no loss_cls the check falls through to softmax scores, as in mmdet 3.0.
    if not hasattr(SSDHead, "loss_cls"):
        SSDHead.loss_cls = None
    _applied = True
