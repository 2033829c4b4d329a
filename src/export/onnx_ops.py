"""ONNX operators the export's graphs need, with eager kernels so that tracing sees real values.

The graphs are traced by ``torch.onnx.export(dynamo=False)``: each op here is an autograd
``Function`` whose ``forward`` runs mmcv's kernel directly (not mmcv's own traced functions: one
``Function`` may not call another while tracing) and whose ``symbolic`` writes the standard ONNX
operator, so that onnxruntime alone, and TensorRT, run the graph.
"""

from __future__ import annotations

import torch


class NMS(torch.autograd.Function):
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


class RoIAlign(torch.autograd.Function):
    """ONNX ``RoiAlign`` (opset 16+: ``half_pixel``, which is mmcv's ``aligned=True``; mmcv's own
    symbolic shifts the boxes for opset 10's convention, twice the shift at opset 16+), average
    pooling, mmcv's adaptive sampling (``sampling_ratio`` 0) as ONNX's."""

    @staticmethod
    def forward(ctx, features, rois, out_h, out_w, spatial_scale, sampling_ratio):
        from mmcv.ops.roi_align import ext_module

        output = features.new_zeros((rois.shape[0], features.shape[1], out_h, out_w))
        empty = features.new_zeros(0)
        ext_module.roi_align_forward(
            features, rois, output, empty, empty, aligned_height=out_h, aligned_width=out_w,
            spatial_scale=float(spatial_scale), sampling_ratio=int(sampling_ratio), pool_mode=1,
            aligned=True,
        )  # fmt: skip
        return output

    @staticmethod
    def symbolic(g, features, rois, out_h, out_w, spatial_scale, sampling_ratio):
        def columns(*index):
            return g.op("Gather", rois, g.op("Constant", value_t=torch.tensor(index)), axis_i=1)

        axis = g.op("Constant", value_t=torch.tensor([1]))
        batch = g.op("Cast", g.op("Squeeze", columns(0), axis), to_i=7)  # 7: INT64
        return g.op(
            "RoiAlign", features, columns(1, 2, 3, 4), batch, output_height_i=out_h,
            output_width_i=out_w, spatial_scale_f=float(spatial_scale),
            sampling_ratio_i=max(0, int(sampling_ratio)), mode_s="avg",
            coordinate_transformation_mode_s="half_pixel",
        )  # fmt: skip
