"""What image shapes a model can take, and making sure it gets them.

Most mmdet detectors merge feature maps of neighbouring strides (FPN, PAFPN, CSPNeXt-PAFPN, ...).
When an image's padded side is not a multiple of the largest stride, two levels differ by one
cell and the neck fails (``Sizes of tensors must match``). mmdet's zoo configs avoid it with
COCO-specific steps — a fixed-size ``Pad`` in RTMDet's pipelines, ``BatchFixedSizePad`` or
``BatchSyncRandomResize`` batch augments — which a composed config for other data cannot keep as
they are. The one place that pads every batch of every pipeline (train, val, test, the serving
app's inference, any augmentation preset or user pipeline) is the model's data preprocessor:
:func:`ensure_stride_padding` sets its ``pad_size_divisor`` to what the model family needs
(:func:`required_divisor`). :func:`padding_problems` warns when an edited config drops it, and
:func:`check_input_shapes` runs the project's extreme images through the real pipelines and model
(``--dry-run``), naming any image the model cannot take.

The first three functions are pure (config dicts in, values out); the last builds mmdet objects.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
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


# --------------------------------------------------------------------------- dry-run check


@dataclass
class ShapeCheck:
    """One image through one pipeline: its sizes on the way to the model, and the outcome."""

    split: str
    item: str
    original: tuple[int, int]  # (width, height) of the annotation
    resized: tuple[int, int] | None = None  # after the pipeline
    padded: tuple[int, int] | None = None  # what the model sees (after the data preprocessor)
    error: str | None = None

    def describe(self) -> str:
        def wh(size: tuple[int, int] | None) -> str:
            return f"{size[0]}x{size[1]}" if size else "?"

        text = (
            f"{self.split:<5} {self.item} {wh(self.original)} -> {wh(self.resized)} "
            f"-> padded {wh(self.padded)}"
        )
        return f"{text}: {self.error}" if self.error else text


def extreme_images(data_list: list[dict], limit: int = 4) -> list[dict]:
    """The images most likely to break a model: smallest, largest, widest and tallest."""
    if not data_list:
        return []
    picks = [
        min(data_list, key=lambda d: d["width"] * d["height"]),
        max(data_list, key=lambda d: d["width"] * d["height"]),
        max(data_list, key=lambda d: d["width"] / d["height"]),
        min(data_list, key=lambda d: d["width"] / d["height"]),
    ]
    chosen: list[dict] = []
    for pick in picks:
        if all(pick is not c for c in chosen):  # one image can be extreme twice
            chosen.append(pick)
    return chosen[:limit]


def check_input_shapes(model: Any, datasets: dict[str, Any]) -> list[ShapeCheck]:
    """Run each split's extreme images through that split's pipeline, the data preprocessor and
    the model (train: a loss forward; val: a prediction), without gradients or weight changes.

    Also checks that the decoded image has the size its annotation claims (a JPEG rotated by its
    EXIF orientation, or a replaced file, would put every box in the wrong place).
    """
    from mmengine.logging import MessageHub

    hub = MessageHub.get_current_instance()  # heads that read the epoch (TOOD) need one
    for key in ("epoch", "iter"):
        if hub.get_info(key) is None:
            hub.update_info(key, 0)
    checks: list[ShapeCheck] = []
    was_training = model.training
    with warnings.catch_warnings():  # mmdet's deprecation chatter would bury the table
        warnings.simplefilter("ignore")
        try:
            for split, dataset in datasets.items():
                model.train(split == "train")
                infos = [dataset.get_data_info(i) for i in range(len(dataset))]
                for info in extreme_images(infos):
                    check = ShapeCheck(split, info["item_name"], (info["width"], info["height"]))
                    checks.append(check)
                    try:
                        _check_one(model, dataset, info, check)
                    except Exception as exc:  # the model's own error, whatever it is
                        check.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        finally:
            model.train(was_training)
    return checks


def _check_one(model: Any, dataset: Any, info: dict, check: ShapeCheck) -> None:
    import torch
    from mmengine.dataset import pseudo_collate

    sample = None
    for _ in range(5):  # a random crop may leave no objects and the pipeline drop the image
        sample = dataset.pipeline(dict(info))
        if sample is not None:
            break
    if sample is None:
        raise ValueError("the pipeline dropped this image 5 times in a row")
    meta = sample["data_samples"].metainfo
    ori_h, ori_w = meta.get("ori_shape", (info["height"], info["width"]))
    if (ori_h, ori_w) != (info["height"], info["width"]):
        raise ValueError(
            f"the image file is {ori_w}x{ori_h} px but its annotation says "
            f"{info['width']}x{info['height']} (EXIF-rotated or replaced file?): fix the "
            "annotation or re-upload the image"
        )
    img_h, img_w = meta["img_shape"][:2]
    check.resized = (int(img_w), int(img_h))
    with torch.no_grad():
        data = model.data_preprocessor(pseudo_collate([sample]), model.training)
        check.padded = (int(data["inputs"].shape[-1]), int(data["inputs"].shape[-2]))
        model(**data, mode="loss" if model.training else "predict")
