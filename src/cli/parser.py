"""The command line as a whole: the top-level parser built from each command's module, and
``main``, which runs the chosen command and turns the app's errors into exit codes.

A command is added by writing its module (``add_parser`` and its ``cmd_*``) and listing it in
``COMMANDS``; the order here is the order ``--help`` shows.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from src.cli import audit, demo_project, evaluate, export, predict, probe, runs, train, zoo
from src.cli.common import DESCRIPTION, fail, fail_with
from src.core.errors import AppError

COMMANDS = (probe, demo_project, zoo, train, runs, evaluate, export, predict, audit)


def build_parser() -> argparse.ArgumentParser:
    """``python -m src.cli``'s parser: one sub-command per module of ``COMMANDS``."""
    parser = argparse.ArgumentParser(prog="python -m src.cli", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code (0 done, src.core.errors for the others)."""
    from src.engine.devices import CUDA_ALLOC_CONF

    # before CUDA initialises (the allocator reads it once); a user's own setting is kept
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", CUDA_ALLOC_CONF)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # mmdet 3.3 calls torch.cuda.amp.autocast, deprecated in torch >= 2.4: noise, not news
    warnings.filterwarnings("ignore", category=FutureWarning)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if hasattr(args, "train_options"):  # audit: the options it does not know are train's
        args.train_options = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what was given (--from-run)
    try:
        return args.func(args)
    except AppError as exc:
        return fail_with(exc)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        return fail(str(exc))
