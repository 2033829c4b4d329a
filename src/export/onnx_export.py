"""Export a trained run to ONNX: the network, its box decoding and NMS in one graph
(src/export/onnx_graph.py has the graphs and the rules they follow; docs/export.md the file's
inputs, outputs and metadata).

Why our own wrapper over ``torch.onnx`` instead of mmdeploy 1.3.1 (tried here, docs/export.md):
its package requires protobuf <= 3.20.2, which our pins (protobuf 7, for onnx and the SDK) cannot
hold; under torch >= 2.9 its export fails unless the TorchScript exporter is forced (torch's default
became the dynamo exporter, which needs onnxscript and bypasses mmdeploy's rewriters); and its
graph post-processes with its own settings, not the run's ``test_cfg``. Torch's TorchScript
exporter exists in torch 2.1.2 (the production image) and 2.13 (here) alike, and every op of the
graphs is a standard ONNX op (opset 17), so onnxruntime alone runs them and TensorRT parses them.
"""

from __future__ import annotations

import inspect
import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.core.layout import CLASS_THRESHOLDS
from src.export.onnx_graph import (
    BOX_HEADS,
    MASK_HEADS,
    TWO_STAGE,
    DenseDetectorGraph,
    ExportError,
    Preprocess,
    TwoStageGraph,
)
from src.runs.atomic_files import atomic_path

OPSET = 17
# ONNX metadata key holding the pre-processing (read by src/export/onnx_runtime.py)
META_KEY = "sly_mmdet_export"


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


EXPORTED_HEADS = BOX_HEADS + MASK_HEADS
COVERED = "RTMDet, RTMDet-Ins, Faster R-CNN and Mask R-CNN"
# the parts of a two-stage model the graph implements (mmdet's types; subclasses of ConvFCBBoxHead
# predict alike)
TWO_STAGE_PARTS = {
    "rpn_head": ("RPNHead",),
    "roi_head": ("StandardRoIHead",),
    "roi_head.bbox_head": ("Shared2FCBBoxHead", "Shared4Conv1FCBBoxHead", "ConvFCBBoxHead"),
    "roi_head.bbox_roi_extractor": ("SingleRoIExtractor",),
    "roi_head.mask_head": ("FCNMaskHead", None),
    "roi_head.mask_roi_extractor": ("SingleRoIExtractor", None),
}


def export_blocker(cfg: Any) -> str | None:
    """Why this run's model cannot be exported (None when it can), said before anything is
    written; docs/export.md has the table."""
    model = cfg.model
    kind = model.get("type")
    head = (model.get("bbox_head") or {}).get("type")
    if kind in ("RTMDet", "RTMDetIns") and head in EXPORTED_HEADS:
        return None
    if kind in TWO_STAGE:
        why = _two_stage_problem(model)
        if why is None:
            return None
    elif model.get("rpn_head") is not None:
        why = f"a two-stage detector other than Faster/Mask R-CNN ({kind}), not in the exporter yet"
    elif (head and "Ins" in head) or model.get("mask_head") is not None:
        why = f"its mask head ({head or model['mask_head'].get('type')}) is not in the exporter yet"
    else:
        why = f"its head ({head or 'none'}) decodes boxes its own way, not in the exporter yet"
    return (
        f"{kind} is not exported: {why}. The ONNX export covers {COVERED} "
        "(docs/export.md lists each architecture and why)"
    )


def _two_stage_problem(model: Any) -> str | None:
    """A Faster/Mask R-CNN part the graph does not implement (an edited config), or None."""
    for path, allowed in TWO_STAGE_PARTS.items():
        part = model
        for key in path.split("."):
            part = (part or {}).get(key)
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in allowed:
            return f"its {path} is {kind}, not one of {', '.join(a for a in allowed if a)}"
    for path in ("roi_head.bbox_roi_extractor", "roi_head.mask_roi_extractor"):
        layer = (model.roi_head.get(path.split(".")[1]) or {}).get("roi_layer") or {}
        if layer and (layer.get("type") != "RoIAlign" or not layer.get("aligned", True)):
            return f"its {path} pools with {layer.get('type')} (aligned={layer.get('aligned')})"
    return None


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
    return export_model(cfg, load_model(cfg, checkpoint), dst, input_size=input_size,
                        classes=classes)  # fmt: skip


def export_model(
    cfg: Any,
    model: nn.Module,
    dst: str | Path,
    *,
    input_size: int | None = None,
    classes: list[str] | None = None,
    class_thresholds: dict[str, float] | None = None,
) -> Path:
    """Write ``dst`` for ``model`` (``load_model``'s, which the caller may go on using: the
    speed test times the same model); ``class_thresholds``: each class's score threshold, into
    the metadata (the evaluation's, from the checkpoint's meta)."""
    reason = export_blocker(cfg)
    if reason:
        raise ExportError(reason)
    prep = preprocess_of(cfg, input_size)
    graph_type = TwoStageGraph if type(model).__name__ in TWO_STAGE else DenseDetectorGraph
    graph = graph_type(model, prep).eval()
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
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer's warnings about Python values in mmdet's code (constants by design here)
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph, (images, orig), str(tmp), **_TORCHSCRIPT_EXPORTER, opset_version=OPSET,
            input_names=["images", "orig_size"], output_names=outputs,
            dynamic_axes={k: v for k, v in axes.items() if k in ["images", "orig_size", *outputs]},
        )  # fmt: skip
    extra: dict[str, Any] = {"outputs": outputs}
    if class_thresholds:  # predict and the README's example apply them (src.export.onnx_runtime)
        extra[CLASS_THRESHOLDS] = {str(k): float(v) for k, v in class_thresholds.items()}
    # a sliced run's tiles: predict --onnx slices large images the same way by default
    slicing = ((cfg.get("val_dataloader") or {}).get("dataset") or {}).get("slicing")
    if slicing and slicing.get("size"):
        extra["slicing"] = {
            k: slicing[k] for k in ("size", "overlap", "full_image") if k in slicing
        }
    # what the caller does to the masks (src.export.onnx_runtime)
    if graph.with_masks and isinstance(graph, TwoStageGraph):
        extra |= {"masks": "roi", "mask_thr": graph.mask_thr}
    elif graph.with_masks:
        extra |= {"masks": "dense", "mask_stride": graph.strides[0], "mask_thr": graph.mask_thr}
    _write_metadata(tmp, prep, list(classes or []), extra)
    tmp.replace(dst)
    return dst


# torch >= 2.5 has both exporters (the dynamo one the default from 2.9); torch 2.1 (the production
# image) has only the TorchScript one, and no ``dynamo`` argument
_TORCHSCRIPT_EXPORTER = (
    {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
)


def set_class_thresholds(path: str | Path, thresholds: dict[str, float]) -> None:
    """Bring an exported file's class thresholds up to date (an export kept from before the
    evaluation chose them), atomically; a file that already holds them is left untouched."""
    import onnx

    proto = onnx.load(str(path))
    entry = next(e for e in proto.metadata_props if e.key == META_KEY)
    meta = json.loads(entry.value)
    wanted = {str(k): float(v) for k, v in thresholds.items()}
    if meta.get(CLASS_THRESHOLDS) == wanted:
        return
    entry.value = json.dumps(meta | {CLASS_THRESHOLDS: wanted})
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))


def _write_metadata(path: Path, prep: Preprocess, classes: list[str], extra: dict) -> None:
    import onnx

    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key = META_KEY
    entry.value = json.dumps({**asdict(prep), "classes": classes, **extra})
    onnx.save(proto, str(path))
