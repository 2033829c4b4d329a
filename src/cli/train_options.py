"""``train``'s options and what they mean: the parser, the ``TrainParams`` they make, the options
that cannot both hold, and the settings a ``--from-run`` overrides.

A ``TrainParams`` field's option is declared in ``src.config.doors`` (flag, help, default,
choices, range): the plain ones are made from it; those that parse more (``auto|N``,
``LONGxSHORT``, a GPU list, a file) are written here under the declared flag. The options that
are not a run's settings (where runs are, the dry run, resume) are written here too.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.cli.arguments import auto_or_int, export_formats, export_metavar, gpu_list, input_size
from src.cli.common import APP_DATA_HELP, DEFAULT_TEAM_FILES, names
from src.cli.train_split import add_split_options, split_contradiction
from src.config.params import RESUME_CHANGES


@dataclass(frozen=True)
class CliOption:
    """An ``argparse`` option made from a setting's declaration (``src.config.doors``)."""

    flag: str
    dest: str
    kwargs: dict[str, Any]


def generated_cli_options() -> list[CliOption]:
    """The CLI options of the plain fields, in ``TrainParams``' order: type and default from the
    field, choices, range and help from the declaration. A switch (bool) is ``--x/--no-x``."""
    from src.config.doors import DOORS
    from src.config.params import TrainParams

    hints = typing.get_type_hints(TrainParams)
    defaults = TrainParams()
    options = []
    for field in dataclasses.fields(TrainParams):
        door = DOORS[field.name]
        if door.cli is None or not door.generated:
            continue
        kind = _plain_type(hints[field.name])
        default = getattr(defaults, field.name)
        kwargs: dict[str, Any] = {"default": default, "help": _help(door, default)}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            if door.choices:
                kwargs["choices"] = door.choices
        options.append(CliOption(door.cli, field.name, kwargs))
    return options


def _help(door, default: object) -> str:
    """A generated option's help: the declaration's words, its unit, range and default."""
    words = [door.unit] if door.unit and door.unit not in door.help else []
    if door.range is not None:
        words.append(door.range.words() + (", or unset" if default is None else ""))
    if default is not None:
        words.append(f"default {default}")
    return door.help + (f" ({'; '.join(words)})" if words else "")


def _plain_type(hint: Any) -> type:
    """int, float, str or bool of a field's type (``X | None`` is X)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    kind = args[0] if args else hint
    if kind not in (int, float, str, bool):
        raise TypeError(f"{hint} is not a plain type: declare the field with generated=False")
    return kind


def add_options(tr: argparse.ArgumentParser) -> None:
    """Every option of ``train``: the project and model, the settings, the run's own options."""
    tr.add_argument("--project", help="local Supervisely project directory")
    tr.add_argument("--model", help="zoo model name (python -m src.cli zoo)")
    for option in generated_cli_options():
        tr.add_argument(option.flag, dest=option.dest, **option.kwargs)
    _add_parsed_settings(tr)
    add_split_options(tr)
    _add_run_options(tr)


def _add_parsed_settings(tr: argparse.ArgumentParser) -> None:
    """The ``TrainParams`` options that parse more than their type (``auto|N``, ``LONGxSHORT``,
    a GPU list, names), under the flags ``src.config.doors`` declares."""
    from src.config.doors import DOORS
    from src.config.params import DEFAULT_BATCH_SIZE, DEFAULT_WORKERS, TrainParams

    d = TrainParams()
    tr.add_argument(
        DOORS["classes"].cli, metavar="NAME[,NAME]|JSON",
        help="comma-separated class names, or a JSON list for names with a comma or spaces "
        """around them ('["car, parked", "person"]'); default: all""",
    )  # fmt: skip
    tr.add_argument(
        DOORS["ignore"].cli, metavar="NAME[,NAME]|JSON",
        help="comma-separated class or tag names (or a JSON list, as --classes) whose objects are "
        "ignore regions (crowds, areas that must not count): not trained as objects, never a miss "
        "or a false positive",
    )  # fmt: skip
    tr.add_argument(
        DOORS["epochs"].cli, type=int, default=None,
        help=f"{DOORS['epochs'].range.words()}; default {d.epochs} (resume: as planned)",
    )  # fmt: skip
    tr.add_argument(
        DOORS["train_batch_size"].cli, type=auto_or_int, default=d.train_batch_size,
        metavar="auto|N", help=f"train batch per device, "
        f"{DOORS['train_batch_size'].range.words()}; auto (default): sized on the GPU from its "
        f"free memory, {DEFAULT_BATCH_SIZE} on the CPU",
    )  # fmt: skip
    tr.add_argument(
        DOORS["num_workers"].cli, type=auto_or_int, default=d.num_workers, metavar="auto|N",
        help=f"data-loader workers, {DOORS['num_workers'].range.words()}; auto (default): from "
        f"the cores per GPU, {DEFAULT_WORKERS} on the CPU",
    )  # fmt: skip
    tr.add_argument(
        DOORS["input_size"].cli, type=input_size, default=d.input_size,
        metavar="PX|LONGxSHORT|model",
        help="input size: images are resized, keeping their aspect ratio, so that the longer edge "
        "fits LONG and the shorter SHORT (mmdet's Resize scale), each "
        f"{DOORS['input_size'].range.words('px')}; one number: a square; model: the zoo model's "
        f"own, e.g. 1333x800 (default {d.input_size[0]}x{d.input_size[1]})",
    )  # fmt: skip
    tr.add_argument(
        DOORS["augmentation_pipeline"].cli,
        help="a custom augmentation pipeline: a YAML or JSON list of mmdet transforms, applied "
        "after resizing (implies --augmentation custom; see configs/augmentations.yaml)",
    )
    _add_devices_and_weights(tr)


def _add_devices_and_weights(tr: argparse.ArgumentParser) -> None:
    """Where a run trains and what it starts from (the ``TrainParams`` options with a parser of
    their own), and what it exports."""
    from src.config.doors import DOORS

    tr.add_argument(
        DOORS["nproc"].cli, type=int, default=None,
        help=f"train in N processes with --device cpu (DDP over gloo; tests, CPU machines), "
        f"{DOORS['nproc'].range.words()}; with --resume: continue in N",
    )  # fmt: skip
    tr.add_argument(
        "--config", help="an edited config file: trains as written, plus dataset, classes, work dir"
    )
    tr.add_argument(
        DOORS["weights"].cli, action="store_true", help="random init, no pretrained weights"
    )
    tr.add_argument(DOORS["weights_path"].cli, help="custom checkpoint to start from")
    tr.add_argument(
        DOORS["gpus"].cli, type=gpu_list, default=None, metavar="0,1",
        help="train on these GPUs, one process each (DDP; the batch size is per GPU); with "
        "--resume: continue on these (not bit-identical when their number changes)",
    )  # fmt: skip
    tr.add_argument(
        DOORS["export"].cli, type=export_formats, default=(), metavar=export_metavar(),
        help=DOORS["export"].help,
    )  # fmt: skip
    tr.add_argument(
        "--drop-empty", action="store_true", help="drop training images without objects"
    )


def _add_run_options(tr: argparse.ArgumentParser) -> None:
    """``train``'s options that are not a run's settings: where runs and Team Files are, the
    dry run, resume and from-run, verbosity."""
    tr.add_argument(
        "--team-files", default=DEFAULT_TEAM_FILES, help="local folder standing in for Team Files"
    )
    tr.add_argument(
        "--team-id", type=int, help="use this team's Team Files (SERVER_ADDRESS, API_TOKEN)"
    )
    tr.add_argument("--app-data", help=APP_DATA_HELP)
    tr.add_argument("--run-id", help="name of the run (default: a timestamp)")
    tr.add_argument("--no-cache", action="store_true", help="do not cache parsed annotations")
    tr.add_argument(
        "--dry-run", action="store_true", help="build everything, print a summary, do not train"
    )
    tr.add_argument("--dump-config", help="write the composed config to this file")
    tr.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="RUN_ID|CHECKPOINT",
        help="continue a run from app data (default: the newest)",
    )
    tr.add_argument(
        "--from-run", metavar="RUN_ID|FOLDER",
        help="a new run with the settings of an earlier one: the id of a run uploaded by this app "
        "(to --team-files or --team-id), or its folder (with app_state.json); the options given "
        "here override them",
    )  # fmt: skip
    tr.add_argument(
        "--from-run-mode", choices=("new", "continue"), default="new",
        help="with --from-run: new (default) trains from the weights that run started from; "
        "continue, from that run's best checkpoint (a new run, unlike --resume)",
    )  # fmt: skip
    tr.add_argument(
        "--max-nonfinite", type=int, default=5, help="NaN/Inf losses in a row that end the run"
    )
    tr.add_argument(
        "-v", "--verbose", action="store_true",
        help="also print the libraries' output (mmengine's log, pycocotools, warnings; always in "
        "the run's log file) and tracebacks",
    )  # fmt: skip


def train_params(args: argparse.Namespace):
    """The command line's ``TrainParams``: the generated options by their field names, the
    hand-written ones (``src.config.doors``: generated=False) converted here."""
    from src.config.params import TrainParams

    weights = "scratch" if args.from_scratch else "custom" if args.weights else "pretrained"
    values = {option.dest: getattr(args, option.dest) for option in generated_cli_options()}
    if args.augmentation_file:
        values["augmentation"] = "custom"
    return TrainParams(
        **values,
        epochs=TrainParams.epochs if args.epochs is None else args.epochs,  # 0 is refused
        train_batch_size=args.batch_size,
        num_workers=args.workers,
        input_size=args.input_size,  # (longer, shorter) edge
        augmentation_pipeline=(
            Path(args.augmentation_file).read_text(encoding="utf-8")
            if args.augmentation_file
            else ""
        ),
        weights=weights,
        weights_path=args.weights,
        gpus=args.gpus or (),
        nproc=1 if args.nproc is None else args.nproc,
        export=args.export,
        ignore=tuple(names(args.ignore, "--ignore") or ()),
    )


# What a resume may change (RESUME_CHANGES, the API's too) and the options that are not the
# run's settings; every other option is the run's own (its config.py).
_RESUME_OPTIONS = {
    *RESUME_CHANGES, "resume", "argv", "evaluate", "team_files", "team_id", "app_data",
    "no_cache", "dry_run", "dump_config", "max_nonfinite", "verbose",
}  # fmt: skip


_RESUME_FLAGS = (
    ", ".join(f"--{name}" for name in RESUME_CHANGES[:-1]) + f" and --{RESUME_CHANGES[-1]}"
)


def contradiction(args: argparse.Namespace) -> str | None:
    """Two options that cannot both hold, named in one line (None: none)."""
    if args.from_scratch and args.weights:
        return (
            "--from-scratch and --weights contradict: train from scratch, or from the weights "
            "given (drop one)"
        )
    if args.from_run is not None and args.resume is not None:
        return (
            "--from-run and --resume contradict: --from-run starts a new run from a run's "
            "settings, --resume continues that run itself (drop one)"
        )
    if args.from_run_mode != "new" and args.from_run is None:
        return "--from-run-mode needs --from-run: the run whose settings to start from"
    if problem := split_contradiction(args):
        return problem
    if args.resume is None:
        return None
    parser = args.train_parser  # (set by train.add_parser) its defaults: what was not given
    changed = [
        "--" + name.replace("_", "-")
        for name, value in vars(args).items()
        if name not in _RESUME_OPTIONS and name != "command" and value != parser.get_default(name)
    ]
    if changed:
        return (
            f"--resume and {', '.join(changed)} contradict: a resumed run keeps its own "
            f"settings; only {_RESUME_FLAGS} can change (start a new run to change the others)"
        )
    return None


# hand-written options and the TrainParams fields they set (the generated ones: their own name)
_FIELDS_OF = {"batch_size": ("train_batch_size",), "workers": ("num_workers",),
              "augmentation_file": ("augmentation", "augmentation_pipeline"),
              "from_scratch": ("weights",), "weights": ("weights", "weights_path")}  # fmt: skip


def _typed(args: argparse.Namespace) -> set[str]:
    """The destinations of the options typed on the command line (not left at their default):
    ``train``'s tokens parsed again with every default suppressed."""
    parser, saved = args.train_parser, {}
    try:
        for action in parser._actions:
            saved[action] = action.default
            action.default = argparse.SUPPRESS
        tokens = args.argv[args.argv.index("train") + 1 :]
        return set(vars(parser.parse_args(tokens)))
    finally:
        for action, default in saved.items():
            action.default = default


def given_settings(args: argparse.Namespace) -> dict:
    """The options the command line gave (not their defaults), as an API body's fields: what
    overrides a run's settings under ``--from-run``."""
    from dataclasses import fields

    from src.config.doors import DOORS
    from src.config.params import TrainParams, jsonable

    given = _typed(args)
    params = train_params(args)
    known = {f.name for f in fields(TrainParams)}
    changed = {name for dest in given for name in _FIELDS_OF.get(dest, (dest,)) if name in known}
    body: dict = {
        "hyperparameters": {
            name: jsonable(getattr(params, name)) for name in changed if DOORS[name].api
        }
    }
    if "model" in given:
        body["model"] = args.model
    if "config" in given:
        body["config"] = Path(args.config).read_text(encoding="utf-8")
    if "classes" in given:
        body["classes"] = names(args.classes, "--classes")
    if "task" in given:
        body["task"] = args.task
    if "drop_empty" in given:
        body["keep_empty_images"] = False
    if "run_id" in given:
        body["run_id"] = args.run_id
    return body
