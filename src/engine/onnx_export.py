"""Export a trained run to ONNX: the network, its box decoding and NMS in one graph.

Why our own wrapper over ``torch.onnx`` instead of mmdeploy 1.3.1 (tried here, docs/export.md):
its package requires protobuf <= 3.20.2, which our pins (protobuf 7, for onnx and the SDK) cannot
hold; under torch >= 2.9 its export fails unless the TorchScript exporter is forced (torch's default
became the dynamo exporter, which needs onnxscript and bypasses mmdeploy's rewriters); and its
graph post-processes with its own settings, not the run's ``test_cfg``. The TorchScript exporter
(``dynamo=False``) exists in torch 2.1.2 (the production image) and 2.13 (here) alike, and every op
of the graph below is a standard ONNX op (opset 17), so onnxruntime alone runs it and TensorRT
parses it.

The graph reproduces mmdet's test-time post-processing exactly, so that its detections equal
``inference_detector``'s (tests/engine/test_onnx_export.py):

* input ``images``: float32 ``[B, 3, H, W]``, BGR pixels 0-255 as OpenCV reads them, resized as the
  run's test pipeline resizes (keep ratio) and placed at the top-left of the ``H x W`` canvas;
  ``orig_size``: float32 ``[B, 2]``, each image's height and width before the resize. The graph
  normalises, zeroes the canvas outside the resized image (what mmdet's batch padding holds), and
  maps the boxes back to the original image.
* per pyramid level the ``nms_pre`` best (prior, class) scores, decoded and clipped to the resized
  image, rescaled, class-aware NMS (ONNX ``NonMaxSuppression``: IoU > threshold suppresses, as
  mmcv's ``nms``), the ``max_per_img`` best kept.
* outputs ``dets`` ``[B, max_per_img, 5]`` (x1, y1, x2, y2, score) in original-image pixels and
  ``labels`` ``[B, max_per_img]`` (int64); rows past an image's detections have score 0.

Keeping the scores above ``score_thr`` after NMS instead of before is the same result: a box can
only suppress lower-scored ones, and every box under the threshold is dropped anyway.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

OPSET = 17
# ONNX metadata key holding the pre-processing (read by src/engine/onnx_runtime.py)
META_KEY = "sly_mmdet_export"


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


def preprocess_of(cfg: Any, input_size: int | None = None) -> Preprocess:
    """The run's test pipeline as a ``Preprocess``: its keep-ratio ``Resize`` and ``Pad``."""
    pipeline = cfg.get("test_dataloader", {}).get("dataset", {}).get("pipeline") or []
    resize = next((t for t in pipeline if t.get("type") == "Resize"), None)
    if resize is None or not resize.get("keep_ratio", False) or resize.get("scale") is None:
        raise ExportError("the run's test pipeline has no keep-ratio Resize: it is not exported")
    scale = resize["scale"]
    scale = (scale, scale) if isinstance(scale, int) else tuple(int(v) for v in scale)
    if input_size:
        scale = (input_size, input_size)
    pad = next((t for t in pipeline if t.get("type") == "Pad"), None)
    pad_value = None
    if pad is not None:
        if pad.get("size") is not None:
            raise ExportError("the run's test pipeline pads to a fixed size: not exported yet")
        value = pad.get("pad_val", 0)
        value = value.get("img", 0) if isinstance(value, dict) else value
        pad_value = float(value[0] if isinstance(value, list | tuple) else value)
    divisor = int(cfg.model.get("data_preprocessor", {}).get("pad_size_divisor", 1) or 1)
    return Preprocess(scale=(max(scale), min(scale)), divisor=divisor, pad_value=pad_value)


class _NMS(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (per image and class); eager forward with mmcv's ``nms`` so
    that tracing sees real indices."""

    @staticmethod
    def forward(ctx, boxes, scores, max_out, iou, score_thr):
        from mmcv.ops.nms import ext_module  # mmcv's kernel, not its traced autograd function

        selected = []
        for b in range(scores.shape[0]):
            for c in range(scores.shape[1]):
                keep = (scores[b, c] > score_thr).nonzero().flatten()
                if keep.numel() == 0:
                    continue
                candidates, candidate_scores = boxes[b, keep], scores[b, c, keep]
                order = candidate_scores.argsort(descending=True)
                kept = ext_module.nms(candidates[order], candidate_scores[order],
                                      iou_threshold=float(iou), offset=0)  # fmt: skip
                idx = keep[order[kept]][:max_out]
                batch, cls = torch.full_like(idx, b), torch.full_like(idx, c)
                selected.append(torch.stack([batch, cls, idx], 1))
        if not selected:
            return torch.zeros((0, 3), dtype=torch.int64)
        return torch.cat(selected).to(torch.int64)

    @staticmethod
    def symbolic(g, boxes, scores, max_out, iou, score_thr):
        def const(value, dtype):
            return g.op("Constant", value_t=torch.tensor([value], dtype=dtype))

        return g.op(
            "NonMaxSuppression",
            boxes,
            scores,
            const(max_out, torch.int64),
            const(iou, torch.float32),
            const(score_thr, torch.float32),
        )


class DenseDetectorGraph(nn.Module):
    """An mmdet single-stage detector with point priors and distance boxes (RTMDet) as one graph."""

    def __init__(self, model: nn.Module, preprocess: Preprocess) -> None:
        super().__init__()
        self.model = model
        self.preprocess = preprocess
        prep = model.data_preprocessor
        self.register_buffer("mean", prep.mean.view(1, -1, 1, 1).clone().float())
        self.register_buffer("std", prep.std.view(1, -1, 1, 1).clone().float())
        self.bgr_to_rgb = bool(getattr(prep, "_channel_conversion", False))
        head = model.bbox_head
        cfg = head.test_cfg
        self.nms_pre = int(cfg.get("nms_pre", -1))
        self.score_thr = float(cfg.get("score_thr", 0.0))
        self.iou = float(cfg["nms"]["iou_threshold"])
        self.max_per_img = int(cfg.get("max_per_img", 100))
        self.num_classes = int(head.cls_out_channels)
        self.strides = [int(s[0]) for s in head.prior_generator.strides]
        self.offset = float(head.prior_generator.offset)
        self.with_masks = type(head).__name__ in MASK_HEADS
        self.mask_thr = float(cfg.get("mask_thr_binary", 0.5))

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

    def forward(self, images: torch.Tensor, orig_size: torch.Tensor):
        resized = self._resized(orig_size)  # [B, 2]
        outs = self.model.bbox_head(self.model.extract_feat(self._normalised(images, resized)))
        kernel_preds = outs[2] if self.with_masks else [None] * len(self.strides)
        boxes, scores, labels, kernels, centres = [], [], [], [], []
        for cls_score, bbox_pred, kernel_pred, stride in zip(
            outs[0], outs[1], kernel_preds, self.strides, strict=True
        ):
            b, _, h, w = cls_score.shape
            level_scores = cls_score.permute(0, 2, 3, 1).reshape(b, -1).sigmoid()
            ys, xs = torch.meshgrid(
                (torch.arange(h, dtype=torch.float32) + self.offset) * stride,
                (torch.arange(w, dtype=torch.float32) + self.offset) * stride,
                indexing="ij",
            )
            points = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)  # [A, 2]
            top, flat = self._level_topk(level_scores)
            anchor = torch.div(flat, self.num_classes, rounding_mode="floor")
            d = self._take(bbox_pred, anchor)
            p = self._take(points.t().unsqueeze(0).expand(b, -1, -1).reshape(b, 2, h, w), anchor)
            corners = (p[..., 0] - d[..., 0], p[..., 1] - d[..., 1],
                       p[..., 0] + d[..., 2], p[..., 1] + d[..., 3])  # fmt: skip
            boxes.append(torch.stack(corners, -1))
            scores.append(top)
            labels.append(flat - anchor * self.num_classes)
            if self.with_masks:
                kernels.append(self._take(kernel_pred, anchor))
                centres.append(torch.cat([p, torch.full_like(p[..., :1], float(stride))], -1))
        boxes, scores, labels = torch.cat(boxes, 1), torch.cat(scores, 1), torch.cat(labels, 1)
        hi = torch.stack([resized[:, 1], resized[:, 0]], 1).repeat(1, 2).unsqueeze(1)
        boxes = torch.minimum(boxes.clamp(min=0), hi)
        factor = (resized / orig_size).flip(1).repeat(1, 2).unsqueeze(1)  # (w, h, w, h) scales
        dets, out_labels, order = self._nms(boxes / factor, scores, labels)
        if not self.with_masks:
            return dets, out_labels
        kernels = self._gather(torch.cat(kernels, 1), order)
        centres = self._gather(torch.cat(centres, 1), order)
        return dets, out_labels, self._mask_logits(outs[3], kernels, centres)

    def _take(self, level: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        """[B, C, h, w] per-prior values at the top-k's priors: [B, k, C]. The filler's indices
        point past the priors: rows of zeros are appended for them."""
        b, c = level.shape[:2]
        rows = level.reshape(b, c, -1).permute(0, 2, 1)
        extra = -(-self.nms_pre // self.num_classes)
        rows = torch.cat([rows, rows.new_zeros((b, extra, c))], 1)
        return torch.gather(rows, 1, anchor.unsqueeze(-1).expand(-1, -1, c))

    @staticmethod
    def _gather(values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        return torch.gather(values, 1, order.unsqueeze(-1).expand(-1, -1, values.shape[-1]))

    def _mask_logits(
        self, mask_feat: torch.Tensor, kernels: torch.Tensor, centres: torch.Tensor
    ) -> torch.Tensor:
        """RTMDet-Ins's dynamic convolutions for the kept detections, batched as matrix products
        (mmdet: a grouped conv per image): [B, M, h, w] mask logits at the first level's stride.
        The caller upsamples them as mmdet does (``src.engine.onnx_runtime``)."""
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

    def _level_topk(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``nms_pre`` best (prior, class) scores of a level. Its size depends on the input's,
        and the traced ``topk`` needs a fixed k: the scores get ``nms_pre`` entries of -1 appended
        (never kept: below any threshold), as many as mmdet's ``min(nms_pre, n)`` when fewer."""
        if self.nms_pre <= 0:
            raise ExportError("nms_pre <= 0 (every prior) is not exported: set test_cfg.nms_pre")
        filler = torch.full((scores.shape[0], self.nms_pre), -1.0, dtype=scores.dtype)
        return torch.cat([scores, filler], 1).topk(self.nms_pre, dim=1)

    def _nms(self, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor):
        """Class-aware NMS per image, then the ``max_per_img`` best: fixed-size outputs, and where
        each came from among the candidates."""
        n = scores.shape[1]
        classes = torch.arange(self.num_classes).view(1, -1, 1)
        per_class = torch.where(labels.unsqueeze(1) == classes, scores.unsqueeze(1), -1.0)
        selected = _NMS.apply(boxes, per_class, int(n), self.iou, self.score_thr)
        kept = torch.zeros_like(scores)
        kept[selected[:, 0], selected[:, 2]] = scores[selected[:, 0], selected[:, 2]]
        best, order = kept.topk(min(self.max_per_img, n), dim=1)
        out_boxes = self._gather(boxes, order)
        out_labels = torch.gather(labels, 1, order)
        dets = torch.cat([out_boxes * (best > 0).unsqueeze(-1), best.unsqueeze(-1)], -1)
        return dets, out_labels, order


BOX_HEADS = ("RTMDetHead", "RTMDetSepBNHead")
MASK_HEADS = ("RTMDetInsHead", "RTMDetInsSepBNHead")
EXPORTED_HEADS = BOX_HEADS + MASK_HEADS


def export_blocker(cfg: Any) -> str | None:
    """Why this run's model cannot be exported (None when it can), said before anything is
    written: the graph above covers RTMDet's box heads; docs/export.md has the table."""
    model = cfg.model
    kind = model.get("type")
    head = (model.get("bbox_head") or {}).get("type")
    if kind in ("RTMDet", "RTMDetIns") and head in EXPORTED_HEADS:
        return None
    if model.get("rpn_head") is not None:
        why = "a two-stage detector (RPN, RoIAlign, a second NMS), not in the exporter yet"
    elif (head and "Ins" in head) or model.get("mask_head") is not None:
        why = f"its mask head ({head or model['mask_head'].get('type')}) is not in the exporter yet"
    else:
        why = f"its head ({head or 'none'}) decodes boxes its own way, not in the exporter yet"
    return (
        f"{kind} is not exported: {why}. The ONNX export covers RTMDet and RTMDet-Ins "
        "(docs/export.md lists each architecture and why)"
    )


def load_model(cfg: Any, checkpoint: str | Path) -> nn.Module:
    """The run's model with ``checkpoint``'s weights, for export: loaded with the allowlist, and
    refused when the weights are not this model's (mmengine would load what matches and leave the
    rest random, without failing)."""
    import copy

    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    from src.config.metadata import RunMetadata
    from src.engine import patches
    from src.runs.checkpoint_io import load_checkpoint_file

    patches.apply()
    checkpoint = Path(checkpoint)
    state = load_checkpoint_file(checkpoint)
    weights = state.get("state_dict", state)
    init_default_scope(cfg.get("default_scope", "mmdet"))
    model_cfg = copy.deepcopy(cfg.model)
    if isinstance(model_cfg.get("backbone"), dict):
        model_cfg["backbone"]["init_cfg"] = None  # no pretrained download: the weights follow
    model = MODELS.build(model_cfg)
    model.cfg = cfg  # what mmdet's inference_detector reads the test pipeline from
    model.dataset_meta = {"classes": list(RunMetadata.of(cfg).classes)}
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unknown = [k for k in weights if k not in expected]
    wrong = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
    if missing or unknown or wrong:
        raise ExportError(
            f"{checkpoint.name} does not hold this run's model ({type(model).__name__}, "
            f"{len(expected)} tensors): {len(missing)} missing, {len(unknown)} unknown, "
            f"{len(wrong)} of another shape (e.g. {(missing + unknown + wrong)[0]}); export a "
            "checkpoint of this run"
        )
    model.load_state_dict(weights)
    return model.eval()


def export_onnx(
    cfg: Any,
    checkpoint: str | Path,
    dst: str | Path,
    *,
    input_size: int | None = None,
    classes: list[str] | None = None,
) -> Path:
    """Write ``dst`` (an ``.onnx`` file) for the run ``cfg`` with ``checkpoint``'s weights."""
    reason = export_blocker(cfg)
    if reason:
        raise ExportError(reason)
    prep = preprocess_of(cfg, input_size)
    graph = DenseDetectorGraph(load_model(cfg, checkpoint), prep).eval()
    # traced on a 4:3 landscape canvas: equal sides could hide a height used as a width
    side = -(-prep.scale[0] // prep.divisor) * prep.divisor
    images = torch.zeros((1, 3, -(-side * 3 // 4 // prep.divisor) * prep.divisor, side))
    orig = torch.tensor([[float(prep.scale[0] * 3 // 4), float(prep.scale[0])]])
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    outputs = ["dets", "labels"] + (["masks"] if graph.with_masks else [])
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "orig_size": {0: "batch"},
            "dets": {0: "batch"}, "labels": {0: "batch"},
            "masks": {0: "batch", 2: "mask_height", 3: "mask_width"}}  # fmt: skip
    with torch.no_grad(), _quiet_tracing():
        torch.onnx.export(
            graph, (images, orig), str(tmp), dynamo=False, opset_version=OPSET,
            input_names=["images", "orig_size"], output_names=outputs,
            dynamic_axes={k: v for k, v in axes.items() if k in ["images", "orig_size", *outputs]},
        )  # fmt: skip
    extra = {"outputs": outputs}
    if graph.with_masks:  # what the caller does to the mask logits (src.engine.onnx_runtime)
        extra |= {"mask_stride": graph.strides[0], "mask_thr": graph.mask_thr}
    _write_metadata(tmp, prep, list(classes or []), extra)
    tmp.replace(dst)
    return dst


def _quiet_tracing():
    """The tracer's warnings about Python values in mmdet's code (constants by design here) go
    to the log, not the console."""
    import contextlib
    import warnings

    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def _write_metadata(path: Path, prep: Preprocess, classes: list[str], extra: dict) -> None:
    import onnx

    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key = META_KEY
    entry.value = json.dumps({**asdict(prep), "classes": classes, **extra})
    onnx.save(proto, str(path))
