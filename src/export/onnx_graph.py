"""The export's graphs: an mmdet detector and its test-time post-processing as one traceable module
(src.export.onnx_export writes them; docs/export.md describes their inputs and outputs).

Each reproduces mmdet's own post-processing for its heads, so that the exported detections equal
``inference_detector``'s (tests/engine/test_onnx_export.py). Shared rules:

* the caller resizes each image as the run's test pipeline does and places it at the top-left of
  a canvas padded to the model's divisor (``Preprocess``); the graph normalises, fills the canvas
  around the image as mmdet pads it, and maps boxes back to each image's own pixels;
* a per-level top-k needs a fixed k while levels grow with the input: ``nms_pre`` entries of -1 are
  appended, which no threshold keeps (mmdet takes ``min(nms_pre, n)``);
* thresholds apply after NMS instead of before: a box can only suppress lower-scored ones, and every
  box under the threshold is dropped anyway, so the kept set is the same;
* boxes clipped to nothing (no wider or taller than ``min_bbox_size``) are dropped before NMS, as
  mmdet drops them (a 1-epoch model's output was mostly such boxes at the image's edges);
* outputs have a fixed number of rows per image (``max_per_img``); rows past the detections have
  score 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from src.export.onnx_ops import NMS, RoIAlign


class ExportError(ValueError):
    """A model or request this exporter cannot serve; the message says why and what to do."""


@dataclass(frozen=True)
class Preprocess:
    """What the caller does before the graph: mmcv's keep-ratio ``rescale_size`` to ``scale``
    (long edge, short edge), each image at the top-left of a canvas whose sides are the batch's
    largest, rounded up to ``divisor`` (mmdet's ``stack_batch``). The graph fills the canvas
    around each image with ``pad_value`` (the test pipeline's ``Pad``), or with the mean colour
    where mmdet pads the normalised batch (None). The canvas is mmdet's, not a fixed square: the
    backbone's channel attention pools over the whole canvas, so a larger one changes the
    detections."""

    scale: tuple[int, int]
    divisor: int
    pad_value: float | None = None


class _Graph(nn.Module):
    """What every graph does around the network: pre-processing, NMS, gathering."""

    def __init__(self, model: nn.Module, preprocess: Preprocess) -> None:
        super().__init__()
        self.model = model
        self.preprocess = preprocess
        prep = model.data_preprocessor
        self.register_buffer("mean", prep.mean.view(1, -1, 1, 1).clone().float())
        self.register_buffer("std", prep.std.view(1, -1, 1, 1).clone().float())
        self.bgr_to_rgb = bool(getattr(prep, "_channel_conversion", False))
        self.with_masks = False

    def _resized(self, orig_size: torch.Tensor) -> torch.Tensor:
        """[B, 2] height and width of each image after mmcv's keep-ratio rescale."""
        long_edge, short_edge = self.preprocess.scale
        h, w = orig_size[:, 0], orig_size[:, 1]
        factor = torch.minimum(long_edge / torch.maximum(h, w), short_edge / torch.minimum(h, w))
        return torch.stack([torch.floor(h * factor + 0.5), torch.floor(w * factor + 0.5)], 1)

    def _normalised(self, images: torch.Tensor, resized: torch.Tensor) -> torch.Tensor:
        """The data preprocessor's work, and the canvas around each image as mmdet pads it."""
        if self.bgr_to_rgb:
            images = images[:, [2, 1, 0]]
        x = (images - self.mean) / self.std
        rows = torch.arange(x.shape[2], dtype=torch.float32).view(1, -1, 1)
        cols = torch.arange(x.shape[3], dtype=torch.float32).view(1, 1, -1)
        inside = (rows < resized[:, 0].view(-1, 1, 1)) & (cols < resized[:, 1].view(-1, 1, 1))
        fill = torch.zeros_like(self.mean)
        if self.preprocess.pad_value is not None:
            fill = (self.preprocess.pad_value - self.mean) / self.std
        return torch.where(inside.unsqueeze(1), x, fill)

    @staticmethod
    def _clip_and_rescale(boxes, resized, orig_size) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, N, 4] boxes in canvas pixels clipped to each resized image, and mapped back to
        the original image: (clipped, rescaled)."""
        hi = torch.stack([resized[:, 1], resized[:, 0]], 1).repeat(1, 2).unsqueeze(1)
        clipped = torch.minimum(boxes.clamp(min=0), hi)
        factor = (resized / orig_size).flip(1).repeat(1, 2).unsqueeze(1)  # (w, h, w, h) scales
        return clipped, clipped / factor

    @staticmethod
    def _topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k best of each row, with k entries of -1 appended (the fixed-k rule above)."""
        if k <= 0:
            raise ExportError("nms_pre <= 0 (every prior) is not exported: set test_cfg.nms_pre")
        filler = torch.full((scores.shape[0], k), -1.0, dtype=scores.dtype)
        return torch.cat([scores, filler], 1).topk(k, dim=1)

    @staticmethod
    def _rows_at(rows: torch.Tensor, index: torch.Tensor, extra: int) -> torch.Tensor:
        """[B, N, C] rows at [B, k] indices, ``extra`` rows of zeros appended for the filler's."""
        b, _, c = rows.shape
        rows = torch.cat([rows, rows.new_zeros((b, extra, c))], 1)
        return torch.gather(rows, 1, index.unsqueeze(-1).expand(-1, -1, c))

    @staticmethod
    def _gather(values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        return torch.gather(values, 1, order.unsqueeze(-1).expand(-1, -1, values.shape[-1]))

    def _nms(self, boxes, scores, groups, num_groups: int, iou: float, score_thr: float,
             max_out: int, valid=None):  # fmt: skip
        """Per image, NMS within each group (class, or pyramid level for the RPN), then the
        ``max_out`` best: (boxes [B, M, 4], scores [B, M], groups [B, M], where each came from
        among the candidates [B, M]); scores of rows past the kept ones are 0."""
        n = scores.shape[1]
        ids = torch.arange(num_groups).view(1, -1, 1)
        # a tensor, not the float -1.0: torch 2.1 exports a Python float as a double constant
        per_group = torch.where(
            groups.unsqueeze(1) == ids, scores.unsqueeze(1), scores.new_tensor(-1.0)
        )
        selected = NMS.apply(boxes, per_group, int(n), iou, score_thr)
        kept = torch.zeros_like(scores)
        kept[selected[:, 0], selected[:, 2]] = scores[selected[:, 0], selected[:, 2]]
        if valid is not None:
            kept = kept * valid.to(kept.dtype)
        best, order = kept.topk(min(max_out, n), dim=1)
        out = self._gather(boxes, order) * (best > 0).unsqueeze(-1)
        return out, best, torch.gather(groups, 1, order), order


BOX_HEADS = ("RTMDetHead", "RTMDetSepBNHead")
MASK_HEADS = ("RTMDetInsHead", "RTMDetInsSepBNHead")


class DenseDetectorGraph(_Graph):
    """RTMDet and RTMDet-Ins: point priors, distance boxes, sigmoid classes; for RTMDet-Ins the
    dynamic mask kernels of the kept detections."""

    def __init__(self, model: nn.Module, preprocess: Preprocess) -> None:
        super().__init__(model, preprocess)
        head = model.bbox_head
        cfg = head.test_cfg
        self.nms_pre = int(cfg.get("nms_pre", -1))
        self.score_thr = float(cfg.get("score_thr", 0.0))
        self.iou = float(cfg["nms"]["iou_threshold"])
        self.max_per_img = int(cfg.get("max_per_img", 100))
        self.min_bbox_size = float(cfg.get("min_bbox_size", -1))
        self.num_classes = int(head.cls_out_channels)
        self.strides = [int(s[0]) for s in head.prior_generator.strides]
        self.offset = float(head.prior_generator.offset)
        self.with_masks = type(head).__name__ in MASK_HEADS
        self.mask_thr = float(cfg.get("mask_thr_binary", 0.5))

    def forward(self, images: torch.Tensor, orig_size: torch.Tensor):
        resized = self._resized(orig_size)  # [B, 2]
        outs = self.model.bbox_head(self.model.extract_feat(self._normalised(images, resized)))
        kernel_preds = outs[2] if self.with_masks else [None] * len(self.strides)
        extra = -(-self.nms_pre // self.num_classes)  # rows for the filler's indices
        boxes, scores, labels, kernels, centres = [], [], [], [], []
        for cls_score, bbox_pred, kernel_pred, stride in zip(
            outs[0], outs[1], kernel_preds, self.strides, strict=True
        ):
            b, _, h, w = cls_score.shape
            ys, xs = torch.meshgrid(
                (torch.arange(h, dtype=torch.float32) + self.offset) * stride,
                (torch.arange(w, dtype=torch.float32) + self.offset) * stride,
                indexing="ij",
            )
            points = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1).expand(b, -1, -1)
            top, flat = self._topk(
                cls_score.permute(0, 2, 3, 1).reshape(b, -1).sigmoid(), self.nms_pre
            )
            anchor = torch.div(flat, self.num_classes, rounding_mode="floor")
            d = self._rows_at(_per_location(bbox_pred, 4), anchor, extra)
            p = self._rows_at(points, anchor, extra)
            corners = (p[..., 0] - d[..., 0], p[..., 1] - d[..., 1],
                       p[..., 0] + d[..., 2], p[..., 1] + d[..., 3])  # fmt: skip
            boxes.append(torch.stack(corners, -1))
            scores.append(top)
            labels.append(flat - anchor * self.num_classes)
            if self.with_masks:
                rows = _per_location(kernel_pred, kernel_pred.shape[1])
                kernels.append(self._rows_at(rows, anchor, extra))
                centres.append(torch.cat([p, torch.full_like(p[..., :1], float(stride))], -1))
        _, boxes = self._clip_and_rescale(torch.cat(boxes, 1), resized, orig_size)
        scores = torch.cat(scores, 1)
        if self.min_bbox_size >= 0:  # as mmdet, before NMS: boxes clipped to nothing go
            wh = boxes[..., 2:] - boxes[..., :2]
            small = (wh <= self.min_bbox_size).any(-1)
            scores = torch.where(small, scores.new_tensor(-1.0), scores)
        out_boxes, best, out_labels, order = self._nms(
            boxes, scores, torch.cat(labels, 1), self.num_classes, self.iou,
            self.score_thr, self.max_per_img,
        )  # fmt: skip
        dets = torch.cat([out_boxes, best.unsqueeze(-1)], -1)
        if not self.with_masks:
            return dets, out_labels
        kernels = self._gather(torch.cat(kernels, 1), order)
        centres = self._gather(torch.cat(centres, 1), order)
        return dets, out_labels, self._mask_logits(outs[3], kernels, centres)

    def _mask_logits(
        self, mask_feat: torch.Tensor, kernels: torch.Tensor, centres: torch.Tensor
    ) -> torch.Tensor:
        """RTMDet-Ins's dynamic convolutions for the kept detections, batched as matrix products
        (mmdet: a grouped conv per image): [B, M, h, w] mask logits at the first level's stride.
        The caller upsamples them as mmdet does (``src.export.onnx_runtime``)."""
        head = self.model.bbox_head
        b, c, h, w = mask_feat.shape
        m = kernels.shape[1]
        stride = self.strides[0]
        ys = ((torch.arange(h, dtype=torch.float32) + self.offset) * stride).view(1, 1, h, 1)
        xs = ((torch.arange(w, dtype=torch.float32) + self.offset) * stride).view(1, 1, 1, w)
        scale = (centres[..., 2] * 8).view(b, m, 1, 1)
        rel_x = ((centres[..., 0].view(b, m, 1, 1) - xs) / scale).expand(b, m, h, w)
        rel_y = ((centres[..., 1].view(b, m, 1, 1) - ys) / scale).expand(b, m, h, w)
        feats = mask_feat.unsqueeze(1).expand(b, m, c, h, w)
        x = torch.cat([rel_x.unsqueeze(2), rel_y.unsqueeze(2), feats], 2)
        x = x.reshape(b, m, c + 2, h * w)
        n_layers = len(head.weight_nums)
        splits = torch.split(kernels, list(head.weight_nums) + list(head.bias_nums), dim=2)
        for i in range(n_layers):
            out_channels = head.dyconv_channels if i < n_layers - 1 else 1
            weight = splits[i].reshape(b, m, out_channels, -1)
            x = torch.matmul(weight, x) + splits[n_layers + i].reshape(b, m, out_channels, 1)
            if i < n_layers - 1:
                x = torch.relu(x)
        return x.reshape(b, m, h, w)


def _per_location(level: torch.Tensor, channels: int) -> torch.Tensor:
    """[B, A*channels, h, w] head output as [B, h*w*A, channels] rows, in mmdet's prior order
    (location by location, its A priors each)."""
    return level.permute(0, 2, 3, 1).reshape(level.shape[0], -1, channels)


TWO_STAGE = ("FasterRCNN", "MaskRCNN")


class TwoStageGraph(_Graph):
    """Faster R-CNN and Mask R-CNN: the RPN's anchors and deltas with NMS per pyramid level,
    RoIAlign on the level each proposal maps to, the box head's per-class boxes with class-aware
    NMS; for Mask R-CNN the mask head on the kept boxes, each detection's class channel as
    probabilities on its 28x28 grid (the caller pastes them into the image as mmdet does:
    ``src.export.onnx_runtime``)."""

    def __init__(self, model: nn.Module, preprocess: Preprocess) -> None:
        super().__init__(model, preprocess)
        self.rpn_cfg = model.rpn_head.test_cfg
        self.rcnn_cfg = model.roi_head.test_cfg
        self.num_classes = int(model.roi_head.bbox_head.num_classes)
        self.with_masks = bool(model.roi_head.with_mask)
        self.mask_thr = float(self.rcnn_cfg.get("mask_thr_binary", 0.5))

    def forward(self, images: torch.Tensor, orig_size: torch.Tensor):
        resized = self._resized(orig_size)
        feats = self.model.extract_feat(self._normalised(images, resized))
        proposals, valid = self._proposals(feats, resized)
        b, p = valid.shape
        head = self.model.roi_head
        rois = self._rois(proposals)
        cls_score, bbox_pred = head.bbox_head(self._roi_feats(head.bbox_roi_extractor, feats, rois))
        c = self.num_classes
        scores = cls_score.softmax(-1)[:, :c] * valid.reshape(-1, 1).to(cls_score.dtype)
        deltas = bbox_pred.reshape(b * p, -1, 4).expand(-1, c, 4).reshape(-1, 4)
        boxes = head.bbox_head.bbox_coder.decode(
            rois[:, None, 1:].expand(-1, c, 4).reshape(-1, 4), deltas, max_shape=None
        ).reshape(b, p * c, 4)
        clipped, rescaled = self._clip_and_rescale(boxes, resized, orig_size)
        labels = torch.arange(c).repeat(p).view(1, p * c).expand(b, -1)
        # mmdet's Mask R-CNN runs this NMS before the rescale, Faster R-CNN after it
        _, best, out_labels, order = self._nms(
            clipped if self.with_masks else rescaled, scores.reshape(b, p * c), labels, c,
            float(self.rcnn_cfg.nms.iou_threshold), float(self.rcnn_cfg.score_thr),
            int(self.rcnn_cfg.max_per_img),
        )  # fmt: skip
        kept = (best > 0).unsqueeze(-1)
        dets = torch.cat([self._gather(rescaled, order) * kept, best.unsqueeze(-1)], -1)
        if not self.with_masks:
            return dets, out_labels
        m = order.shape[1]
        mask_rois = self._rois(self._gather(clipped, order))
        logits = head.mask_head(self._roi_feats(head.mask_roi_extractor, feats, mask_rois))
        mh, mw = logits.shape[-2:]
        if logits.shape[1] > 1:  # one mask per class: the detection's own
            index = out_labels.reshape(b * m, 1, 1, 1).expand(-1, 1, mh, mw)
            logits = torch.gather(logits, 1, index)
        return dets, out_labels, logits.sigmoid().reshape(b, m, mh, mw)

    @staticmethod
    def _rois(boxes: torch.Tensor) -> torch.Tensor:
        """[B, N, 4] boxes as mmdet's [B*N, 5] RoIs (batch index first)."""
        b, n = boxes.shape[:2]
        index = torch.arange(b, dtype=boxes.dtype).view(b, 1, 1).expand(b, n, 1)
        return torch.cat([index, boxes], -1).reshape(b * n, 5)

    def _proposals(self, feats, resized: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The RPN's proposals in canvas pixels, [B, P, 4], and which rows hold one [B, P]."""
        rpn = self.model.rpn_head
        cfg = self.rpn_cfg
        nms_pre = int(cfg.get("nms_pre", -1))
        boxes, scores, levels = [], [], []
        for level, (cls_score, bbox_pred) in enumerate(zip(*rpn(feats), strict=True)):
            b, _, h, w = cls_score.shape
            top, index = self._topk(cls_score.permute(0, 2, 3, 1).reshape(b, -1).sigmoid(), nms_pre)
            deltas = self._rows_at(_per_location(bbox_pred, 4), index, nms_pre)
            anchors = self._rows_at(self._anchors(level, h, w).expand(b, -1, -1), index, nms_pre)
            decoded = rpn.bbox_coder.decode(anchors.reshape(-1, 4), deltas.reshape(-1, 4),
                                            max_shape=None)  # fmt: skip
            boxes.append(decoded.reshape(b, -1, 4))
            scores.append(top)
            levels.append(torch.full_like(index, level))
        clipped, _ = self._clip_and_rescale(torch.cat(boxes, 1), resized, resized)
        valid = None
        if cfg.get("min_bbox_size", -1) >= 0:
            wh = clipped[..., 2:] - clipped[..., :2]
            valid = (wh > float(cfg.min_bbox_size)).all(-1)
        # no score threshold in the RPN: -0.5 only drops the top-k's filler (-1)
        proposals, best, _, _ = self._nms(
            clipped, torch.cat(scores, 1), torch.cat(levels, 1), len(boxes),
            float(cfg.nms.iou_threshold), -0.5, int(cfg.max_per_img), valid,
        )  # fmt: skip
        return proposals, best > 0

    def _anchors(self, level: int, h: int, w: int) -> torch.Tensor:
        """[1, h*w*A, 4] anchors of a level, in mmdet's order (location by location)."""
        generator = self.model.rpn_head.prior_generator
        base = generator.base_anchors[level].float()
        stride_w, stride_h = generator.strides[level]
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32) * stride_h,
                                torch.arange(w, dtype=torch.float32) * stride_w,
                                indexing="ij")  # fmt: skip
        shifts = torch.stack([xs.reshape(-1), ys.reshape(-1)] * 2, 1)
        return (shifts[:, None, :] + base[None]).reshape(1, -1, 4)

    @staticmethod
    def _roi_feats(extractor, feats, rois: torch.Tensor) -> torch.Tensor:
        """mmdet's SingleRoIExtractor: each RoI pooled on the level its size maps to (here on
        every level, the others' zeroed: a traced graph has no per-level subsets)."""
        n = len(extractor.featmap_strides)
        levels = extractor.map_roi_levels(rois, n)
        out = None
        for i in range(n):
            layer = extractor.roi_layers[i]
            h, w = layer.output_size
            pooled = RoIAlign.apply(feats[i], rois, int(h), int(w), float(layer.spatial_scale),
                                    int(layer.sampling_ratio))  # fmt: skip
            pooled = pooled * (levels == i).to(pooled.dtype).view(-1, 1, 1, 1)
            out = pooled if out is None else out + pooled
        return out
