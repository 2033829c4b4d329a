"""The model zoo: mmdet's own ``metafile.yml`` files, filtered by ``configs/zoo.yaml``.

Nothing of mmdet's configs is copied into this repository: entries point at the config files that
ship inside the installed mmdet package (``mmdet/.mim/configs``), so the zoo always matches the
installed mmdet. ``configs/zoo.yaml`` only says which architectures the app offers per task.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from src.core.tasks import DETECTION, SEGMENTATION, TASKS

logger = logging.getLogger(__name__)

_TASK_RESULT_NAMES = {
    DETECTION: "Object Detection",
    SEGMENTATION: "Instance Segmentation",
}
ZOO_FILE = Path(__file__).resolve().parents[2] / "configs" / "zoo.yaml"


class ZooError(ValueError):
    """An unknown task, architecture or model name, or a broken zoo file."""


@dataclass(frozen=True)
class ZooEntry:
    """One pretrained model of mmdet's zoo as the app offers it."""

    architecture: str  # display name of the architecture, e.g. "RTMDet"
    model: str  # mmdet's model name, e.g. "rtmdet_tiny_8xb32-300e_coco"
    task: str  # one of TASKS
    config_path: Path  # absolute path of the config file inside the installed mmdet
    weights_url: str | None
    box_ap: float | None
    mask_ap: float | None
    train_memory_gb: float | None
    inference_ms: float | None
    epochs: int | None
    paper: str | None
    year: int | None
    is_default: bool = False
    gpu_only: str | None = None  # the reason, when the model cannot run on CPU
    requires: tuple[str, ...] = ()  # python packages beyond requirements.txt
    min_input_size: int = 32  # smallest input side the layers accept
    unsupported: str | None = None  # why mmdet 3.3 cannot train it on custom classes

    def missing_packages(self) -> list[str]:
        """Packages this model needs that are not installed here."""
        import importlib.util

        return [name for name in self.requires if importlib.util.find_spec(name) is None]

    def as_row(self) -> dict[str, object]:
        """A flat dict for tables (CLI, UI)."""
        return {
            "architecture": self.architecture,
            "model": self.model,
            "box AP": self.box_ap,
            "mask AP": self.mask_ap,
            "memory (GB)": self.train_memory_gb,
            "inference (ms)": self.inference_ms,
            "epochs": self.epochs,
            "paper": f"{self.paper} {self.year}" if self.paper else None,
            "gpu only": self.gpu_only,
            "unsupported": self.unsupported,
        }


def mmdet_configs_dir() -> Path:
    """The ``configs`` folder that the installed mmdet package ships (``mmdet/.mim/configs``)."""
    import importlib.util

    # find_spec, not import: importing mmdet pulls in mmcv and torch, which listing does not need
    spec = importlib.util.find_spec("mmdet")
    if spec is None or not spec.submodule_search_locations:
        raise ZooError("mmdet is not installed: run `make setup`")
    path = Path(next(iter(spec.submodule_search_locations))) / ".mim" / "configs"
    if not path.is_dir():
        raise ZooError(f"mmdet's configs are missing at {path}: reinstall mmdet==3.3.0 from PyPI")
    return path


def _metric(results: list[dict], task_name: str, key: str) -> float | None:
    for result in results or []:
        if result.get("Task") == task_name and key in (result.get("Metrics") or {}):
            return float(result["Metrics"][key])
    return None


def _inference_ms(metadata: dict) -> float | None:
    value = metadata.get("inference time (ms/im)")
    if isinstance(value, list) and value:
        value = value[0].get("value")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _number(value: object) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _entries_for(spec: dict, task: str, configs_dir: Path) -> list[ZooEntry]:
    metafile = configs_dir / spec["metafile"]
    if not metafile.is_file():
        logger.warning("zoo: %s is not shipped by the installed mmdet, skipped", spec["metafile"])
        return []
    data = yaml.safe_load(metafile.read_text()) or {}
    collections = {c.get("Name"): c for c in data.get("Collections") or []}
    excludes = spec.get("exclude") or []
    task_name = _TASK_RESULT_NAMES[task]
    entries = []
    for model in data.get("Models") or []:
        name = model["Name"]
        if any(fnmatch.fnmatch(name, pattern) for pattern in excludes):
            continue
        results = model.get("Results") or []
        if not any(r.get("Task") == task_name for r in results):
            continue
        config_path = configs_dir.parent / model["Config"]  # "configs/<arch>/<name>.py"
        if not config_path.is_file():
            continue
        metadata = model.get("Metadata") or {}
        collection = collections.get(model.get("In Collection"), {})
        paper = spec.get("paper") or (collection.get("Paper") or {}).get("Title")
        epochs = metadata.get("Epochs")
        entries.append(
            ZooEntry(
                architecture=spec["name"],
                model=name,
                task=task,
                config_path=config_path,
                weights_url=model.get("Weights"),
                box_ap=_metric(results, task_name, "box AP")
                or _metric(results, "Object Detection", "box AP"),
                mask_ap=_metric(results, task_name, "mask AP"),
                train_memory_gb=_number(metadata.get("Training Memory (GB)")),
                inference_ms=_inference_ms(metadata),
                epochs=int(epochs) if isinstance(epochs, int | float) else None,
                paper=paper,
                year=spec.get("year"),
                gpu_only=spec.get("gpu_only"),
                requires=tuple(spec.get("requires") or ()),
                min_input_size=int(spec.get("min_input_size", 32)),
                unsupported=spec.get("unsupported"),
            )
        )
    default = spec.get("default") or (entries[0].model if entries else None)
    if default and entries and default not in {e.model for e in entries}:
        raise ZooError(f"configs/zoo.yaml: default {default!r} is not a model of {spec['name']}")
    return [replace(e, is_default=e.model == default) for e in entries]


@functools.cache
def load_zoo(zoo_file: Path = ZOO_FILE) -> tuple[ZooEntry, ...]:
    """Every model the app offers, both tasks, in the order of ``configs/zoo.yaml``."""
    spec = yaml.safe_load(Path(zoo_file).read_text())
    configs_dir = mmdet_configs_dir()
    entries: list[ZooEntry] = []
    for task in TASKS:
        for arch in spec.get(task) or []:
            entries.extend(_entries_for(arch, task, configs_dir))
    return tuple(entries)


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ZooError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    return task


def list_models(task: str, architecture: str | None = None) -> list[ZooEntry]:
    """Models of one task (and architecture, when given)."""
    check_task(task)
    return [
        e
        for e in load_zoo()
        if e.task == task and (architecture is None or e.architecture == architecture)
    ]


def architectures(task: str) -> list[str]:
    """Architecture display names of one task, in zoo order."""
    seen: dict[str, None] = {}
    for entry in list_models(task):
        seen.setdefault(entry.architecture, None)
    return list(seen)


def default_models(task: str) -> list[ZooEntry]:
    """The default model of every architecture of a task."""
    return [e for e in list_models(task) if e.is_default]


def get_model(name: str, task: str | None = None) -> ZooEntry:
    """A zoo entry by mmdet model name; an unknown name gets a message with close matches."""
    candidates = [e for e in load_zoo() if task is None or e.task == check_task(task)]
    for entry in candidates:
        if entry.model == name:
            return entry
    import difflib

    close = difflib.get_close_matches(name, [e.model for e in candidates], n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    where = f" for task {task}" if task else ""
    raise ZooError(
        f"unknown model {name!r}{where}.{hint} "
        f"List them with: python -m src.cli zoo --task {DETECTION}"
    )
