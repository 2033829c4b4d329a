"""Run an exported ``model.onnx`` with onnxruntime, numpy and OpenCV only (no torch, no mmdet).

The pre-processing is mmcv's keep-ratio resize (``rescale_size``: the scale factor that fits the
long edge into the first number and the short edge into the second, each side rounded half up,
bilinear) with the image at the top-left of the graph's canvas; the graph does the rest
(src/export/onnx_graph.py). The parameters travel in the model file's metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import cv2
import numpy as np

META_KEY = "sly_mmdet_export"  # = src.export.onnx_export.META_KEY (this file imports nothing ours)
CLASS_THRESHOLDS = "class_thresholds"  # = src.core.layout.CLASS_THRESHOLDS
DEFAULT_SCORE_THR = 0.3  # a class without a threshold of its own in the file


@dataclass
class Detections:
    """One image's detections in its own pixels, best first."""

    boxes: np.ndarray  # [N, 4] x1, y1, x2, y2
    scores: np.ndarray  # [N]
    labels: np.ndarray  # [N] class indices into OnnxDetector.classes
    masks: np.ndarray | None = None  # [N, H, W] bool, instance segmentation only

    def subset(self, keep: np.ndarray) -> Detections:
        """The detections where ``keep`` (a boolean mask) is true."""
        masks = self.masks[keep] if self.masks is not None else None
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep], masks)


class OnnxDetector:
    def __init__(self, path: str, providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(path, providers=providers or ["CPUExecutionProvider"])
        meta = json.loads(self.session.get_modelmeta().custom_metadata_map[META_KEY])
        self.scale = tuple(meta["scale"])  # (long edge, short edge)
        self.divisor = int(meta["divisor"])  # the canvas's sides are multiples of it
        self.classes: list[str] = meta["classes"]
        self.outputs: list[str] = meta["outputs"]
        self.slicing: dict | None = meta.get("slicing")  # a sliced run's tiles
        # each class's score threshold, chosen on the validation split (empty: none chosen)
        self.class_thresholds: dict[str, float] = meta.get(CLASS_THRESHOLDS) or {}
        self.mask_kind = meta.get("masks")  # None, "dense" (RTMDet-Ins), "roi" (Mask R-CNN)
        self.mask_stride = int(meta.get("mask_stride", 0))
        thr = float(meta.get("mask_thr", 0.5))
        self.mask_thr = thr
        # sigmoid(x) > thr; a threshold outside (0, 1) keeps every or no pixel
        self.mask_logit_thr = (
            float(np.log(thr / (1 - thr))) if 0 < thr < 1 else -np.inf if thr <= 0 else np.inf
        )

    def score_thresholds(self, score_thr: float | None = None) -> np.ndarray:
        """Each class's lowest score kept, by label: ``score_thr`` for every class when given;
        else the class's own threshold from the file, or ``DEFAULT_SCORE_THR``."""
        if score_thr is not None:
            return np.full(len(self.classes), float(score_thr))
        own = self.class_thresholds
        return np.array([float(own.get(name, DEFAULT_SCORE_THR)) for name in self.classes])

    def keep(self, found: Detections, score_thr: float | None = None) -> Detections:
        """The detections scoring at least their class's threshold (``score_thresholds``)."""
        return found.subset(found.scores >= self.score_thresholds(score_thr)[found.labels])

    def resized_size(self, h: int, w: int) -> tuple[int, int]:
        """(width, height) after mmcv's keep-ratio ``rescale_size``."""
        factor = min(self.scale[0] / max(h, w), self.scale[1] / min(h, w))
        return int(w * factor + 0.5), int(h * factor + 0.5)

    def resize(self, image: np.ndarray) -> np.ndarray:
        """An HxWx3 BGR image resized as mmcv's keep-ratio ``imrescale``."""
        size = self.resized_size(*image.shape[:2])
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
        results = self.session.run(self.outputs, {"images": batch, "orig_size": sizes})
        out = []
        for i, (d, lab) in enumerate(zip(results[0], results[1], strict=True)):
            keep = d[:, 4] > max(score_thr, 0.0)
            found = Detections(d[keep, :4], d[keep, 4], lab[keep])
            if self.mask_kind == "roi":
                found.masks = paste_masks(results[2][i][keep], found.boxes, images[i].shape[:2],
                                          self.mask_thr)  # fmt: skip
            elif self.mask_kind == "dense":
                found.masks = self.masks(results[2][i][keep], images[i].shape[:2])
            out.append(found)
        return out

    def masks(self, logits: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """[N, h, w] mask logits at the first level's stride as mmdet's RTMDet-Ins finishes them:
        bilinear to the canvas (x stride), bilinear by the inverse scale factors (as mmdet pairs
        them), cropped to the image, thresholded."""
        n, h, w = logits.shape
        ori_h, ori_w = shape
        if n == 0:
            return np.zeros((0, ori_h, ori_w), bool)
        new_w, new_h = self.resized_size(ori_h, ori_w)
        w_scale, h_scale = new_w / ori_w, new_h / ori_h
        canvas_h, canvas_w = h * self.mask_stride, w * self.mask_stride
        size = (int(np.ceil(canvas_w / h_scale)), int(np.ceil(canvas_h / w_scale)))
        out = np.empty((n, ori_h, ori_w), bool)
        for start in range(0, n, 256):  # OpenCV resizes up to 512 channels at once
            chunk = logits[start : start + 256].transpose(1, 2, 0)
            chunk = cv2.resize(chunk, (canvas_w, canvas_h), interpolation=cv2.INTER_LINEAR)
            chunk = cv2.resize(chunk, size, interpolation=cv2.INTER_LINEAR).reshape(
                size[1], size[0], -1
            )
            out[start : start + 256] = (chunk[:ori_h, :ori_w] > self.mask_logit_thr).transpose(
                2, 0, 1
            )
        return out


def paste_masks(
    probabilities: np.ndarray, boxes: np.ndarray, shape: tuple[int, int], threshold: float
) -> np.ndarray:
    """Mask R-CNN's [N, m, m] mask probabilities pasted into an image of ``shape`` at their boxes
    as mmdet's ``_do_paste_mask`` does (bilinear ``grid_sample``, align_corners False, zeros
    outside the grid), then thresholded (>=); a negative threshold keeps them soft, as mmdet does
    (uint8, probability x 255). The sampling grid is separable, so each paste is two small matrix
    products: rows x grid x columns. Like mmdet on the CPU, pixels more than one past the box's
    rounded-out edges stay empty (its GPU path pastes the bilinear tail there too)."""
    h, w = shape
    out = np.zeros((len(probabilities), h, w), bool if threshold >= 0 else np.uint8)
    for i, (grid, (x0, y0, x1, y1)) in enumerate(zip(probabilities, boxes, strict=True)):
        rows = _bilinear_weights(np.arange(h) + 0.5, y0, y1, grid.shape[0])
        cols = _bilinear_weights(np.arange(w) + 0.5, x0, x1, grid.shape[1])
        pasted = rows @ grid.astype(np.float32) @ cols.T
        out[i] = pasted >= threshold if threshold >= 0 else (pasted * 255).astype(np.uint8)
    return out


def _bilinear_weights(centres: np.ndarray, start: float, end: float, size: int) -> np.ndarray:
    """[len(centres), size]: each pixel centre's bilinear weights on a grid of ``size`` cells
    spanning [start, end] (grid_sample's align_corners=False, zero padding)."""
    span = end - start
    pos = (centres - start) / span * size - 0.5 if span != 0 else np.full_like(centres, -2.0)
    # mmdet's CPU paste covers pixels floor(start) - 1 to ceil(end) + 1 only
    pixel = np.floor(centres)
    pos = np.where((pixel >= np.floor(start) - 1) & (pixel < np.ceil(end) + 1), pos, -2.0)
    low = np.floor(pos)
    frac = (pos - low).astype(np.float32)
    weights = np.zeros((len(centres), size), np.float32)
    for offset, weight in ((0, 1 - frac), (1, frac)):
        index = low.astype(np.int64) + offset
        inside = (index >= 0) & (index < size)
        weights[np.flatnonzero(inside), index[inside]] += weight[inside]
    return weights


def draw(image: np.ndarray, found: Detections, classes: list[str]) -> np.ndarray:
    """A copy of ``image`` with each detection's box, class and score."""
    out = image.copy()
    for box, score, label in zip(found.boxes, found.scores, found.labels, strict=True):
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 255, 0), 2)
        cv2.putText(out, f"{classes[label]} {score:.2f}", (x1, max(y1 - 4, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 0), 1)  # fmt: skip
    return out
