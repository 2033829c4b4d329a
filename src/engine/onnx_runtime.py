"""Run an exported ``model.onnx`` with onnxruntime, numpy and OpenCV only (no torch, no mmdet).

The pre-processing is mmcv's keep-ratio resize (``rescale_size``: the scale factor that fits the
long edge into the first number and the short edge into the second, each side rounded half up,
bilinear) with the image at the top-left of the graph's canvas; the graph does the rest
(src/engine/onnx_export.py). The parameters travel in the model file's metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import cv2
import numpy as np

META_KEY = "sly_mmdet_export"  # = src.engine.onnx_export.META_KEY (this file imports nothing ours)


@dataclass
class Detections:
    """One image's detections in its own pixels, best first."""

    boxes: np.ndarray  # [N, 4] x1, y1, x2, y2
    scores: np.ndarray  # [N]
    labels: np.ndarray  # [N] class indices into OnnxDetector.classes


class OnnxDetector:
    def __init__(self, path: str, providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(path, providers=providers or ["CPUExecutionProvider"])
        meta = json.loads(self.session.get_modelmeta().custom_metadata_map[META_KEY])
        self.scale = tuple(meta["scale"])  # (long edge, short edge)
        self.divisor = int(meta["divisor"])  # the canvas's sides are multiples of it
        self.classes: list[str] = meta["classes"]

    def resize(self, image: np.ndarray) -> np.ndarray:
        """An HxWx3 BGR image resized as mmcv's keep-ratio ``imrescale``."""
        h, w = image.shape[:2]
        factor = min(self.scale[0] / max(h, w), self.scale[1] / min(h, w))
        size = (int(w * factor + 0.5), int(h * factor + 0.5))
        return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)

    def batch(self, images: list[np.ndarray]) -> np.ndarray:
        """BGR images as the graph's [B, 3, H, W] float32 canvas (mmdet's batch padding)."""
        resized = [self.resize(image) for image in images]
        h = max(r.shape[0] for r in resized)
        w = max(r.shape[1] for r in resized)
        h, w = -(-h // self.divisor) * self.divisor, -(-w // self.divisor) * self.divisor
        canvas = np.zeros((len(images), 3, h, w), np.float32)
        for i, r in enumerate(resized):
            canvas[i, :, : r.shape[0], : r.shape[1]] = r.transpose(2, 0, 1)
        return canvas

    def predict(self, images: list[np.ndarray], score_thr: float = 0.0) -> list[Detections]:
        """Detections for each BGR image (one batch), those scoring above ``score_thr``."""
        batch = self.batch(images)
        sizes = np.array([image.shape[:2] for image in images], np.float32)
        dets, labels = self.session.run(["dets", "labels"], {"images": batch, "orig_size": sizes})
        out = []
        for d, lab in zip(dets, labels, strict=True):
            keep = d[:, 4] > max(score_thr, 0.0)
            out.append(Detections(d[keep, :4], d[keep, 4], lab[keep]))
        return out


def draw(image: np.ndarray, found: Detections, classes: list[str]) -> np.ndarray:
    """A copy of ``image`` with each detection's box, class and score."""
    out = image.copy()
    for box, score, label in zip(found.boxes, found.scores, found.labels, strict=True):
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 255, 0), 2)
        cv2.putText(out, f"{classes[label]} {score:.2f}", (x1, max(y1 - 4, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 0), 1)  # fmt: skip
    return out
