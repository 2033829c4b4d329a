"""Build a TensorRT engine from an exported ONNX file (src.export.onnx_export) and run it, on a GPU.

TensorRT 10 parses our four graphs (RTMDet, RTMDet-Ins, Faster R-CNN, Mask R-CNN) with three
conditions this module meets (issue 34, docs/export.md):

* the ONNX parser imports ``RoiAlign`` as the ``ROIAlign_TRT`` plugin, which exists only once
  ``trt.init_libnvinfer_plugins`` has registered TensorRT's plugins: without it the two-stage
  graphs fail to parse;
* TensorRT's TopK takes K <= ``TENSORRT_MAX_TOPK`` (3840) while our graphs take ``nms_pre`` (30000
  for RTMDet): the engine is built from a copy of the graph whose larger K are clamped
  (:func:`clamp_topk`; what that does to the detections is measured in docs/export.md);
* TensorRT 11 removed ``BuilderFlag.FP16`` (precision comes from the graph there): 10.x only.

The engine is built for this GPU and this TensorRT version only, with one optimisation profile
over the batch and canvas sizes the app's pre-processing yields. Every TensorRT call that reports
failure by its return value (None or False) is checked, so a failure is an error that names the
call instead of zeros or garbage downstream. Where TensorRT or a GPU is missing,
``tensorrt_blocker`` says so and nothing is attempted.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

TENSORRT_MAX_TOPK = 3840  # TensorRT 10's ITopKLayer: K <= 3840
SUPPORTED_MAJOR = 10
# the CUDA 13 wheel for the lent machines' torch (cu130); tensorrt-cu12 for CUDA 12 (docs/export.md)
TENSORRT_WHEEL = "tensorrt-cu13==10.16.1.11"


def tensorrt_blocker() -> str | None:
    """Why no TensorRT engine can be built here (None: it can)."""
    import torch

    if not torch.cuda.is_available():
        return "TensorRT needs an NVIDIA GPU and this machine has none: the ONNX file is the export"
    try:
        import tensorrt as trt
    except ImportError:
        return (
            f"TensorRT is not installed here (pip install '{TENSORRT_WHEEL}', or tensorrt-cu12<11 "
            "for CUDA 12): the ONNX file is the export"
        )
    major = int(str(getattr(trt, "__version__", "0")).split(".")[0] or 0)
    if major != SUPPORTED_MAJOR:
        return (
            f"TensorRT {trt.__version__} is installed; the export is built for TensorRT "
            f"{SUPPORTED_MAJOR}.x (11 removed BuilderFlag.FP16): pip install '{TENSORRT_WHEEL}'"
        )
    return None


def clamp_topk(src: str | Path, dst: str | Path, limit: int = TENSORRT_MAX_TOPK) -> list[int]:
    """Write ``dst``: ``src`` with every constant TopK K above ``limit`` set to ``limit``; returns
    the K values that were clamped. Each clamped node gets a K of its own (a constant may be
    shared). The graph stays valid: the top-k's filler (onnx_graph's fixed-k rule) and the rows
    gathered after it only need at least K entries, which a smaller K keeps; the result equals
    an export with ``nms_pre = limit`` (tests/engine/test_tensorrt_build.py)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    clamped = []
    for i, node in enumerate(graph.node):
        if node.op_type != "TopK" or len(node.input) < 2:
            continue
        k = constants.get(node.input[1])
        if k is None:
            raise ValueError(f"TopK {node.name or i}'s K is computed at run time: TensorRT "
                             "needs a constant")  # fmt: skip
        if int(k.reshape(-1)[0]) <= limit:
            continue
        clamped.append(int(k.reshape(-1)[0]))
        name = f"{node.name or f'topk_{i}'}_k_clamped"
        graph.initializer.append(numpy_helper.from_array(np.array([limit], np.int64), name))
        node.input[1] = name
    del graph.value_info[:]  # shapes inferred for the old K would be stale
    onnx.save(model, str(dst))
    return clamped


def _checked(value: Any, what: str) -> Any:
    """``value`` unless TensorRT reported failure with it (None or False)."""
    if value is None or value is False:
        raise RuntimeError(f"TensorRT: {what} failed (see TensorRT's log above)")
    return value


def _parse(trt: Any, network: Any, logger: Any, onnx_path: Path) -> None:
    """Parse the graph into ``network``, each parser error in the message."""
    parser = _checked(trt.OnnxParser(network, logger), "creating the ONNX parser")
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errors or 'no detail'}")


def build_engine(
    onnx_path: str | Path,
    dst: str | Path,
    *,
    max_side: int,
    divisor: int,
    fp16: bool = True,
    max_batch: int = 8,
) -> Path:
    """Write ``dst`` (a serialised engine): batches 1..``max_batch`` of canvases up to
    ``max_side`` px a side, optimised for one ``max_side`` square image; the graph's TopK
    clamped to what TensorRT takes (:func:`clamp_topk`)."""
    import tensorrt as trt

    reason = tensorrt_blocker()
    if reason:
        raise RuntimeError(reason)
    onnx_path = Path(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    _checked(trt.init_libnvinfer_plugins(logger, ""), "registering its plugins (ROIAlign_TRT)")
    builder = _checked(trt.Builder(logger), "creating a builder")
    network = _checked(builder.create_network(0), "creating a network")  # explicit batch (10.x)
    with tempfile.TemporaryDirectory() as tmp:
        clamped = Path(tmp) / onnx_path.name
        clamp_topk(onnx_path, clamped)
        _parse(trt, network, logger, clamped)
    config = _checked(builder.create_builder_config(), "creating a builder config")
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    side = -(-max_side // divisor) * divisor
    profile = _checked(builder.create_optimization_profile(), "creating a profile")
    profile.set_shape("images", (1, 3, divisor, divisor), (1, 3, side, side),
                      (max_batch, 3, side, side))  # fmt: skip
    profile.set_shape("orig_size", (1, 2), (1, 2), (max_batch, 2))
    if config.add_optimization_profile(profile) < 0:
        raise RuntimeError("TensorRT: the optimisation profile is invalid")
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path.name}")
    dst = Path(dst)
    dst.write_bytes(bytes(engine))
    return dst


# TensorRT's tensor types (trt.DataType member names) as torch's
_TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT32": "int32",
                 "INT64": "int64", "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"}  # fmt: skip


class TensorRTDetector:
    """Runs a built engine with torch tensors as its buffers (TensorRT 10's named-tensor API), fed
    as :class:`src.export.onnx_runtime.OnnxDetector` feeds ONNX Runtime: ``run`` takes the same
    canvas batch and returns the engine's outputs in its order (``dets``, ``labels``, and
    ``masks`` for mask models), each bound by name with the dtype the engine reports (TensorRT
    may give int32 labels where ONNX has int64). It runs on a CUDA stream of its own: on the
    legacy default stream TensorRT synchronises more than it needs to (its log says so)."""

    def __init__(self, engine_path: str | Path, device: str = "cuda") -> None:
        import tensorrt as trt

        self.trt = trt
        self.device = device
        runtime = _checked(trt.Runtime(trt.Logger(trt.Logger.WARNING)), "creating a runtime")
        self.engine = _checked(runtime.deserialize_cuda_engine(Path(engine_path).read_bytes()),
                               f"loading {Path(engine_path).name}")  # fmt: skip
        self.context = _checked(self.engine.create_execution_context(), "creating a context")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        output = trt.TensorIOMode.OUTPUT
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) != output]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == output]
        self.stream = self._new_stream()

    def _new_stream(self) -> Any:
        import torch

        return torch.cuda.Stream(device=self.device)

    def _on_stream(self) -> contextlib.AbstractContextManager:
        import torch

        return torch.cuda.stream(self.stream) if self.device.startswith("cuda") else (
            contextlib.nullcontext())  # fmt: skip

    def _dtype(self, name: str) -> Any:
        import torch

        kind = self.engine.get_tensor_dtype(name).name
        if kind not in _TORCH_DTYPES:
            raise RuntimeError(f"TensorRT: output {name} has type {kind}, not one torch holds")
        return getattr(torch, _TORCH_DTYPES[kind])

    def _bind(self, name: str, tensor: Any) -> None:
        if not self.context.set_tensor_address(name, tensor.data_ptr()):
            raise RuntimeError(f"TensorRT: binding tensor {name} failed")

    def run(self, images: np.ndarray, orig_size: np.ndarray) -> tuple[np.ndarray, ...]:
        """numpy [B,3,H,W] float32 and [B,2] float32 in; every output as numpy, engine order."""
        import torch

        feeds = {"images": images, "orig_size": orig_size}
        if set(feeds) != set(self.inputs):
            raise RuntimeError(f"TensorRT: the engine takes {self.inputs}, not {list(feeds)}")
        with self._on_stream():
            buffers = {}
            for name, array in feeds.items():
                tensor = torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
                buffers[name] = tensor.to(self._dtype(name)).contiguous()
                if not self.context.set_input_shape(name, tuple(tensor.shape)):
                    raise RuntimeError(f"TensorRT: input {name} of shape {tuple(tensor.shape)} "
                                       "is outside the engine's profile")  # fmt: skip
                self._bind(name, buffers[name])
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise RuntimeError(f"TensorRT: output {name}'s shape {shape} is not known")
                buffers[name] = torch.empty(shape, dtype=self._dtype(name), device=self.device)
                self._bind(name, buffers[name])
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT could not run the engine")
            self.stream.synchronize()
        return tuple(buffers[name].cpu().numpy() for name in self.outputs)
