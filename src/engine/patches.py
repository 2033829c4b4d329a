"""Everything the app changes in the libraries, applied in one place: :func:`apply`, once per
process, before a Runner is built or a model predicts (the session, each rank, the dry run's
shape check, the evaluation, the zoo probe). Importing our modules patches nothing.

- mmengine: checkpoints load through our allowlist (URLs through our download) and are written
  crash-safely (:func:`src.runs.checkpoint_io.install_into_mmengine`).
- mmdet 3.3.0: the smallest change to its classes that restores the documented behaviour of an
  offered architecture, each naming its upstream report.
- mmengine's ``ClassBalancedDataset`` (class balance): it hands the train sampler's
  ``SampleIndex`` on (an image's repeats are seeded by their own sampler index, so each repeat
  draws its own augmentation, and a resumed run draws the same ones), and it takes the serving
  app's ``selected_classes`` key and SAHI's ``pipeline`` (``src.config.compose``), which it
  ignores.
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
    _patch_class_balanced_dataset()
    _applied = True


def _patch_class_balanced_dataset() -> None:
    from mmengine.dataset import ClassBalancedDataset

    from src.data.sample_rng import SampleIndex

    original_init = ClassBalancedDataset.__init__

    def __init__(self, *args, selected_classes=None, pipeline=None, **kwargs):
        original_init(self, *args, **kwargs)

    def __getitem__(self, idx):
        if not self._fully_initialized:
            self.full_init()
        ori_index = self._get_ori_dataset_idx(int(idx))
        if isinstance(idx, SampleIndex):
            ori_index = SampleIndex(ori_index, idx.seed, idx.epoch, draw=int(idx))
        return self.dataset[ori_index]

    ClassBalancedDataset.__init__ = __init__
    ClassBalancedDataset.__getitem__ = __getitem__
