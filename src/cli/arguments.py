"""The option types that parse more than ``int`` or ``float``: ``auto|N``, ``PX|LONGxSHORT``, a GPU
list, export formats.

Each raises ``argparse.ArgumentTypeError`` with the value and what to give instead, so argparse
reports a bad value as a usage error (exit 2) before any command runs. Shared by ``train`` and
``export``, so a format or a size is read the same way by both.
"""

from __future__ import annotations

import argparse

from src.core.export_formats import export_names

MODEL_SIZE = "model"  # --input-size model: the zoo model's own size


def gpu_list(text: str) -> tuple[int, ...]:
    """``0,1`` → (0, 1): the GPUs to train on, one process each."""
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give GPU indices, e.g. 0,1") from None


def export_formats(text: str) -> tuple[str, ...]:
    """``onnx,tensorrt`` → ('onnx', 'tensorrt'): each one of the formats declared in
    ``src.core.export_formats``."""
    names = export_names()
    formats = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    unknown = [f for f in formats if f not in names]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give one or more of {', '.join(names)}, comma-separated"
        )
    return formats


def export_metavar(one_of: bool = False) -> str:
    """The formats as a metavar: ``onnx[,tensorrt]``, or ``onnx|tensorrt`` (``one_of``)."""
    first, *rest = export_names()
    return "|".join(export_names()) if one_of else first + "".join(f"[,{n}]" for n in rest)


def auto_or_int(text: str) -> int | None:
    """``auto`` (None: the app chooses) or a whole number."""
    if text.strip().lower() == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a whole number, got {text!r}") from None


def input_size(text: str) -> tuple[int, int] | str:
    """``640`` or ``1333x800`` (longer x shorter edge) → (longer, shorter); ``model`` stays."""
    if text.strip().lower() == MODEL_SIZE:
        return MODEL_SIZE
    parts = text.lower().replace("×", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give PX or LONGxSHORT, e.g. 1333x800"
        ) from None
    if len(sizes) == 1:
        sizes *= 2
    if len(sizes) != 2:
        raise argparse.ArgumentTypeError(f"{text!r}: give PX or LONGxSHORT, e.g. 1333x800")
    return max(sizes), min(sizes)
