"""The augmentation preview: one real image of the project with its annotations, and the same
image after the training pipeline the user chose (resize into the input size, the preset's or
the custom pipeline's transforms, degenerate objects dropped) — what a training step sees.

The same function checks a custom pipeline before a run starts: a transform that builds but
fails on a real image (e.g. one that needs keys the app's data does not have) fails the request
with its message, not the run at its first batch.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from src.config.augmentations import augmentation_transforms
from src.config.compose_pipelines import train_pipeline
from src.config.params import CUSTOM_AUGMENTATION, ConfigError, TrainParams
from src.data.sample_rng import seeded
from src.runs.report import draw, jpeg_data_url, truth

PREVIEW_SIDE = 360  # px: the longer side of each preview JPEG (bounded page data)
_BEFORE, _AFTER = (255, 200, 0), (0, 220, 120)  # annotation colours (RGB)


@dataclass
class AugmentationPreview:
    item: str  # "dataset/image name"
    sample: int  # the draw: the same sample gives the same picture
    before: str  # JPEG data URLs
    after: str
    objects_before: int
    objects_after: int
    size_after: tuple[int, int]  # (width, height) the model is given

    def caption(self) -> str:
        w, h = self.size_after
        return (
            f"{self.item}: {self.objects_before} objects | after the training pipeline: {w}x{h}, "
            f"{self.objects_after} objects (sample {self.sample})"
        )


class NothingLeft(ConfigError):
    """The pipeline left no object on the image: training skips such a sample (not an error
    of the pipeline; the preview says so and suggests another draw)."""


class AugmentationPreviewer:
    """Previews of one project; the parsed dataset is kept for the next click (same classes and
    task), so another sample costs one image through the pipeline."""

    def __init__(self, cache_dir: str | None = None) -> None:
        self.cache_dir = cache_dir
        self._key: tuple | None = None
        self._dataset: Any = None
        self._lock = threading.Lock()

    def _dataset_for(self, project_dir: str, params: TrainParams) -> Any:
        from src.data.mmdet_dataset import SuperviselyDataset

        key = (str(project_dir), params.task, tuple(params.classes))
        if key != self._key:
            self._dataset = SuperviselyDataset(
                project_dir=str(project_dir),
                classes=list(params.classes),
                task=params.task,
                keep_empty_images=False,  # a picture with objects shows what the transforms do
                cache_dir=self.cache_dir,
                pipeline=[],
                serialize_data=False,
            )
            self._key = key
        if len(self._dataset) == 0:
            raise ConfigError("no image has objects of the selected classes: nothing to preview")
        return self._dataset

    def preview(self, project_dir: str, params: TrainParams, sample: int) -> AugmentationPreview:
        """Image ``sample % images`` through the pipeline, with the random draws seeded by
        ``sample``. Raises ConfigError with what is wrong with the pipeline."""
        from src.data.mmdet_dataset import transform_problems

        problems = transform_problems(augmentation_transforms(params))
        if problems:
            raise ConfigError("custom augmentation pipeline: " + "; ".join(problems))
        with self._lock:
            dataset = self._dataset_for(project_dir, params)
            info = dataset.get_data_info(sample % len(dataset))
        before, after = _through_the_pipeline(info, params, sample)
        classes = list(params.classes)
        before_img = _rgb(before["img"])
        after_img = _rgb(after["img"])
        return AugmentationPreview(
            item=_item_name(info),
            sample=sample,
            before=jpeg_data_url(draw(before_img, truth(info, classes), _BEFORE), PREVIEW_SIDE),
            after=jpeg_data_url(draw(after_img, _objects(after, classes), _AFTER), PREVIEW_SIDE),
            objects_before=len(info["instances"]),
            objects_after=len(after["gt_bboxes"]),
            size_after=(after_img.shape[1], after_img.shape[0]),
        )


def _through_the_pipeline(info: dict, params: TrainParams, sample: int) -> tuple[dict, dict]:
    """A data-list item loaded as it is (image and annotations), and through the training
    pipeline without the packing, with the random draws seeded by ``sample``."""
    steps = train_pipeline(params)
    before = _compose(steps[:2])(dict(info))  # load image and annotations only
    with seeded(sample):
        try:
            after = _compose(steps[:-1])(dict(info))
        except Exception as exc:
            raise ConfigError(
                f"the training pipeline fails on {info.get('img_path')}: "
                f"{type(exc).__name__}: {exc}"
            ) from None
    if after is None:  # FilterAnnotations dropped every object: mmdet skips the image
        raise NothingLeft(
            "after the pipeline no object is left on this image (training skips such "
            "samples): try another sample, or a milder crop/resize"
        )
    return before, after


def check_pipeline_on_an_image(dataset: Any, params: TrainParams) -> None:
    """A custom pipeline through one real image of the run's training ``dataset`` (already
    built by the request's data check; the first with objects): ConfigError says why it cannot
    train. Presets are the app's own and are not re-checked."""
    if params.augmentation != CUSTOM_AUGMENTATION or len(dataset) == 0:
        return
    infos = (dataset.get_data_info(i) for i in range(len(dataset)))
    info = next((i for i in infos if i["instances"]), None) or dataset.get_data_info(0)
    if hasattr(dataset, "ensure_image"):  # a tile is cut when first needed
        dataset.ensure_image(info)
    with contextlib.suppress(NothingLeft):
        _through_the_pipeline(info, params, sample=0)


def _compose(steps: list[dict]) -> Any:
    from mmengine.dataset import Compose
    from mmengine.registry import init_default_scope

    init_default_scope("mmdet")
    return Compose(steps)


def _rgb(image: np.ndarray) -> np.ndarray:
    """mmcv's BGR (float after photometric distortion) as 8-bit RGB for drawing."""
    return np.ascontiguousarray(np.clip(image, 0, 255).astype(np.uint8)[..., ::-1])


def _objects(results: dict, classes: list[str]) -> list[dict]:
    """The pipeline's boxes (and masks) in the drawing's format."""
    from pycocotools import mask as mask_utils

    boxes = results["gt_bboxes"]
    boxes = boxes.tensor.numpy() if hasattr(boxes, "tensor") else np.asarray(boxes)
    labels = results["gt_bboxes_labels"]
    masks = results.get("gt_masks")
    bitmaps = masks.to_ndarray() if masks is not None and len(masks) else None
    objects = []
    for i, ((x1, y1, x2, y2), label) in enumerate(
        zip(boxes.tolist(), labels.tolist(), strict=True)
    ):
        obj = {"bbox": [x1, y1, x2 - x1, y2 - y1], "label": classes[int(label)]}
        if bitmaps is not None:
            rle = mask_utils.encode(np.asfortranarray(bitmaps[i].astype(np.uint8)))
            obj["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
        objects.append(obj)
    return objects


def _item_name(info: dict) -> str:
    from pathlib import Path

    path = Path(info.get("img_path", "?"))
    return f"{path.parent.parent.name}/{path.name}"
