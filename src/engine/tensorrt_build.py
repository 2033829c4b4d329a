"""Build a TensorRT engine from an exported ONNX file (src.engine.onnx_export), on a GPU.

TensorRT parses the graph as it is (every op is standard ONNX, ``NonMaxSuppression`` included,
which TensorRT >= 8.5 supports); the engine is built for this GPU and this TensorRT version only,
with one optimisation profile over the batch and canvas sizes the app's pre-processing yields.
Where TensorRT or a GPU is missing, ``tensorrt_blocker`` says so and nothing is attempted.
"""

from __future__ import annotations

from pathlib import Path


def tensorrt_blocker() -> str | None:
    """Why no TensorRT engine can be built here (None: it can)."""
    import torch

    if not torch.cuda.is_available():
        return "TensorRT needs an NVIDIA GPU and this machine has none: the ONNX file is the export"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return (
            "TensorRT is not installed here (pip install tensorrt, matching the GPU's CUDA): the "
            "ONNX file is the export"
        )
    return None


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
    ``max_side`` px a side, optimised for one ``max_side`` square image."""
    import tensorrt as trt

    reason = tensorrt_blocker()
    if reason:
        raise RuntimeError(reason)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch: the only mode of TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {Path(onnx_path).name}: {errors}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    side = -(-max_side // divisor) * divisor
    profile = builder.create_optimization_profile()
    profile.set_shape("images", (1, 3, divisor, divisor), (1, 3, side, side),
                      (max_batch, 3, side, side))  # fmt: skip
    profile.set_shape("orig_size", (1, 2), (1, 2), (max_batch, 2))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT could not build an engine from {Path(onnx_path).name}")
    dst = Path(dst)
    dst.write_bytes(bytes(engine))
    return dst


class TensorRTDetector:
    """Runs a built engine on the GPU with torch's CUDA tensors as its buffers (TensorRT 10's
    named-tensor API), fed as :class:`src.engine.onnx_runtime.OnnxDetector` feeds ONNX Runtime:
    ``predict`` takes the same canvas batch and returns the same ``dets`` and ``labels``."""

    def __init__(self, engine_path: str | Path) -> None:
        import tensorrt as trt

        self.trt = trt
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        self.context = self.engine.create_execution_context()

    def run(self, images, orig_size):  # numpy [B,3,H,W] float32, [B,2] float32
        import torch

        inputs = {"images": torch.from_numpy(images).cuda(),
                  "orig_size": torch.from_numpy(orig_size).cuda()}  # fmt: skip
        for name, tensor in inputs.items():
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name, dtype in (("dets", torch.float32), ("labels", torch.int64)):
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT could not run the engine")
        stream.synchronize()
        return outputs["dets"].cpu().numpy(), outputs["labels"].cpu().numpy()
