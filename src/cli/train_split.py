"""``train``'s train/val split: the three ways the app's Split step offers, from the command line.

``--val-fraction F`` (a random split seeded by ``--seed``), ``--train-datasets A,B
--val-datasets C`` (whole datasets) and ``--train-tag T --val-tag V`` (images by tag) make the
same ``Split`` the UI makes, with the same functions of ``src.data.project``, and hand it to the
run's request as the HTTP API's ``split`` does. Without them the run takes the default split
(datasets named train and val, else a random 20% seeded by the run's seed).
"""

from __future__ import annotations

import argparse
import math

from src.cli.common import CliError, names

# the ways to split, each with its options (destinations) in the order they are named
WAYS = {
    "random": ("val_fraction",),
    "datasets": ("train_datasets", "val_datasets"),
    "tags": ("train_tag", "val_tag"),
}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def add_split_options(tr: argparse.ArgumentParser) -> None:
    """The split's options, in a group of their own in ``--help``."""
    group = tr.add_argument_group(
        "train/val split",
        "one way at most; default: the datasets named train and val when the project has them, "
        "else a random 20% of the images to validate, seeded by --seed",
    )
    group.add_argument(
        "--val-fraction", type=float, metavar="F",
        help="a random split: this fraction of the images validates (0 < F < 1), drawn with "
        "--seed (the app's Random split)",
    )  # fmt: skip
    group.add_argument(
        "--train-datasets", metavar="NAME[,NAME]|JSON",
        help="whole datasets to train on (nested ones as parent/child), with --val-datasets",
    )  # fmt: skip
    group.add_argument(
        "--val-datasets", metavar="NAME[,NAME]|JSON",
        help="whole datasets to validate on, with --train-datasets",
    )  # fmt: skip
    group.add_argument("--train-tag", metavar="TAG", help="images tagged TAG train, with --val-tag")
    group.add_argument(
        "--val-tag", metavar="TAG", help="images tagged TAG validate, with --train-tag"
    )


def split_contradiction(args: argparse.Namespace) -> str | None:
    """Split options that cannot hold together, in one line (None: none): two ways at once,
    one half of a pair, a fraction outside (0, 1)."""
    used = {way: [d for d in dests if getattr(args, d) is not None] for way, dests in WAYS.items()}
    chosen = [way for way, given in used.items() if given]
    if len(chosen) > 1:
        named = [_flag(used[way][0]) for way in chosen]
        return (
            f"{' and '.join(named)} contradict: a split is chosen one way, a random fraction "
            "(--val-fraction), datasets (--train-datasets/--val-datasets) or tags "
            "(--train-tag/--val-tag) (drop all but one)"
        )
    for way in ("datasets", "tags"):
        given, dests = used[way], WAYS[way]
        if len(given) == 1:
            other = next(d for d in dests if d not in given)
            side = "validate" if other.startswith("val") else "train"
            return f"{_flag(given[0])} needs {_flag(other)}: the {way} whose images {side}"
    fraction = args.val_fraction
    if fraction is not None and not (math.isfinite(fraction) and 0 < fraction < 1):
        return f"--val-fraction {fraction:g}: give a fraction between 0 and 1, e.g. 0.2"
    return None


def chosen_split(args: argparse.Namespace, project, seed: int):
    """The ``Split`` the options choose on ``project`` (a ``LocalProject``); None: none chosen
    (the default split). A ``CliError`` names what does not hold in this project."""
    from src.data.project import random_split, tag_split, tags_of
    from src.data.reader import DatasetError

    try:
        if args.val_fraction is not None:
            return random_split(project, args.val_fraction, seed)
        if args.train_datasets is not None:
            return _dataset_split(args, project)
        if args.train_tag is not None:
            return tag_split(project, args.train_tag, args.val_tag)
    except DatasetError as exc:
        way = next(w for w, dests in WAYS.items() if getattr(args, dests[0]) is not None)
        flags = "/".join(_flag(d) for d in WAYS[way])
        hint = f"; its tags: {', '.join(tags_of(project)) or 'none'}" if way == "tags" else ""
        raise CliError(f"{flags}: {exc}{hint}") from None
    return None


def chosen_split_in(args: argparse.Namespace, project_dir: str, seed: int):
    """``chosen_split`` of the project in ``project_dir``; None as well when no split option is
    given or the folder is no project (the request's preparation then says what is wrong)."""
    from src.data.project import open_local_project
    from src.data.reader import DatasetError

    if all(getattr(args, d) is None for dests in WAYS.values() for d in dests):
        return None
    try:
        project = open_local_project(project_dir)
    except DatasetError:
        return None
    return chosen_split(args, project, seed)


def _dataset_split(args: argparse.Namespace, project):
    """Whole datasets each side; a name the project lacks is refused with the names it has."""
    from src.data.project import dataset_split

    train = names(args.train_datasets, "--train-datasets")
    val = names(args.val_datasets, "--val-datasets")
    unknown = sorted(set(train + val) - set(project.datasets))
    if unknown:
        raise CliError(
            f"--train-datasets/--val-datasets: {', '.join(unknown)} "
            f"{'is not a dataset' if len(unknown) == 1 else 'are not datasets'} of project "
            f"{project.name}; its datasets: {', '.join(project.datasets)}"
        )
    return dataset_split(project, train, val)
