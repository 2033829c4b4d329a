"""What a user sets for a training run, with the allowed values and ranges.

``TrainParams`` is the one description of a run's settings shared by the UI, the HTTP API and
the CLI (their defaults and choices come from here); ``DatasetSpec`` and ``RunSpec`` say where the
data is and where the run writes. Plain dataclasses: nothing here imports mmengine or mmdet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.config.pipeline import parse_pipeline
from src.core.errors import ConfigError
from src.core.tasks import DETECTION, TASKS

CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"
OPTIMIZERS = ("AdamW", "Adam", "SGD")
SCHEDULERS = ("cosine", "step", "linear", "constant", "poly", "onecycle", "cosine_restarts")
CUSTOM_AUGMENTATION = "custom"  # the user's own pipeline (src.config.augmentations)
AUGMENTATIONS = ("none", "light", "medium", "heavy", CUSTOM_AUGMENTATION)
WEIGHTS_MODES = ("pretrained", "scratch", "custom")
# formats the best checkpoint can be exported to after training (src.engine.onnx_export)
EXPORT_FORMATS = ("onnx", "tensorrt")


# What a resume may change (the CLI's options, the API's hyperparameters); every other setting is
# the run's own, in its config.py (src.app.prepare.prepare_resume)
RESUME_CHANGES = ("epochs", "gpus", "nproc", "device")

# What a run has for an unset ("auto") batch size and worker count until the session sizes it
# on its device (src.engine.autosize): the CPU's values, and what the Editor shows.
DEFAULT_BATCH_SIZE = 2
DEFAULT_WORKERS = 2
AUTO_SIZED = ("train_batch_size", "num_workers")  # None: the app chooses on the run's device

MIN_INPUT, MAX_INPUT = 32, 4096  # px; past 4096 one image alone is ~200 MB as a float tensor
# Sliced training and prediction: the tile's side in px and the neighbouring tiles' overlap (a
# fraction of the tile; at 1 a tile would never move on)
MIN_TILE, MAX_TILE = 32, 16384
MAX_TILE_OVERLAP = 0.9
# The random seed: mmengine seeds numpy with it, and each data-loader worker with seed + rank x
# workers + the worker's id (mmengine's worker_init_fn), which numpy refuses past 2**32 - 1: up
# to 2**31 - 1 that sum stays in range for every worker count and rank allowed here.
MAX_SEED = 2**31 - 1
# Whole-number settings and their allowed ranges (the upper bounds stop a typo such as a batch
# of 20000 from exhausting memory on the first batch, after the run has started).
INT_RANGES = {
    "epochs": (1, 100_000),
    "train_batch_size": (1, 1024),
    "val_batch_size": (1, 1024),
    "checkpoint_interval": (1, 100_000),
    "val_interval": (1, 100_000),
    "num_workers": (0, 64),
    "restart_epochs": (0, 100_000),
    "early_stopping_patience": (0, 1000),
    "nproc": (1, 64),
    "slice_size": (0, MAX_TILE),  # 0: off; else from MIN_TILE (slicing_problems)
    "seed": (0, MAX_SEED),
    "log_interval": (1, 100_000),
    "warmup_iters": (0, 1_000_000),
    "keep_checkpoints": (1, 10_000),
}
# Optional whole numbers: None keeps the model's own value.
OPTIONAL_INT_RANGES = {"frozen_stages": (-1, 4), "max_per_img": (1, 10_000)}


def range_problem(name: str, value: int) -> str | None:
    """Why ``value`` is outside the whole-number setting ``name``'s range (None: inside)."""
    low, high = INT_RANGES[name]
    if low <= int(value) <= high:
        return None
    return f"{name} must be from {low} to {high}, got {value}"


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
    # the Model Benchmark evaluation of the best checkpoint after a finished run (src.app.evaluate)
    evaluate: bool = True
    # stop when the primary metric has not improved by min_delta for this many validations (0: off)
    early_stopping_patience: int = 0
    early_stopping_min_delta: float = 0.0
    frozen_stages: int | None = None  # backbone stages kept frozen; None: the model's own setting
    max_per_img: int | None = None  # detections kept per image at validation; None: the model's
    score_thr: float | None = None  # their minimum score at validation; None: the model's
    auto_scale_lr: bool = False  # scale lr by (batch size / the zoo config's base batch size)
    # after a finished run, the best checkpoint exported to these (EXPORT_FORMATS); TensorRT
    # builds from the ONNX file, so it implies ONNX
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
        problems = []
        for name in INT_RANGES:
            value = getattr(self, name)
            if value is None and name in AUTO_SIZED:
                continue
            if problem := range_problem(name, value):
                problems.append(problem)
        for name, (low, high) in OPTIONAL_INT_RANGES.items():
            value = getattr(self, name)
            if value is not None and not low <= int(value) <= high:
                problems.append(f"{name} must be from {low} to {high} (or unset), got {value}")
        if self.score_thr is not None and not 0.0 <= self.score_thr < 1.0:
            problems.append(f"score_thr must be from 0 to 1 (or unset), got {self.score_thr}")
        if not 0.0 <= self.class_balance <= 1.0:
            problems.append(
                f"class_balance must be from 0 (off) to 1 (the image frequency under which a "
                f"class's images are repeated), got {self.class_balance}"
            )
        if not 0.0 <= self.early_stopping_min_delta <= 1.0:
            problems.append(
                f"early_stopping_min_delta must be from 0 to 1, got {self.early_stopping_min_delta}"
            )
        return problems

    def _optimization_problems(self) -> list[str]:
        problems = []
        if self.nesterov and self.optimizer != "SGD":
            problems.append("nesterov applies to the SGD optimizer only: choose SGD or turn it off")
        if len(self.input_size) != 2 or not all(
            MIN_INPUT <= int(v) <= MAX_INPUT for v in self.input_size
        ):
            problems.append(
                f"input size must be two numbers from {MIN_INPUT} to {MAX_INPUT}, got "
                f"{self.input_size}"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"learning rate must be a positive number, got {self.lr}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            problems.append(f"weight decay must be 0 or more, got {self.weight_decay}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer {self.optimizer!r} is unknown: use {', '.join(OPTIMIZERS)}")
        if self.scheduler not in SCHEDULERS:
            problems.append(f"scheduler {self.scheduler!r} is unknown: use {', '.join(SCHEDULERS)}")
        if not 0.0 < self.warmup_ratio <= 1.0:  # mmengine's LinearLR divides by it
            problems.append(
                f"warmup_ratio (the warmup's starting fraction of the learning rate) must be above "
                f"0 and at most 1, got {self.warmup_ratio}"
            )
        if not 0.0 <= self.momentum < 1.0:
            problems.append(f"momentum must be from 0 to below 1, got {self.momentum}")
        elif self.nesterov and self.momentum == 0:
            problems.append("nesterov needs a momentum above 0: set momentum (e.g. 0.9)")
        if self.grad_clip is not None and self.grad_clip <= 0:
            problems.append(f"gradient clipping norm must be positive, got {self.grad_clip}")
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
        unknown = [f for f in self.export if f not in EXPORT_FORMATS]
        if unknown:
            problems.append(
                f"export format {', '.join(map(repr, unknown))} is unknown: use "
                f"{', '.join(EXPORT_FORMATS)}"
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
        wanted = set(self.export)
        if "tensorrt" in wanted:
            wanted.add("onnx")
        return tuple(f for f in EXPORT_FORMATS if f in wanted)


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


# --------------------------------------------------------------------------- text round trip


SLICE_PARTIAL = ("ignore", "drop")  # what becomes of an object cut below the visible fraction


def slicing_problems(slicing: dict[str, Any]) -> list[str]:
    """What is wrong with a ``slicing`` (``src.data.tiles.Slicing``'s fields), in words."""
    found = []
    size = slicing.get("size")
    overlap = slicing.get("overlap", TrainParams.slice_overlap)
    empty = slicing.get("empty", TrainParams.slice_empty)
    visible = slicing.get("min_visible", TrainParams.slice_min_visible)
    partial = slicing.get("partial", TrainParams.slice_partial)
    if not isinstance(size, int) or not MIN_TILE <= size <= MAX_TILE:
        found.append(
            f"the tile size (slice_size) must be from {MIN_TILE} to {MAX_TILE} px, got {size}"
        )
    if not isinstance(overlap, (int, float)) or not 0.0 <= overlap <= MAX_TILE_OVERLAP:
        found.append(
            f"the tile overlap (slice_overlap) must be from 0 to {MAX_TILE_OVERLAP}, got {overlap}"
        )
    if not isinstance(empty, (int, float)) or not 0.0 <= empty <= 1.0:
        found.append(
            f"the fraction of empty tiles kept (slice_empty) must be from 0 to 1, got {empty}"
        )
    if not isinstance(visible, (int, float)) or not 0.0 < visible <= 1.0:
        found.append(
            "the visible fraction under which a cut object is not trained as one "
            f"(slice_min_visible) must be above 0 and at most 1, got {visible}"
        )
    if partial not in SLICE_PARTIAL:
        found.append(
            f"a cut object (slice_partial) is one of {', '.join(SLICE_PARTIAL)}, got {partial!r}"
        )
    found += _slicing_limit_problems(slicing)
    return found


def _slicing_limit_problems(slicing: dict[str, Any]) -> list[str]:
    found = []
    tiles = slicing.get("max_tiles", TrainParams.slice_max_tiles)
    gb = slicing.get("max_gb", TrainParams.slice_max_gb)
    if isinstance(tiles, bool) or not isinstance(tiles, int) or tiles < 1:
        found.append(f"the most tiles a split may make (slice_max_tiles) is 1 or more, got {tiles}")
    if isinstance(gb, bool) or not isinstance(gb, int | float) or not 0 < gb < math.inf:
        found.append(
            f"the most GB of tile files a split may make (slice_max_gb) is above 0, got {gb}"
        )
    return found


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
