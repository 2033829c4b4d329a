"""A run's model over one image at a time, for pre-labelling: mmdet's own inference
(``inference_detector``) on the run's ``config.py`` and checkpoint, whole or sliced as the run
validated, each detection kept at its class's score threshold.

One image in, its detections out: a project of any size streams through it. The thresholds are
the checkpoint's own per class (``src.evaluation.class_thresholds``, kept in its meta), the
default for a class without one, or one for every class when the user gives it; the model's own
``score_thr`` is lowered to the lowest of them, so that no threshold asks for boxes the head
already dropped.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from src.config.compose_model import set_test_limits
from src.config.metadata import RunMetadata
from src.config.text import load_config_file
from src.core.layout import CLASS_THRESHOLDS
from src.core.tasks import SEGMENTATION
from src.data.geometry import crop_to_rle
from src.export.onnx_runtime import DEFAULT_SCORE_THR
from src.runs.checkpoint_io import checkpoint_meta


@dataclass
class Found:
    """One image's detections, in its pixels, best first."""

    boxes: np.ndarray  # [N, 4] x1, y1, x2, y2
    scores: np.ndarray  # [N]
    labels: np.ndarray  # [N] indices into the run's classes
    masks: list[dict] | None = None  # COCO RLE at the image's size (instance segmentation)

    def subset(self, keep: np.ndarray) -> Found:
        index = np.flatnonzero(keep)
        masks = [self.masks[i] for i in index] if self.masks is not None else None
        return Found(self.boxes[index], self.scores[index], self.labels[index], masks)


def score_thresholds(
    classes: list[str], own: Mapping[str, float] | None, score_thr: float | None
) -> np.ndarray:
    """Each class's lowest kept score, by label: ``score_thr`` for every class when given, else
    the class's own (chosen on the validation split), else ``DEFAULT_SCORE_THR`` (as predict
    applies them to an exported model: ``OnnxDetector.score_thresholds``)."""
    if score_thr is not None:
        return np.full(len(classes), float(score_thr))
    own = own or {}
    return np.array([float(own.get(name, DEFAULT_SCORE_THR)) for name in classes])


class RunModel:
    """A run's model, ready to predict single images (BGR arrays).

    Args:
        config_file: the run's ``config.py``.
        checkpoint: its weights (a training checkpoint or an inference export).
        score_thr: one threshold for every class (None: the checkpoint's per class).
        device: ``cpu`` or ``cuda:N`` (None: the first GPU when there is one).
    """

    def __init__(
        self,
        config_file: str | Path,
        checkpoint: str | Path,
        score_thr: float | None = None,
        device: str | None = None,
    ) -> None:
        import torch

        from src.export.onnx_export import load_model

        cfg = load_config_file(config_file)
        run = RunMetadata.of(cfg)
        self.classes = list(run.classes)
        self.masks = run.task_type == SEGMENTATION
        self.checkpoint = Path(checkpoint)
        self.class_thresholds = checkpoint_meta(checkpoint).get(CLASS_THRESHOLDS) or {}
        self.thresholds = score_thresholds(self.classes, self.class_thresholds, score_thr)
        set_test_limits(cfg.model, None, float(self.thresholds.min(initial=DEFAULT_SCORE_THR)))
        dataset = (cfg.get("val_dataloader") or {}).get("dataset") or {}
        self.slicing: dict[str, Any] = dict(dataset.get("slicing") or {})
        self.colors = _palette(cfg.get("test_dataloader") or {}, self.classes)
        device = device or ("cuda:0" if torch.cuda.is_available() else "cpu")
        self.model = load_model(cfg, checkpoint).to(device)

    def predict(self, image: np.ndarray) -> Found:
        """The image's detections at their class's threshold; a sliced run's model predicts an
        image larger than its tiles tile by tile, merged as its validation merged them."""
        if self.slicing and max(image.shape[:2]) > int(self.slicing["size"]):
            found = self._sliced(image)
        else:
            found = self._whole(image)
        return found.subset(found.scores >= self.thresholds[found.labels])

    def _detect(self, images: list[np.ndarray]) -> list[tuple]:
        """mmdet's detections of each image: boxes, scores, labels (and boolean masks)."""
        from mmdet.apis import inference_detector

        out = []
        with warnings.catch_warnings():  # mmdet 3.3's autocast, torch's meshgrid: noise
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            results = inference_detector(self.model, images)
        for result in results:
            found = result.pred_instances.cpu().numpy()
            parts = (found.bboxes.astype(np.float64), found.scores, found.labels.astype(int))
            masks = found.get("masks") if self.masks else None
            out.append((*parts, list(masks.astype(bool))) if masks is not None else parts)
        return out

    def _whole(self, image: np.ndarray) -> Found:
        boxes, scores, labels, *masks = self._detect([image])[0]
        height, width = image.shape[:2]
        rles = [_mask_rle(m, height, width) for m in masks[0]] if masks else None
        return Found(boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1), rles)

    def _sliced(self, image: np.ndarray) -> Found:
        from src.engine.tile_merge import predict_sliced

        merged = predict_sliced(
            self._detect, image, int(self.slicing["size"]),
            float(self.slicing.get("overlap", 0.2)), bool(self.slicing.get("full_image", True)),
        )  # fmt: skip
        masks = merged.masks if self.masks else None
        if self.masks and masks is None:  # no detection in any tile
            masks = []
        return Found(merged.boxes, merged.scores, merged.labels.astype(int), masks)


def _mask_rle(mask: np.ndarray, height: int, width: int) -> dict:
    """A full-size boolean mask as COCO RLE, its runs computed on the crop around its pixels."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return crop_to_rle(np.zeros((0, 0), bool), 0, 0, height, width)
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return crop_to_rle(mask[y0:y1, x0:x1], int(x0), int(y0), height, width)


def _palette(loader: Mapping[str, Any], classes: list[str]) -> dict[str, list[int]]:
    """The run's class colours (RGB), by class: the palette its test dataset carries for mmdet's
    inferencers (the project's colours when it trained: ``compose_data.inference_dataset_cfg``)."""
    meta = (loader.get("dataset") or {}).get("metainfo") or {}
    palette = list(meta.get("palette") or [])
    return {c: list(palette[i]) for i, c in enumerate(classes) if i < len(palette)}
