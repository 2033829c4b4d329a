"""After each validation, a few fixed validation images with ground truth beside the predictions,
so a user sees the model learn, not only numbers.

The predictions are the ones the validation just made (mmdet's ``CocoMetric`` writes them to its
``outfile_prefix``, ``<prefix>.bbox.json`` / ``.segm.json``); nothing is predicted again. The same
images every time (the first ``count`` of the validation split), each drawn as one small JPEG
(ground truth | predictions above ``score_thr``, at most ``height`` px high), handed to the sinks
that want them (``on_val_images``): a handful of data URLs of a few tens of KB, once per
validation.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from mmengine.hooks import Hook

logger = logging.getLogger(__name__)


class ValPreviewHook(Hook):
    """Draw ``count`` validation images with their predictions for ``sinks``.

    Args:
        sinks: receivers with ``on_val_images(images: list[tuple[str, str]])`` (name, data URL).
        val_prefix: ``CocoMetric``'s ``outfile_prefix`` (absolute).
        count: how many images; height: px of each drawing; score_thr: predictions shown.
    """

    priority = "LOW"

    def __init__(
        self,
        sinks: list[Any],
        val_prefix: str,
        count: int = 4,
        height: int = 180,
        score_thr: float = 0.3,
    ) -> None:
        self.sinks = [s for s in sinks if hasattr(s, "on_val_images")]
        self.val_prefix = val_prefix
        self.count, self.height, self.score_thr = count, height, score_thr

    def after_val_epoch(self, runner, metrics=None) -> None:
        if not self.sinks:
            return
        try:
            images = self._draw(runner.val_dataloader.dataset)
        except Exception:  # a preview must never end a run
            logger.warning("validation preview failed", exc_info=True)
            return
        for sink in self.sinks:
            sink.on_val_images(images)

    def _draw(self, dataset: Any) -> list[tuple[str, str]]:
        from src.runs.report import GT_COLOR, PRED_COLOR, draw, jpeg_data_url, truth

        path = Path(f"{self.val_prefix}.bbox.json")
        if not path.is_file():
            return []
        segm = Path(f"{self.val_prefix}.segm.json")
        predictions = json.loads((segm if segm.is_file() else path).read_text(encoding="utf-8"))
        classes = list(dataset.metainfo["classes"])
        shown = []
        for index in range(min(self.count, len(dataset))):
            info = dataset.get_data_info(index)
            image = cv2.imread(info["img_path"], cv2.IMREAD_COLOR)
            if image is None:
                continue
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            found = [
                {"bbox": d["bbox"], "segmentation": d.get("segmentation"),
                 "label": f"{classes[d['category_id'] - 1]} {d['score']:.2f}"}
                for d in predictions
                if d["image_id"] == info["img_id"] and d["score"] >= self.score_thr
            ]  # fmt: skip
            ground = draw(image, truth(info, classes, with_masks=False), GT_COLOR)
            gap = np.full((image.shape[0], 8, 3), 255, np.uint8)
            pair = np.concatenate([ground, gap, draw(image, found, PRED_COLOR)], axis=1)
            scale = self.height / pair.shape[0]
            pair = cv2.resize(pair, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            shown.append((str(info.get("item_name", index)), jpeg_data_url(pair)))
        return shown
