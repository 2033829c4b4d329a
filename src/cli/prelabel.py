"""``predict RUN_ID --project DIR --out DIR``: pre-label a copy of a project with a run's model
(docs/after-training.md), through the controller as the HTTP API does
(``TrainingController.prelabel``).

The options live beside ``predict``'s own (one command, two inputs: images with ``--onnx``, a
project with ``--project``); what runs is the controller's, and this module only reads the command
line, shows a progress bar on stderr and prints what was written.
"""

from __future__ import annotations

import argparse
import sys

from src.cli.common import APP_DATA_HELP, CliError, app_data, names, store


def add_prelabel_options(parser: argparse.ArgumentParser) -> None:
    """``--project`` and what only pre-labelling takes."""
    parser.add_argument(
        "--project", metavar="DIR",
        help="pre-label this Supervisely project (never modified) with the run RUN_ID: a copy "
        "with the predictions goes to --out",
    )  # fmt: skip
    parser.add_argument(
        "--datasets", metavar="A,B",
        help="with --project: predict only these datasets (nested ones as parent/child); the "
        "copy holds every dataset",
    )  # fmt: skip
    parser.add_argument(
        "--overwrite-labelled", action="store_true",
        help="with --project: predict the images that already have labels too (the predictions "
        "are added beside their labels; default: those images are left as they are)",
    )  # fmt: skip
    parser.add_argument("--app-data", help=APP_DATA_HELP)
    parser.add_argument(
        "--team-files", metavar="DIR",
        help="the folder standing in for Team Files, where uploaded runs are (default: "
        "artifacts/team_files)",
    )  # fmt: skip


def cmd_prelabel(args: argparse.Namespace) -> int:
    """Pre-label ``--project`` with run ``RUN_ID`` into ``--out``; one line per class at the end."""
    from src.training.controller import TrainingController

    request = _request(args)
    controller = TrainingController(app_data(args), store(args)[0])
    bar = _Bar()
    try:
        result = controller.prelabel(request, bar.update)
    finally:
        bar.close()
    what = "sliced into the run's tiles, " if result.sliced else ""
    print(
        f"pre-labelled {result.predicted} of {result.images} images ({what}"
        f"{result.seconds / max(result.predicted, 1):.2f} s each) with {result.checkpoint}"
    )
    if result.left_labelled:
        print(f"  {result.left_labelled} images already labelled, left as they were "
              "(--overwrite-labelled predicts them too)")  # fmt: skip
    if result.unreadable:
        print(f"  {len(result.unreadable)} images OpenCV cannot read, left as they were: "
              f"{', '.join(result.unreadable[:5])}")  # fmt: skip
    for name, count in result.objects.items():
        print(f"  {name}: {count} objects (score >= {result.thresholds[name]:.3f})")
    print(f"project: {result.out_dir}")
    return 0


def _request(args: argparse.Namespace):
    """The command line as a ``PrelabelRequest``; a ``CliError`` for what only ``--onnx``
    takes, or for more than one run."""
    from src.prelabel.prelabel import PrelabelRequest

    if args.onnx is not None or args.slice_size is not None or args.slice_overlap is not None:
        raise CliError(
            "--onnx, --slice-size and --slice-overlap are for images; with --project the run's "
            "own model predicts, sliced as it was trained"
        )
    if len(args.images) != 1:
        raise CliError(f"--project takes one RUN_ID, not {len(args.images)}: {args.images}")
    if not args.out:
        raise CliError("--project needs --out DIR: where the pre-labelled copy goes")
    datasets = names(args.datasets, "--datasets") if args.datasets else None
    return PrelabelRequest(
        run_id=args.images[0], project_dir=args.project, out_dir=args.out,
        datasets=tuple(datasets) if datasets is not None else None,
        overwrite_labelled=args.overwrite_labelled, score_thr=args.score_thr,
    )  # fmt: skip


class _Bar:
    """A tqdm bar on stderr over the project's images, started at the first one (nothing is
    drawn while the model loads and the project is copied)."""

    def __init__(self) -> None:
        self.bar = None

    def update(self, done: int, total: int) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, unit="img", desc="pre-labelling", file=sys.stderr,
                            dynamic_ncols=True)  # fmt: skip
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
