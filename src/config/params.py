"""What a user sets for a training run, and the check of every value against its declaration.

``TrainParams`` is the one description of a run's settings shared by the UI, the HTTP API and
the CLI (their defaults come from here; each setting's choices and range from its declaration in
``src.config.doors``, which ``validate`` reads); ``DatasetSpec`` and ``RunSpec`` say where the
data is and where the run writes. Plain dataclasses: nothing here imports mmengine or mmdet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.config.doors import (  # the choices are declared there; their readers import them here
    AUGMENTATIONS,
    CUSTOM_AUGMENTATION,
    DOORS,
    OPTIMIZERS,
    SCHEDULERS,
    SLICE_PARTIAL,
    WEIGHTS_MODES,
)
from src.config.pipeline import parse_pipeline
from src.core.errors import ConfigError
from src.core.export_formats import build_order, export_names
from src.core.tasks import DETECTION, TASKS

CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"

# What a resume may change (the CLI's options, the API's hyperparameters); every other setting is
# the run's own, in its config.py (src.setup.prepare.prepare_resume)
RESUME_CHANGES = ("epochs", "gpus", "nproc", "device")

# What a run has for an unset ("auto") batch size and worker count until the session sizes it
# on its device (src.engine.autosize): the CPU's values, and what the Editor shows.
DEFAULT_BATCH_SIZE = 2
DEFAULT_WORKERS = 2
AUTO_SIZED = ("train_batch_size", "num_workers")  # None: the app chooses on the run's device

# an image's edges in px (src.export.formats checks an export's input size against them)
MIN_INPUT, MAX_INPUT = DOORS["input_size"].range.low, DOORS["input_size"].range.high
# the slicing dict's keys (src.data.tiles.Slicing) -> the setting each comes from: checked by
# slicing_problems, only when slicing is on
SLICING = {"size": "slice_size", "overlap": "slice_overlap", "empty": "slice_empty",
           "min_visible": "slice_min_visible", "max_tiles": "slice_max_tiles",
           "max_gb": "slice_max_gb"}  # fmt: skip


def _ranged() -> list[str]:
    """The settings whose range TrainParams._range_problems checks, read from the declarations
    when it checks (slicing's: slicing_problems; the input size, a pair: _optimization_problems)."""
    return [
        name
        for name, door in DOORS.items()
        if door.range is not None and name != "input_size" and name not in SLICING.values()
    ]


def range_problem(name: str, value: Any) -> str | None:
    """Why ``value`` is outside the range ``src.config.doors`` declares for the setting ``name``
    (None: inside; None too for an unset value, the model's own or auto)."""
    if value is None or value in DOORS[name].range:
        return None
    return _outside(name, value)


def _outside(name: str, value: Any, off: bool = True) -> str:
    """The problem of a value outside the setting's range, in the declaration's words: its name
    (a worded one with its unit), the range, and whether it may be unset."""
    door = DOORS[name]
    subject, unit = (f"{door.called} ({name})", door.unit) if door.called else (name, "")
    unset = " (or unset)" if getattr(TrainParams, name) is None and name not in AUTO_SIZED else ""
    return f"{subject} must be {door.range.words(unit, off)}{unset}, got {value}"


@dataclass
class TrainParams:
    """Everything the user chooses besides the model and the data (UI, CLI and API alike)."""

    task: str = DETECTION
    classes: tuple[str, ...] = ()
    epochs: int = 20
    train_batch_size: int | None = None  # None: auto, sized on the run's device
    val_batch_size: int = 1
    num_workers: int | None = None  # None: auto, from the cores per GPU
    input_size: tuple[int, int] = (640, 640)  # (longer, shorter) edge: mmdet's Resize scale
    augmentation: str = "light"
    # "custom" augmentation: the transforms as YAML or JSON text (src.config.augmentations)
    augmentation_pipeline: str = ""
    optimizer: str = "AdamW"
    lr: float = 1e-4
    weight_decay: float = 1e-4
    momentum: float = 0.9  # SGD only
    nesterov: bool = False  # SGD only
    scheduler: str = "cosine"
    step_epochs: tuple[int, ...] = ()  # "step" scheduler milestones; default: 2/3 and 8/9 of epochs
    restart_epochs: int = 0  # "cosine_restarts" cycle length in epochs; 0: a third of the run
    warmup_iters: int = 0
    warmup_ratio: float = 0.001
    grad_clip: float | None = None  # max L2 norm of gradients
    checkpoint_interval: int = 1
    keep_checkpoints: int = 2
    save_best: bool = True
    save_last: bool = True
    val_interval: int = 1
    log_interval: int = 10
    seed: int = 0
    amp: bool | None = None  # mixed precision; None: auto, on for CUDA
    weights: str = "pretrained"  # one of WEIGHTS_MODES
    weights_path: str | None = None  # custom weights
    device: str = "cpu"
    # several devices: DDP in one process per GPU (these GPU indices), or nproc CPU processes
    gpus: tuple[int, ...] = ()
    nproc: int = 1
    # the Model Benchmark evaluation of the best checkpoint after a finished run
    # (src.evaluation.evaluate)
    evaluate: bool = True
    # stop when the primary metric has not improved by min_delta for this many validations (0: off)
    early_stopping_patience: int = 0
    early_stopping_min_delta: float = 0.0
    frozen_stages: int | None = None  # backbone stages kept frozen; None: the model's own setting
    max_per_img: int | None = None  # detections kept per image at validation; None: the model's
    score_thr: float | None = None  # their minimum score at validation; None: the model's
    auto_scale_lr: bool = False  # scale lr by (batch size / the zoo config's base batch size)
    # after a finished run, the best checkpoint exported to these (src.core.export_formats); a
    # format built from another one implies it (TensorRT: ONNX)
    export: tuple[str, ...] = ()
    # repeat-factor sampling of the images of rare classes (mmdet's ClassBalancedDataset): its
    # oversample_thr, the image frequency under which a class's images repeat; 0: off
    class_balance: float = 0.0
    # with the evaluation: the best checkpoint timed at batch 1, 8 and 16 (the platform's report)
    speed_test: bool = False
    # class or object-tag names whose objects are regions that must not count (crowds, "ignore"
    # areas): mmdet's ignore_flag / COCO's iscrowd, never trained as objects, never a miss or a
    # false positive in validation and the evaluation (src.data.reader)
    ignore: tuple[str, ...] = ()
    # sliced training and evaluation (src.data.tiles): the images cut into tiles of this many px
    # (0: off) overlapping by a fraction; the whole image kept besides, downscaled; the fraction
    # of tiles without objects kept for training; an object cut below the visible fraction is
    # an ignore region or dropped; validation merges the tiles' predictions per image
    slice_size: int = 0
    slice_overlap: float = 0.2
    slice_full_image: bool = True
    slice_empty: float = 0.1
    slice_min_visible: float = 0.5
    slice_partial: str = "ignore"
    # what slicing may make of a split before it is refused (src.data.tiles.limit_problem): the
    # tiles in its data list, and their files' bytes at most (a setting past them fills a disk)
    slice_max_tiles: int = 200_000
    slice_max_gb: float = 50.0

    @property
    def batch(self) -> int:
        """The train batch the composed config holds (auto: DEFAULT_BATCH_SIZE until sized)."""
        return DEFAULT_BATCH_SIZE if self.train_batch_size is None else self.train_batch_size

    @property
    def workers(self) -> int:
        """The workers the composed config holds (auto: DEFAULT_WORKERS until sized)."""
        return DEFAULT_WORKERS if self.num_workers is None else self.num_workers

    @property
    def on_cuda(self) -> bool:
        return bool(self.gpus) or self.device.startswith("cuda")

    @property
    def mixed_precision(self) -> bool:
        """AMP as set, else on for CUDA (fp16 with a dynamic loss scale, which every CUDA card
        and mmcv's CUDA ops support)."""
        return self.on_cuda if self.amp is None else self.amp

    @property
    def auto_sized(self) -> list[str]:
        """The settings left to the app (sized on the run's device)."""
        return [name for name in AUTO_SIZED if getattr(self, name) is None]

    def validate(self, classes: bool = True) -> list[str]:
        """Every problem with these parameters, as messages a user can act on (empty: fine);
        ``classes=False``: all but the classes' (the LR preview's settings need none)."""
        problems = []
        if self.task not in TASKS:
            problems.append(f"task {self.task!r} is unknown: use one of {', '.join(TASKS)}")
        if classes:
            problems += self._class_problems()
        problems += self._range_problems()
        problems += self._optimization_problems()
        problems += self.augmentation_problems()
        problems += self._slicing_problems()
        problems += self._weights_and_device_problems()
        return problems

    def _class_problems(self) -> list[str]:
        problems = []
        if not self.classes:
            problems.append("no classes selected: choose at least one class to train on")
        if len(set(self.classes)) != len(self.classes):
            problems.append(f"classes contain duplicates: {list(self.classes)}")
        both = sorted(set(self.ignore) & set(self.classes))
        if both:
            problems.append(
                f"classes and ignore regions contradict: {', '.join(both)} cannot be trained as a "
                "class and ignored (drop it from one)"
            )
        return problems

    def _range_problems(self) -> list[str]:
        """Every ranged setting outside its declared range (src.config.doors)."""
        return [p for name in _ranged() if (p := range_problem(name, getattr(self, name)))]

    def _optimization_problems(self) -> list[str]:
        problems = []
        if self.nesterov and self.optimizer != "SGD":
            problems.append("nesterov applies to the SGD optimizer only: choose SGD or turn it off")
        edge = DOORS["input_size"].range
        if len(self.input_size) != 2 or not all(v in edge for v in self.input_size):
            problems.append(f"input size must be two numbers {edge.words()}, got {self.input_size}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer {self.optimizer!r} is unknown: use {', '.join(OPTIMIZERS)}")
        if self.scheduler not in SCHEDULERS:
            problems.append(f"scheduler {self.scheduler!r} is unknown: use {', '.join(SCHEDULERS)}")
        if self.nesterov and self.momentum == 0:
            problems.append("nesterov needs a momentum above 0: set momentum (e.g. 0.9)")
        return problems

    @property
    def slicing(self) -> dict[str, Any] | None:
        """The dataset's ``slicing`` (``src.data.tiles.Slicing``'s fields), None when off."""
        if not self.slice_size:
            return None
        return dict(
            size=int(self.slice_size), overlap=float(self.slice_overlap),
            full_image=bool(self.slice_full_image), empty=float(self.slice_empty),
            min_visible=float(self.slice_min_visible), partial=self.slice_partial,
            max_tiles=int(self.slice_max_tiles), max_gb=float(self.slice_max_gb),
        )  # fmt: skip

    def _slicing_problems(self) -> list[str]:
        return slicing_problems(self.slicing) if self.slicing else []

    def augmentation_problems(self) -> list[str]:
        """The augmentation's own problems (an unknown preset, a custom pipeline that does not
        parse): the transforms are built only where there are none."""
        problems = []
        if self.augmentation not in AUGMENTATIONS:
            problems.append(
                f"augmentation {self.augmentation!r} is unknown: use {', '.join(AUGMENTATIONS)}"
            )
        elif self.augmentation == CUSTOM_AUGMENTATION and not self.augmentation_pipeline.strip():
            problems.append(
                "custom augmentation chosen but its pipeline is empty: give the transforms as "
                "YAML or JSON (e.g. [{type: RandomFlip, prob: 0.5}]), or choose none"
            )
        elif self.augmentation == CUSTOM_AUGMENTATION:
            try:
                parse_pipeline(self.augmentation_pipeline)
            except ConfigError as exc:
                problems.append(str(exc))
        elif self.augmentation_pipeline:
            problems.append(
                f"augmentation_pipeline is used by the {CUSTOM_AUGMENTATION!r} augmentation only: "
                f"set augmentation to {CUSTOM_AUGMENTATION!r} or leave the pipeline empty"
            )
        return problems

    def _weights_and_device_problems(self) -> list[str]:
        problems = []
        if self.weights not in WEIGHTS_MODES:
            problems.append(f"weights {self.weights!r} is unknown: use {', '.join(WEIGHTS_MODES)}")
        if self.weights == "custom" and not self.weights_path:
            problems.append("custom weights chosen but no checkpoint path given")
        if self.weights_path and self.weights != "custom":
            problems.append(
                f"weights {self.weights!r} and weights_path contradict: a checkpoint path is "
                "for custom weights; set weights to 'custom' or drop the path"
            )
        problems += self.device_problems()
        unknown = [f for f in self.export if f not in export_names()]
        if unknown:
            problems.append(
                f"export format {', '.join(map(repr, unknown))} is unknown: use "
                f"{', '.join(export_names())}"
            )
        return problems

    def device_problems(self) -> list[str]:
        """The devices' problems: ``gpus``, ``nproc`` with them, ``device`` (what a resume may
        change is checked with these)."""
        problems = []
        if len(set(self.gpus)) != len(self.gpus) or any(int(g) < 0 for g in self.gpus):
            problems.append(f"gpus must be distinct GPU indices (0, 1, ...), got {list(self.gpus)}")
        if self.gpus and self.nproc > 1:
            problems.append(
                "nproc is the number of CPU processes; with gpus there is one process per GPU: "
                "give one of them"
            )
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            problems.append(f"device {self.device!r} is unknown: use cpu or cuda:N")
        return problems

    @property
    def export_formats(self) -> tuple[str, ...]:
        """The formats to write, in build order: TensorRT is built from the ONNX file."""
        return build_order(f for f in self.export if f in export_names())


@dataclass
class DatasetSpec:
    """Where the data is and which part of it each split uses (see ``src.data.reader``)."""

    project_dir: str
    train_datasets: list[str] | None = None  # dataset paths ("ds/nested"); None: all
    val_datasets: list[str] | None = None
    train_items: list[str] | None = None  # "dataset_path/item_name" entries; None: all
    val_items: list[str] | None = None
    keep_empty_images: bool = True
    cache_dir: str | None = None
    project_id: int | None = None
    project_name: str = ""
    # the classes' colours in the project (RGB, by class title): the run's palette, which mmdet's
    # inferencers read from the config's test dataset (see ``compose.inference_dataset_cfg``)
    class_colors: dict[str, tuple[int, int, int]] | None = None


@dataclass
class RunSpec:
    """Where this run lives and what it resumes."""

    work_dir: str
    resume_from: str | None = None


def slicing_problems(slicing: dict[str, Any]) -> list[str]:
    """What is wrong with a ``slicing`` (``src.data.tiles.Slicing``'s fields), in words: each
    against its setting's declaration (src.config.doors), the tile's size and count whole."""
    found = []
    for key, name in SLICING.items():
        value = slicing.get(key, None if key == "size" else getattr(TrainParams, name))
        whole = isinstance(getattr(TrainParams, name), int)
        if not DOORS[name].range.within(value) or (whole and not isinstance(value, int)):
            found.append(_outside(name, value, off=False))
    partial = slicing.get("partial", TrainParams.slice_partial)
    if partial not in SLICE_PARTIAL:
        found.append(
            f"a cut object (slice_partial) is one of {', '.join(SLICE_PARTIAL)}, got {partial!r}"
        )
    return found


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
