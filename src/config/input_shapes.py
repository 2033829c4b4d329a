"""What image shapes a model can take, and making sure it gets them.

Most mmdet detectors merge feature maps of neighbouring strides (FPN, PAFPN, CSPNeXt-PAFPN, ...).
When an image's padded side is not a multiple of the largest stride, two levels differ by one
cell and the neck fails (``Sizes of tensors must match``). mmdet's zoo configs avoid it with
COCO-specific steps — a fixed-size ``Pad`` in RTMDet's pipelines, ``BatchFixedSizePad`` or
``BatchSyncRandomResize`` batch augments — which a composed config for other data cannot keep as
they are. The one place that pads every batch of every pipeline (train, val, test, the serving
app's inference, any augmentation preset or user pipeline) is the model's data preprocessor:
:func:`ensure_stride_padding` sets its ``pad_size_divisor`` to what the model family needs
(:func:`required_divisor`). :func:`padding_problems` warns when an edited config drops it.

Pure: config dicts in, values out (the dry run's check of real images through the real model is
``src.engine.shape_check``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger(__name__)

# The largest stride whose feature maps a neck merges with a neighbouring level, for mmdet's
# backbones (ResNet, CSPNeXt, Darknet, Swin, PVT, ... all reach stride 32).
DEFAULT_DIVISOR = 32
# Detectors that take any size: their transformers mask the padding, nothing is merged by shape.
_ANY_SIZE_DETECTORS = {
    "DETR",
    "ConditionalDETR",
    "DABDETR",
    "DeformableDETR",
    "DINO",
    "DDQDETR",
}
# Necks that merge levels up to P7 (stride 128) by shape (mmdet pads NAS-FPN's inputs to 128).
_NECK_DIVISORS = {"NASFPN": 128}


def required_divisor(model: dict) -> int:
    """The multiple every padded image side must be for this model to run (1: any size)."""
    if model.get("type") in _ANY_SIZE_DETECTORS:
        return 1
    necks = model.get("neck")
    necks = necks if isinstance(necks, list | tuple) else [necks]
    divisor = DEFAULT_DIVISOR
    for neck in necks:
        if isinstance(neck, dict):
            divisor = max(divisor, _NECK_DIVISORS.get(neck.get("type"), 1))
    return divisor


def ensure_stride_padding(model: dict, with_masks: bool) -> int:
    """Make the model's data preprocessor pad every batch to :func:`required_divisor` (never
    below the zoo config's own divisor); pad ground-truth masks with the images when training
    instance segmentation, so they stay aligned. Returns the divisor set."""
    preprocessor = model.get("data_preprocessor")
    if not isinstance(preprocessor, dict):
        return 1
    own = int(preprocessor.get("pad_size_divisor") or 1)
    divisor = max(own, required_divisor(model))
    preprocessor["pad_size_divisor"] = divisor
    if with_masks and divisor > 1:
        preprocessor["pad_mask"] = True
    return divisor


def _pipeline_divisor(pipeline: Iterable[dict]) -> tuple[int, tuple[int, int] | None]:
    """(size_divisor, fixed pad size) the pipeline's own Pad steps give; (1, None) without."""
    divisor, fixed = 1, None
    for step in pipeline or []:
        if not isinstance(step, dict) or step.get("type") != "Pad":
            continue
        if step.get("size_divisor"):
            divisor = max(divisor, int(step["size_divisor"]))
        if step.get("size"):
            fixed = tuple(int(v) for v in step["size"])
    return divisor, fixed


def padding_problems(cfg: Any) -> list[str]:
    """Warnings for a config whose pipelines can hand the model shapes it cannot take.

    A pipeline is fine when the data preprocessor's ``pad_size_divisor``, a ``Pad(size_divisor)``
    step, or a fixed ``Pad(size)`` whose sides are multiples make every side a multiple of
    :func:`required_divisor`. Each warning names the pipeline and what to set.
    """
    model = cfg.get("model") or {}
    need = required_divisor(model)
    if need <= 1:
        return []
    preprocessor = model.get("data_preprocessor") or {}
    batch_divisor = int(preprocessor.get("pad_size_divisor") or 1)
    problems = []
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        dataset = (cfg.get(loader) or {}).get("dataset") or {}
        pipeline = dataset.get("pipeline") or (dataset.get("dataset") or {}).get("pipeline") or []
        divisor, fixed = _pipeline_divisor(pipeline)
        have = max(divisor, batch_divisor)
        if have % need == 0:
            continue
        if fixed and all(side % need == 0 for side in fixed):
            continue
        if any(isinstance(s, dict) and s.get("type") == "RandomCenterCropPad" for s in pipeline):
            continue  # CenterNet/CornerNet pad by their own rule (test_pad_mode)
        problems.append(
            f"{loader}: images reach the model padded to multiples of {have} "
            f"px, but {model.get('type', 'this model')} needs multiples of {need} (its neck merges "
            f"feature maps of strides up to {need}); images whose resized sides are not multiples "
            f"of {need} will crash it. Set model.data_preprocessor.pad_size_divisor={need} "
            f"(what the app composes) or add dict(type='Pad', size_divisor={need}) to the pipeline"
        )
    return problems
