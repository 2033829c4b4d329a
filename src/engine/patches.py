"""Everything the app changes in the libraries, applied in one place: :func:`apply`, once per
process, before a Runner is built or a model predicts (the session, each rank, the dry run's
shape check, the evaluation, the zoo probe). Importing our modules patches nothing.

- mmengine: checkpoints load through our allowlist (URLs through our download) and are written
  crash-safely (:func:`src.runs.checkpoint_io.install_into_mmengine`).
- mmdet 3.3.0: the smallest change to its classes that restores the documented behaviour of an
  offered architecture, each naming its upstream report.
"""

from __future__ import annotations

_applied = False


def apply() -> None:
    """Apply every fix (idempotent)."""
    global _applied
    if _applied:
        return
    from mmdet.models.dense_heads import SSDHead

    from src.runs.checkpoint_io import install_into_mmengine

    install_into_mmengine()

    # open-mmlab/mmdetection#11780: BaseDenseHead._predict_by_feat_single reads self.loss_cls,
    # which SSDHead never sets (it skips AnchorHead.__init__), so SSD cannot predict at all.
    # With no loss_cls the check falls through to softmax scores, as in mmdet 3.0.
    if not hasattr(SSDHead, "loss_cls"):
        SSDHead.loss_cls = None
    _applied = True
