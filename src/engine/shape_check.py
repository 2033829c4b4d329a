"""The dry run's shape check: the project's extreme images through the real pipelines and model.

Stride padding is set when the config is composed (``src.config.input_shapes``); this check proves
it on the images a project actually has (the largest, the widest, the tallest, the smallest),
naming any image the model cannot take before a run starts (``--dry-run``, the Editor's Validate).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


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
    if hasattr(dataset, "ensure_image"):  # a tile is cut when first needed
        dataset.ensure_image(info)
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
