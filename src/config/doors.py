"""How each ``TrainParams`` field reaches a user, declared once: its command-line flag, its widget
in the app, whether the HTTP API takes it, and the words that explain it.

The three doors come from this table or are checked against it:

- the CLI: the options of plain fields (a number, a string, a choice, a switch) are generated
  from it (flag, type, default, choices, help with the allowed range); the few that parse more
  (``auto|N``, ``LONGxSHORT``, a GPU list, a file) are written in ``src/cli/train_options.py``
  under the flag named here;
- the HTTP API: ``hyperparameters`` takes every field with ``api`` set, by its name, checked against
  its type (``src.app.requests``);
- the app: the Hyperparameters step (``src/ui/hyperparameters.py``) has the widget named here and
  reads it into ``params()``.

``tests/config/test_doors.py`` fails when a field has no declaration, when a declared flag is not
on the parser, when a declared widget is missing or not read, or when the API refuses a field. A
new setting is a ``TrainParams`` field and its ``Door`` here.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from src.config.params import (
    AUGMENTATIONS,
    INT_RANGES,
    OPTIMIZERS,
    OPTIONAL_INT_RANGES,
    SCHEDULERS,
    SLICE_PARTIAL,
    WEIGHTS_MODES,
    TrainParams,
)
from src.core.tasks import TASKS


@dataclass(frozen=True)
class Door:
    """One setting's doors.

    Args:
        help: what it does, in one line (the CLI's help; the API's and the docs' wording).
        cli: its flag; None: not on the command line.
        ui: the Hyperparameters step's widget attribute; ``"<step>"`` for a setting another step
            owns (the model, the classes); None: not in the app.
        api: the API's ``hyperparameters`` takes it.
        generated: the CLI option is made from this declaration (False: written in src/cli/,
            because it parses more than a plain value).
        unit: what its numbers count (shown in the help).
    """

    help: str
    cli: str | None
    ui: str | None
    api: bool = True
    generated: bool = True
    unit: str = ""


_STEP = "<step>"  # owned by another step of the app (Model, Classes, Augmentations)

DOORS: dict[str, Door] = {
    "task": Door("object detection or instance segmentation", "--task", _STEP, api=False),
    "classes": Door("the classes to train on (default: all)", "--classes", _STEP, api=False,
                    generated=False),
    "epochs": Door("epochs to train (a resume: as planned)", "--epochs", "epochs",
                   generated=False),
    "train_batch_size": Door("train batch per device; auto: sized on the GPU from its free memory",
                             "--batch-size", "train_batch", generated=False),
    "val_batch_size": Door("validation batch per device", "--val-batch-size", "val_batch"),
    "num_workers": Door("data-loader workers; auto: from the cores per GPU", "--workers",
                        "workers", generated=False),
    "input_size": Door("the (longer, shorter) edge images are resized to, keeping their aspect "
                       "ratio", "--input-size", "input_size", generated=False, unit="px"),
    "augmentation": Door("the augmentation preset", "--augmentation", _STEP),
    "augmentation_pipeline": Door("a custom pipeline of mmdet transforms (YAML or JSON)",
                                  "--augmentation-file", _STEP, generated=False),
    "optimizer": Door("the optimizer", "--optimizer", "optimizer"),
    "lr": Door("the learning rate", "--lr", "lr"),
    "weight_decay": Door("weight decay", "--weight-decay", "weight_decay"),
    "momentum": Door("SGD momentum", "--momentum", "momentum"),
    "nesterov": Door("Nesterov momentum (SGD)", "--nesterov", "nesterov"),
    "scheduler": Door("the learning-rate schedule", "--scheduler", "scheduler"),
    "step_epochs": Door("the step schedule's milestones (default: 2/3 and 8/9 of the epochs)",
                        None, None, unit="epochs"),
    "restart_epochs": Door("cosine_restarts: epochs per cycle (0: a third of the run)",
                           "--restart-epochs", "restart_epochs", unit="epochs"),
    "warmup_iters": Door("linear warmup", "--warmup-iters", "warmup", unit="iterations"),
    "warmup_ratio": Door("the warmup's starting fraction of the learning rate", "--warmup-ratio",
                         None),
    "grad_clip": Door("clip gradients to this L2 norm (default: off)", "--grad-clip",
                      "grad_clip"),
    "checkpoint_interval": Door("save a checkpoint every N epochs", "--checkpoint-interval",
                                "ckpt_interval", unit="epochs"),
    "keep_checkpoints": Door("checkpoints kept (the oldest go)", "--keep-checkpoints", "keep"),
    "save_best": Door("keep the best epoch's checkpoint", "--save-best", "save_best"),
    "save_last": Door("keep the last epoch's checkpoint", "--save-last", "save_last"),
    "val_interval": Door("validate every N epochs", "--val-interval", "val_interval",
                         unit="epochs"),
    "log_interval": Door("log losses every N iterations", "--log-interval", None,
                         unit="iterations"),
    "seed": Door("the random seed", "--seed", "seed"),
    "amp": Door("mixed precision (default: on for CUDA, off on the CPU)", "--amp", "amp"),
    "weights": Door("start from pretrained, random (scratch) or custom weights",
                    "--from-scratch", _STEP, generated=False),
    "weights_path": Door("the custom checkpoint to start from", "--weights", _STEP,
                         generated=False),
    "device": Door("cpu or cuda:N", "--device", "device"),
    "gpus": Door("train on these GPUs, one process each (DDP; the batch is per GPU)", "--gpus",
                 "gpus", generated=False),
    "nproc": Door("train in N CPU processes (DDP over gloo)", "--nproc", None, generated=False),
    "evaluate": Door("evaluate the best checkpoint after a finished run (Model Benchmark "
                     "metrics, report)", "--evaluate", "evaluate"),
    "early_stopping_patience": Door("stop after N validations without improvement of the "
                                    "primary mAP (0: off)", "--early-stopping-patience",
                                    "patience"),
    "early_stopping_min_delta": Door("the smallest mAP gain that counts as an improvement",
                                     "--early-stopping-min-delta", "min_delta"),
    "frozen_stages": Door("backbone stages kept frozen (-1: none; default: the model's own)",
                          "--frozen-stages", "frozen"),
    "max_per_img": Door("detections kept per image at validation (default: the model's)",
                        "--max-per-img", "max_dets"),
    "score_thr": Door("their minimum score at validation (default: the model's)", "--score-thr",
                      "score_thr"),
    "auto_scale_lr": Door("scale the learning rate by batch size / the zoo config's base batch "
                          "size (mmengine)", "--auto-scale-lr", "auto_scale"),
    "ignore": Door("class or tag names whose objects are ignore regions (crowds, areas that "
                   "must not count): not trained as objects, never a miss or a false positive",
                   "--ignore", _STEP, generated=False),
    "speed_test": Door("with the evaluation, time the best checkpoint at batch 1, 8 and 16 (the "
                       "platform's Model Benchmark report shows it)", "--speed-test",
                       "speed_test"),
    "class_balance": Door("repeat the images of rare classes (mmdet's ClassBalancedDataset): a "
                          "class in fewer than this fraction of the images gets its images "
                          "repeated; 0: off", "--class-balance", "class_balance"),
    "slice_size": Door("sliced training and evaluation: cut the images into tiles of this "
                       "size, for large images with small objects (0: off)", "--slice-size",
                       "slice_size", unit="px"),
    "slice_overlap": Door("how much neighbouring tiles overlap, a fraction of the tile",
                          "--slice-overlap", "slice_overlap"),
    "slice_full_image": Door("with slicing, train and validate on each whole image too "
                             "(downscaled)", "--slice-full-image", "slice_full_image"),
    "slice_empty": Door("with slicing, the fraction of tiles without objects kept for training",
                        "--slice-empty", "slice_empty"),
    "slice_min_visible": Door("with slicing, an object cut so that less than this fraction of it "
                              "is in a tile is not trained as an object there",
                              "--slice-min-visible", "slice_min_visible"),
    "slice_partial": Door("with slicing, what such a cut object becomes: an ignore region, or "
                          "nothing (dropped)", "--slice-partial", "slice_partial"),
    "slice_max_tiles": Door("with slicing, refuse a split that would make more tiles than "
                            "this (their count and bytes are estimated first; the dry run shows "
                            "them)", "--slice-max-tiles", None, unit="tiles"),
    "slice_max_gb": Door("with slicing, refuse a split whose tile files could take more than this "
                         "in the cache", "--slice-max-gb", None, unit="GB"),
    "export": Door("after a finished run, export the best checkpoint: onnx (ONNX Runtime), "
                   "tensorrt (an engine built from the ONNX file; needs a GPU with TensorRT)",
                   "--export", "export", generated=False),
}  # fmt: skip

CHOICES: dict[str, tuple[str, ...]] = {
    "task": TASKS,
    "augmentation": AUGMENTATIONS,
    "optimizer": OPTIMIZERS,
    "scheduler": SCHEDULERS,
    "weights": WEIGHTS_MODES,
    "slice_partial": SLICE_PARTIAL,
}


def allowed(name: str) -> str:
    """The allowed values of a field, in words ("" when any value of its type is)."""
    if name in CHOICES:
        return "one of " + ", ".join(CHOICES[name])
    if name in INT_RANGES:
        low, high = INT_RANGES[name]
        return f"{low} to {high}"
    if name in OPTIONAL_INT_RANGES:
        low, high = OPTIONAL_INT_RANGES[name]
        return f"{low} to {high}, or unset"
    return ""


@dataclass(frozen=True)
class CliOption:
    """An ``argparse`` option made from a declaration."""

    flag: str
    dest: str
    kwargs: dict[str, Any]


def generated_cli_options() -> list[CliOption]:
    """The CLI options of the plain fields, in ``TrainParams``' order: type and default from the
    field, choices and range from the validation tables, help from the declaration. A switch
    (bool) is ``--x/--no-x``."""
    import argparse

    hints = typing.get_type_hints(TrainParams)
    defaults = TrainParams()
    options = []
    for field in dataclasses.fields(TrainParams):
        door = DOORS[field.name]
        if door.cli is None or not door.generated:
            continue
        kind = _plain_type(hints[field.name])
        default = getattr(defaults, field.name)
        words = [door.unit] if door.unit and door.unit not in door.help else []
        if allowed(field.name) and field.name not in CHOICES:
            words.append(allowed(field.name))
        if default is not None:
            words.append(f"default {default}")
        help_text = door.help + (f" ({'; '.join(words)})" if words else "")
        kwargs: dict[str, Any] = {"default": default, "help": help_text}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            if field.name in CHOICES:
                kwargs["choices"] = CHOICES[field.name]
        options.append(CliOption(door.cli, field.name, kwargs))
    return options


def _plain_type(hint: Any) -> type:
    """int, float, str or bool of a field's type (``X | None`` is X)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    kind = args[0] if args else hint
    if kind not in (int, float, str, bool):
        raise TypeError(f"{hint} is not a plain type: declare the field with generated=False")
    return kind
