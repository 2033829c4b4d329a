"""``evaluate``: Model Benchmark metrics and the report of a run, or of one of its checkpoints.

The same evaluation as the one after training (the controller's), on the validation split or
the training split, of the project where the run read it or where it is now.
"""

from __future__ import annotations

import argparse

from src.cli.common import (
    APP_DATA_HELP,
    fail_with,
    local_controller,
    print_evaluation,
    run_or_checkpoint,
)
from src.core.errors import AppError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The command's options: the run or checkpoint, the project, the split."""
    ev = sub.add_parser(
        "evaluate", help="Model Benchmark metrics and report of a run (or one of its checkpoints)"
    )
    ev.add_argument("target", help="RUN_ID in app data, or a checkpoint (.pth) of such a run")
    ev.add_argument("--project", help="the project's folder now (default: where the run read it)")
    ev.add_argument("--split", choices=("val", "train"), default="val")
    ev.add_argument("--app-data", help=APP_DATA_HELP)
    ev.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a run in app data (its best checkpoint, or the one named) on a split."""
    run_id, checkpoint = run_or_checkpoint(args.target)
    controller = local_controller(args)
    try:
        evaluation = controller.evaluate(
            run_id, checkpoint, project_dir=args.project, split=args.split
        )
    except AppError as exc:  # a run or checkpoint not there (2), an evaluation that failed (1)
        return fail_with(exc)
    print_evaluation(evaluation)
    return 0
