"""Each ``TrainParams`` field declared once: how it reaches a user (its command-line flag, its
widget in the app, whether the HTTP API takes it, the words that explain it) and the values it
may take (its choices, or its range).

The three doors and the checks come from this table or are checked against it:

- the checks: ``TrainParams.validate`` (the dry run's, Compose's, the API's before it answers)
  refuses a value outside its setting's ``Range`` or ``choices`` here, in the words of
  :meth:`Range.words`; no range is written anywhere else;
- the CLI: the options of plain fields (a number, a string, a choice, a switch) are generated
  from it (flag, type, default, choices, help with the allowed range:
  ``src.cli.train_options.generated_cli_options``); the few that parse more (``auto|N``,
  ``LONGxSHORT``, a GPU list, a file) are written in ``src/cli/train_options.py`` under the flag
  named here;
- the HTTP API: ``hyperparameters`` takes every field with ``api`` set, by its name, checked against
  its type (``src.setup.requests``) and then its range;
- the app: the Hyperparameters step (``src/ui/hyperparameters.py``) has the widget named here,
  written there or, where it is not, made from this declaration, and reads it into ``params()``.

``tests/config/test_doors.py`` fails when a field has no declaration, when a declared flag is not
on the parser, when a declared widget is missing or not read, when the API refuses a field, or
when a range is checked anywhere but here. A new setting is a ``TrainParams`` field and its
``Door`` here. Imports nothing of ``src.config`` (``params`` reads this table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from src.core.export_formats import export_help
from src.core.tasks import TASKS

OPTIMIZERS = ("AdamW", "Adam", "SGD")
SCHEDULERS = ("cosine", "step", "linear", "constant", "poly", "onecycle", "cosine_restarts")
CUSTOM_AUGMENTATION = "custom"  # the user's own pipeline (src.config.augmentations)
AUGMENTATIONS = ("none", "light", "medium", "heavy", CUSTOM_AUGMENTATION)
WEIGHTS_MODES = ("pretrained", "scratch", "custom")
SLICE_PARTIAL = ("ignore", "drop")  # what becomes of an object cut below the visible fraction


def _number(value: float) -> str:
    """A bound as people write it: 100000, 0.9, 2147483647."""
    return str(value) if isinstance(value, int) else f"{value:g}"


@dataclass(frozen=True)
class Range:
    """The numbers a setting takes, finite ones only: from ``low`` to ``high``.

    Args:
        low: the smallest value (-inf: no lower bound).
        high: the largest value (inf: no upper bound).
        low_open: ``low`` itself is refused (the learning rate: above 0).
        high_open: ``high`` itself is refused (momentum: below 1).
        off: the value that turns the setting off: allowed besides when outside the bounds
            (``slice_size`` 0), named "(off)" when it is ``low`` (``class_balance`` 0).
    """

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    off: float | None = None

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"Range: low {self.low} must be below high {self.high}")

    def within(self, value: object) -> bool:
        """``value`` is a finite number between the bounds (``off`` aside)."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __contains__(self, value: object) -> bool:
        """``value`` is allowed: between the bounds, or the value that turns it off."""
        if self.off is not None and not isinstance(value, bool) and value == self.off:
            return True
        return self.within(value)

    def words(self, unit: str = "", off: bool = True) -> str:
        """The range in words, as problems and the CLI's help say it ("from 1 to 100000", "above
        0 and at most 1", "from 0 to 1, 1 excluded", "0 or more"); ``off``: name the value that
        turns it off."""
        u, low, high = f" {unit}" if unit else "", _number(self.low), _number(self.high)
        named_off = off and self.off is not None
        if self.high == math.inf:
            text = f"above {low}{u}" if self.low_open else f"{low} or more{u}"
        elif self.low_open:
            text = f"above {low} and at most {high}{u}"
        else:
            start = f"{low} (off)" if named_off and self.off == self.low else low
            text = f"from {start} to {high}{u}"
        if self.high_open and self.high != math.inf:
            text += f", {high} excluded"
        if named_off and self.off != self.low and not self.within(self.off):
            text += f", or {_number(self.off)} (off)"
        return text


@dataclass(frozen=True)
class Door:
    """One setting's doors and the values it takes.

    Args:
        help: what it does, in one line (the CLI's help; the API's and the docs' wording).
        cli: its flag; None: not on the command line.
        ui: the Hyperparameters step's widget attribute; ``"<step>"`` for a setting another step
            owns (the model, the classes); None: not in the app.
        api: the API's ``hyperparameters`` takes it.
        generated: the CLI option is made from this declaration (False: written in src/cli/,
            because it parses more than a plain value).
        unit: what its numbers count (shown in the help).
        range: the numbers it takes (a tuple's: each of them); None: any of its type.
        choices: the values it takes (a string setting); empty: any.
        called: what a problem with its value calls it, in words, with its name and unit
            ("the tile size (slice_size) must be from 32 to 16384 px"); empty: its name alone.
    """

    help: str
    cli: str | None
    ui: str | None
    api: bool = True
    generated: bool = True
    unit: str = ""
    range: Range | None = None
    choices: tuple[str, ...] = ()
    called: str = ""


_STEP = "<step>"  # owned by another step of the app (Model, Classes, Augmentations)

# The upper bounds of counts stop a typo such as a batch of 20000 from exhausting memory on the
# first batch, after the run has started.
_EPOCHS = Range(1, 100_000)
_FRACTION = Range(0.0, 1.0)
# The random seed: mmengine seeds numpy with it, and each data-loader worker with seed + rank x
# workers + the worker's id (mmengine's worker_init_fn), which numpy refuses past 2**32 - 1: up
# to 2**31 - 1 that sum stays in range for every worker count and rank allowed here.
_SEED = Range(0, 2**31 - 1)
# An image's edges in px: past 4096 one image alone is ~200 MB as a float tensor.
_INPUT_EDGE = Range(32, 4096)
# Sliced training and prediction: the tile's side in px (0: off), and the neighbouring tiles'
# overlap as a fraction of the tile (at 1 a tile would never move on).
_TILE = Range(32, 16384, off=0)
_TILE_OVERLAP = Range(0.0, 0.9)

DOORS: dict[str, Door] = {
    "task": Door("object detection or instance segmentation", "--task", _STEP, api=False,
                 choices=TASKS),
    "classes": Door("the classes to train on (default: all)", "--classes", _STEP, api=False,
                    generated=False),
    "epochs": Door("epochs to train (a resume: as planned)", "--epochs", "epochs",
                   generated=False, range=_EPOCHS),
    "train_batch_size": Door("train batch per device; auto: sized on the GPU from its free memory",
                             "--batch-size", "train_batch", generated=False,
                             range=Range(1, 1024)),
    "val_batch_size": Door("validation batch per device", "--val-batch-size", "val_batch",
                           range=Range(1, 1024)),
    "num_workers": Door("data-loader workers; auto: from the cores per GPU", "--workers",
                        "workers", generated=False, range=Range(0, 64)),
    "input_size": Door("the (longer, shorter) edge images are resized to, keeping their aspect "
                       "ratio", "--input-size", "input_size", generated=False, unit="px",
                       range=_INPUT_EDGE),
    "augmentation": Door("the augmentation preset", "--augmentation", _STEP,
                         choices=AUGMENTATIONS),
    "augmentation_pipeline": Door("a custom pipeline of mmdet transforms (YAML or JSON)",
                                  "--augmentation-file", _STEP, generated=False),
    "optimizer": Door("the optimizer", "--optimizer", "optimizer", choices=OPTIMIZERS),
    "lr": Door("the learning rate", "--lr", "lr", range=Range(0.0, low_open=True),
               called="the learning rate"),
    "weight_decay": Door("weight decay", "--weight-decay", "weight_decay", range=Range(0.0),
                         called="weight decay"),
    "momentum": Door("SGD momentum", "--momentum", "momentum",
                     range=Range(0.0, 1.0, high_open=True)),
    "nesterov": Door("Nesterov momentum (SGD)", "--nesterov", "nesterov"),
    "scheduler": Door("the learning-rate schedule", "--scheduler", "scheduler",
                      choices=SCHEDULERS),
    "step_epochs": Door("the step schedule's milestones (default: 2/3 and 8/9 of the epochs)",
                        None, None, unit="epochs"),
    "restart_epochs": Door("cosine_restarts: epochs per cycle (0: a third of the run)",
                           "--restart-epochs", "restart_epochs", unit="epochs",
                           range=Range(0, 100_000)),
    "warmup_iters": Door("linear warmup", "--warmup-iters", "warmup", unit="iterations",
                         range=Range(0, 1_000_000)),
    # mmengine's LinearLR divides by the warmup's starting fraction
    "warmup_ratio": Door("the warmup's starting fraction of the learning rate", "--warmup-ratio",
                         None, range=Range(0.0, 1.0, low_open=True),
                         called="the warmup's starting fraction of the learning rate"),
    "grad_clip": Door("clip gradients to this L2 norm (default: off)", "--grad-clip",
                      "grad_clip", range=Range(0.0, low_open=True),
                      called="the gradient clipping norm"),
    "checkpoint_interval": Door("save a checkpoint every N epochs", "--checkpoint-interval",
                                "ckpt_interval", unit="epochs", range=_EPOCHS),
    "keep_checkpoints": Door("checkpoints kept (the oldest go)", "--keep-checkpoints", "keep",
                             range=Range(1, 10_000)),
    "save_best": Door("keep the best epoch's checkpoint", "--save-best", "save_best"),
    "save_last": Door("keep the last epoch's checkpoint", "--save-last", "save_last"),
    "val_interval": Door("validate every N epochs", "--val-interval", "val_interval",
                         unit="epochs", range=_EPOCHS),
    "log_interval": Door("log losses every N iterations", "--log-interval", None,
                         unit="iterations", range=Range(1, 100_000)),
    "seed": Door("the random seed", "--seed", "seed", range=_SEED),
    "amp": Door("mixed precision (default: on for CUDA, off on the CPU)", "--amp", "amp"),
    "weights": Door("start from pretrained, random (scratch) or custom weights",
                    "--from-scratch", _STEP, generated=False, choices=WEIGHTS_MODES),
    "weights_path": Door("the custom checkpoint to start from", "--weights", _STEP,
                         generated=False),
    "device": Door("cpu or cuda:N", "--device", "device"),
    "gpus": Door("train on these GPUs, one process each (DDP; the batch is per GPU)", "--gpus",
                 "gpus", generated=False),
    "nproc": Door("train in N CPU processes (DDP over gloo)", "--nproc", None, generated=False,
                  range=Range(1, 64)),
    "evaluate": Door("evaluate the best checkpoint after a finished run (Model Benchmark "
                     "metrics, report)", "--evaluate", "evaluate"),
    "early_stopping_patience": Door("stop after N validations without improvement of the "
                                    "primary mAP (0: off)", "--early-stopping-patience",
                                    "patience", range=Range(0, 1000)),
    "early_stopping_min_delta": Door("the smallest mAP gain that counts as an improvement",
                                     "--early-stopping-min-delta", "min_delta", range=_FRACTION),
    "frozen_stages": Door("backbone stages kept frozen (-1: none; default: the model's own)",
                          "--frozen-stages", "frozen", range=Range(-1, 4)),
    "max_per_img": Door("detections kept per image at validation (default: the model's)",
                        "--max-per-img", "max_dets", range=Range(1, 10_000)),
    "score_thr": Door("their minimum score at validation (default: the model's)", "--score-thr",
                      "score_thr", range=Range(0.0, 1.0, high_open=True)),
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
                          "repeated; 0: off", "--class-balance", "class_balance",
                          range=Range(0.0, 1.0, off=0.0)),
    "slice_size": Door("sliced training and evaluation: cut the images into tiles of this "
                       "size, for large images with small objects (0: off)", "--slice-size",
                       "slice_size", unit="px", range=_TILE, called="the tile size"),
    "slice_overlap": Door("how much neighbouring tiles overlap, a fraction of the tile",
                          "--slice-overlap", "slice_overlap", range=_TILE_OVERLAP,
                          called="the tile overlap"),
    "slice_full_image": Door("with slicing, train and validate on each whole image too "
                             "(downscaled)", "--slice-full-image", "slice_full_image"),
    "slice_empty": Door("with slicing, the fraction of tiles without objects kept for training",
                        "--slice-empty", "slice_empty", range=_FRACTION,
                        called="the fraction of empty tiles kept"),
    "slice_min_visible": Door("with slicing, an object cut so that less than this fraction of it "
                              "is in a tile is not trained as an object there",
                              "--slice-min-visible", "slice_min_visible",
                              range=Range(0.0, 1.0, low_open=True),
                              called="the visible fraction under which a cut object is not "
                              "trained as one"),
    "slice_partial": Door("with slicing, what such a cut object becomes: an ignore region, or "
                          "nothing (dropped)", "--slice-partial", "slice_partial",
                          choices=SLICE_PARTIAL),
    "slice_max_tiles": Door("with slicing, refuse a split that would make more tiles than "
                            "this (their count and bytes are estimated first; the dry run shows "
                            "them)", "--slice-max-tiles", None, unit="tiles", range=Range(1),
                            called="the most tiles a split may make"),
    "slice_max_gb": Door("with slicing, refuse a split whose tile files could take more than this "
                         "in the cache", "--slice-max-gb", None, unit="GB",
                         range=Range(0.0, low_open=True),
                         called="the most GB of tile files a split may make"),
    "export": Door("after a finished run, export the best checkpoint: " + export_help(),
                   "--export", "export", generated=False),
}  # fmt: skip

# the settings with a fixed set of values, and those values
CHOICES: dict[str, tuple[str, ...]] = {n: d.choices for n, d in DOORS.items() if d.choices}
