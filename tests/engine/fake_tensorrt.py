"""A stand-in for the ``tensorrt`` module (10.x Python API) that fails where the real one fails.

Only what src/export/tensorrt_build.py calls, and the real behaviour where bugs live:

* the ONNX parser's ``RoiAlign`` importer needs the ``ROIAlign_TRT`` plugin, registered by
  ``init_libnvinfer_plugins``: without it ``parse_from_file`` returns False with the error;
* a ``TopK`` whose constant K exceeds 3840 does not parse;
* ``build_serialized_network`` returns None on failure (``FAIL["build"]``);
* ``set_tensor_address`` returns False for a name the engine does not have (or ``FAIL["bind"]``);
* ``execute_async_v3`` returns False when an I/O tensor has no address, and records the stream it
  ran on (0 is CUDA's legacy default stream, which TensorRT warns about);
* the engine's outputs are those of the ONNX graph, with TensorRT's types (labels as INT32).
On success it writes known values into the output buffers (host memory here: the tests run on the
CPU), so a test can check what came back.
"""

from __future__ import annotations

import ctypes
import enum
import json
from types import SimpleNamespace

import numpy as np

__version__ = "10.16.1.11"
MAX_TOPK = 3840
FAIL: dict[str, bool] = {}
STATE = SimpleNamespace(plugins=False, streams=[], parsed=[])


def reset(version: str = "10.16.1.11") -> None:
    global __version__
    __version__ = version
    FAIL.clear()
    STATE.plugins, STATE.streams, STATE.parsed = False, [], []


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    INT64 = 8


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class BuilderFlag(enum.Enum):
    FP16 = 0


class Logger:
    WARNING = 2

    def __init__(self, severity: int = 2) -> None:
        self.severity = severity


def init_libnvinfer_plugins(logger, namespace: str) -> bool:
    STATE.plugins = True
    return True


class OnnxParser:
    def __init__(self, network, logger) -> None:
        self.network = network
        self.errors: list[str] = []

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, i: int) -> str:
        return self.errors[i]

    def parse_from_file(self, path: str) -> bool:
        import onnx
        from onnx import numpy_helper

        model = onnx.load(path)
        consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        ks = []
        for node in model.graph.node:
            if node.op_type == "Constant":
                consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
            if node.op_type == "RoiAlign" and not STATE.plugins:
                self.errors.append(f"{node.name}: Plugin not found, are the plugin name, version, "
                                   "and namespace correct? (ROIAlign_TRT)")  # fmt: skip
            if node.op_type == "TopK":
                ks.append(int(consts[node.input[1]].reshape(-1)[0]))
            if ks and node.op_type == "TopK" and ks[-1] > MAX_TOPK:
                self.errors.append(f"{node.name}: TopK K exceeds the maximum value {MAX_TOPK}")
        if self.errors:
            return False
        outputs = [o.name for o in model.graph.output]
        self.network.outputs = outputs
        STATE.parsed.append(ks)  # each parse's TopK K values
        return True


class Network:
    def __init__(self) -> None:
        self.outputs: list[str] = []


class Config:
    def __init__(self) -> None:
        self.flags: set = set()

    def set_flag(self, flag) -> None:
        self.flags.add(flag)

    def add_optimization_profile(self, profile) -> int:
        return 0


class Profile:
    def set_shape(self, name, low, opt, high) -> None:
        pass


class Builder:
    def __init__(self, logger) -> None:
        pass

    def create_network(self, flags: int) -> Network:
        return Network()

    def create_builder_config(self) -> Config:
        return Config()

    def create_optimization_profile(self) -> Profile:
        return Profile()

    def build_serialized_network(self, network, config):
        if FAIL.get("build"):
            return None
        return json.dumps({"outputs": network.outputs}).encode()


# what each output of our graphs is, as TensorRT types it (ONNX's int64 labels come out int32)
OUTPUT_TYPES = {"dets": DataType.FLOAT, "labels": DataType.INT32, "masks": DataType.FLOAT}


class Engine:
    def __init__(self, outputs: list[str]) -> None:
        self.names = ["images", "orig_size", *outputs]

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name in ("images", "orig_size") else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> DataType:
        return OUTPUT_TYPES.get(name, DataType.FLOAT)

    def create_execution_context(self) -> Context:
        return Context(self)


class Runtime:
    def __init__(self, logger) -> None:
        pass

    def deserialize_cuda_engine(self, data: bytes):
        try:
            return Engine(json.loads(data)["outputs"])
        except (ValueError, KeyError):
            return None


class Context:
    """Shapes as our graphs have them: 100 detections an image, 28x28 masks."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.batch = 0
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape) -> bool:
        if name == "images":
            self.batch = shape[0]
        return name in ("images", "orig_size")

    def get_tensor_shape(self, name: str) -> tuple:
        return {"dets": (self.batch, 100, 5), "labels": (self.batch, 100),
                "masks": (self.batch, 100, 28, 28)}[name]  # fmt: skip

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        if FAIL.get("bind") or name not in self.engine.names:
            return False
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream: int) -> bool:
        STATE.streams.append(stream)
        if set(self.addresses) != set(self.engine.names):
            return False
        for name in self.engine.names[2:]:
            dtype = np.int32 if OUTPUT_TYPES[name] == DataType.INT32 else np.float32
            values = np.full(self.get_tensor_shape(name), 7, dtype)
            ctypes.memmove(self.addresses[name], values.ctypes.data, values.nbytes)
        return True
