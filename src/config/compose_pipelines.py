"""The pipelines of a composed config: training (resize, the augmentations, padding, packing)
and validation (the same resize; a model's own test pipeline where its heads need it).

Apart from ``compose`` because the augmentation preview runs the training pipeline on its own.
"""

from __future__ import annotations

import copy

from mmengine.config import Config

from src.config.augmentations import augmentation_transforms
from src.config.params import TrainParams
from src.core.tasks import SEGMENTATION

# Transforms whose output the heads of some models read (CenterNet/CornerNet need "border").
_KEEP_MODEL_TEST_PIPELINE_IF = {"RandomCenterCropPad"}


def _fixed_input_size(model_test_pipeline: list[dict]) -> bool:
    """Whether the zoo model resizes to an exact size (SSD: its last layers need the full input
    size on both sides, which keep-ratio resizing of a 16:9 photo does not give)."""
    return any(
        t.get("type") == "Resize" and t.get("keep_ratio") is False for t in model_test_pipeline
    )


def train_pipeline(
    params: TrainParams, *, keep_ratio: bool = True, pad_to_input: bool = False
) -> list[dict]:
    """The training pipeline: load, resize into the input size, the augmentations (preset or
    custom), optionally pad to the full input size, drop degenerate objects, pack. The
    augmentation preview runs the same list without the final packing."""
    size = tuple(int(v) for v in params.input_size)
    is_segm = params.task == SEGMENTATION
    return [
        dict(type="LoadImageFromFile"),
        _load_annotations(is_segm),
        dict(type="Resize", scale=size, keep_ratio=keep_ratio),
        *augmentation_transforms(params),
        *(_pad_to(size) if pad_to_input else []),
        dict(type="FilterAnnotations", min_gt_bbox_wh=(1, 1), keep_empty=False, by_mask=is_segm),
        dict(type="PackDetInputs"),
    ]


def _load_annotations(is_segm: bool) -> dict:
    """Only what the task loads: SAHI takes a config whose train pipeline has any
    ``*mask*=True`` key (mmdet's default ``poly2mask=True`` written out) for a mask model."""
    return dict(type="LoadAnnotations", with_bbox=True, **({"with_mask": True} if is_segm else {}))


def _pad_to(size: tuple[int, ...]) -> list[dict]:
    """Pad every image to the full input size (grey, as mmdet's YOLO-style pipelines do)."""
    return [dict(type="Pad", size=size, pad_val=dict(img=(114, 114, 114)))]


def set_pipelines(cfg: Config, params: TrainParams, is_segm: bool, min_input_size: int) -> None:
    size = tuple(int(v) for v in params.input_size)
    model_test = cfg.get("test_dataloader", {}).get("dataset", {}).get("pipeline") or []
    keep_ratio = not _fixed_input_size(model_test)
    # Models with a smallest side (SSD, DDOD, DINO) see the full input size on both sides: a
    # panorama or a crop would otherwise reach them too small. Every step before it yields at
    # most the input size (keep-ratio resize into it; crops to it), as Pad(size) requires.
    pad_to_input = min_input_size > 32 or not keep_ratio
    train = train_pipeline(params, keep_ratio=keep_ratio, pad_to_input=pad_to_input)
    if any(t.get("type") in _KEEP_MODEL_TEST_PIPELINE_IF for t in model_test):
        test_pipeline = _resized_model_test_pipeline(model_test, size)
    else:
        test_pipeline = [
            dict(type="LoadImageFromFile"),
            dict(type="Resize", scale=size, keep_ratio=keep_ratio),
            *(_pad_to(size) if pad_to_input else []),
            _load_annotations(is_segm),
            dict(
                type="PackDetInputs",
                meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor"),
            ),
        ]
    cfg.train_pipeline = train
    cfg.test_pipeline = test_pipeline


def _resized_model_test_pipeline(model_test: list[dict], size: tuple[int, ...]) -> list[dict]:
    """The model's own test pipeline (CenterNet/CornerNet: their heads read its padding border),
    resized to the input size first: their zoo pipelines test at the original size, and a 4K
    photo then takes minutes on Hourglass-104. Their heads undo the border and the scale factor,
    which is packed for that."""
    pipeline = copy.deepcopy(model_test)
    if any(t.get("type") == "Resize" for t in pipeline):
        return pipeline
    pipeline.insert(1, dict(type="Resize", scale=size, keep_ratio=True))
    for step in pipeline:
        keys = step.get("meta_keys") if step.get("type") == "PackDetInputs" else None
        if keys is not None and "scale_factor" not in keys:
            step["meta_keys"] = (*keys, "scale_factor")
    return pipeline
