"""The formats a run's checkpoint is exported to, each declared once: this table is what every
door and reader knows of a format (docs/architecture.md, "Add an export format").

Read from here: the CLI's ``--export`` and ``export --format`` (the names they take, their
metavar and help), the Hyperparameters step's items, ``TrainParams.validate`` and its build
order, the file names in a run's ``export/`` folder, ``experiment_info.export`` (the runtime the
SDK reads) and the upload. How a format is built, and why this machine cannot build it, is its
row in ``src.export.formats.EXPORTERS``; ``tests/export/test_format_table.py`` fails when a
format has a row in one table and not in the other. Readers look the table up when they run
(:func:`export_names`, :func:`export_format`), so a row added here reaches them all.

Imports nothing of ours: the bottom layer (``src.core``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class ExportFormat:
    """One export format.

    Args:
        name: how the CLI, the API, the UI and ``TrainParams.export`` spell it (``onnx``).
        title: its name in sentences (``ONNX``: "the ONNX file", "TensorRT export skipped").
        label: the Hyperparameters step's item for it.
        help: the words that explain it in the CLI's help (after its name, in parentheses).
        runtime: the SDK's ``supervisely.nn.utils.RuntimeType`` of its file, the key of
            ``experiment_info.json``'s ``export``.
        suffix: its file's suffix in the run's ``export/`` folder (``<checkpoint>.onnx``).
        built_from: the format whose file this one is built from (None: from the checkpoint);
            asking for it exports that one first.
        needs_gpu: it can only be built on an NVIDIA GPU (skipped elsewhere, with the reason).
    """

    name: str
    title: str
    label: str
    help: str
    runtime: str
    suffix: str
    built_from: str | None = None
    needs_gpu: bool = False


EXPORT_FORMATS: tuple[ExportFormat, ...] = (
    ExportFormat(
        "onnx", "ONNX", "ONNX (ONNX Runtime)", "ONNX Runtime", "ONNXRuntime", ".onnx",
    ),
    ExportFormat(
        "tensorrt", "TensorRT", "TensorRT (a GPU with TensorRT; built from the ONNX file)",
        "an engine built from the ONNX file; needs a GPU with TensorRT", "TensorRT", ".engine",
        built_from="onnx", needs_gpu=True,
    ),
)  # fmt: skip


def export_table() -> tuple[ExportFormat, ...]:
    """Every format's declaration, in the table's order (the order they are built in)."""
    return EXPORT_FORMATS


def export_names() -> tuple[str, ...]:
    """Every format's name, in the table's order."""
    return tuple(fmt.name for fmt in export_table())


def export_format(name: str) -> ExportFormat:
    """The declaration of format ``name``; ``KeyError`` naming the formats there are."""
    for fmt in export_table():
        if fmt.name == name:
            return fmt
    raise KeyError(f"export format {name!r} is unknown: use {', '.join(export_names())}")


def build_order(wanted: Iterable[str]) -> tuple[str, ...]:
    """``wanted`` with the formats they are built from, in the order to build them (the
    table's): ``tensorrt`` -> ``('onnx', 'tensorrt')``."""
    chosen = set(wanted)
    pending = list(chosen)
    while pending:
        source = export_format(pending.pop()).built_from
        if source and source not in chosen:
            chosen.add(source)
            pending.append(source)
    return tuple(name for name in export_names() if name in chosen)


def export_help() -> str:
    """Each format with the words that explain it: ``onnx (ONNX Runtime), tensorrt (...)``."""
    return ", ".join(f"{fmt.name} ({fmt.help})" for fmt in export_table())
