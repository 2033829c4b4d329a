"""``export``: a run's checkpoint to ONNX (for ONNX Runtime) or TensorRT (docs/export.md).

Through the controller, as the app exports after training; exits 3 when some formats were
written and others not (src.core.errors.PARTIAL_EXPORT), so a script can tell.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from src.cli.arguments import export_formats, export_metavar
from src.cli.common import APP_DATA_HELP, fail, local_controller, run_or_checkpoint
from src.core.errors import PARTIAL_EXPORT, AppError
from src.core.export_formats import export_help, export_names


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The command's options: the run or checkpoint, the formats, the input size, ``--force``."""
    ex = sub.add_parser(
        "export",
        help="export a run's checkpoint to ONNX (ONNX Runtime) or TensorRT (docs/export.md)",
    )
    ex.add_argument("target", help="RUN_ID in app data, or a checkpoint (.pth) of such a run")
    ex.add_argument(
        "--format", type=export_formats, default=(export_names()[0],), metavar=export_metavar(True),
        help=f"one or more of {export_help()}, comma-separated (default: {export_names()[0]})",
    )  # fmt: skip
    ex.add_argument(
        "--input-size", type=int, metavar="PX",
        help="resize images to fit this square instead of the run's input size (the file is "
        "named <checkpoint>_<PX>px.onnx, beside the run's own)",
    )  # fmt: skip
    ex.add_argument(
        "--force", action="store_true",
        help="write over an export file already there (default: an export newer than the "
        "checkpoint is kept, an older one refused)",
    )  # fmt: skip
    ex.add_argument("--app-data", help=APP_DATA_HELP)
    ex.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """Export a run in app data (its best checkpoint, or the one named) to ONNX / TensorRT."""
    run_id, checkpoint = run_or_checkpoint(args.target)
    controller = local_controller(args)
    try:
        result = controller.export(
            run_id, args.format, checkpoint, input_size=args.input_size, replace=args.force
        )
    except AppError as exc:
        return fail("; ".join(exc.problems), exc.exit_code)
    print(f"exported {Path(result.checkpoint).name} in {result.seconds:.0f} s")
    for fmt, path in result.files.items():
        kept = " (kept: already exported from this checkpoint; --force writes it again)"
        print(f"  {fmt}: {path}" + (kept if fmt in result.kept else ""))
    for fmt, why in result.skipped.items():
        print(f"  {fmt} not exported: {why}")
    return 0 if not result.skipped else PARTIAL_EXPORT
