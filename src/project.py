"""Get the project to train on, and split it into train and val.

Headless, a project is a local directory in Supervisely format. (Downloading one from the platform
comes with the platform integration.) Splits are plain values handed to the config builder.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from src.dataset import DatasetError, list_datasets, list_items, project_classes, read_meta


@dataclass(frozen=True)
class LocalProject:
    directory: Path
    name: str
    classes: list[str]
    datasets: list[str]
    images: int
    project_id: int | None = None


@dataclass(frozen=True)
class Split:
    """Which datasets or items go to train and val."""

    train_datasets: list[str] | None = None
    val_datasets: list[str] | None = None
    train_items: list[str] | None = None
    val_items: list[str] | None = None
    description: str = ""


def open_local_project(directory: str | Path) -> LocalProject:
    """A local Supervisely project; a clear error when it is missing or empty."""
    directory = Path(directory)
    read_meta(directory)  # raises DatasetError with what is wrong
    datasets = list(list_datasets(directory))
    items = list_items(directory)
    if not items:
        raise DatasetError(f"project {directory} has no images: add images, or check the path")
    return LocalProject(
        directory=directory.resolve(),
        name=directory.resolve().name,
        classes=project_classes(directory),
        datasets=datasets,
        images=len(items),
    )


def default_split(project: LocalProject, val_fraction: float = 0.2, seed: int = 0) -> Split:
    """Datasets named ``train``/``val`` when the project has them, else a seeded random split."""
    top = {d.split("/")[0] for d in project.datasets}
    if {"train", "val"} <= top:
        train = [d for d in project.datasets if d.split("/")[0] == "train"]
        val = [d for d in project.datasets if d.split("/")[0] == "val"]
        return Split(train_datasets=train, val_datasets=val, description="datasets train / val")
    return random_split(project, val_fraction, seed)


def random_split(project: LocalProject, val_fraction: float, seed: int) -> Split:
    if not 0 < val_fraction < 1:
        raise DatasetError(f"val fraction must be between 0 and 1, got {val_fraction}")
    names = [name for name, _ in list_items(project.directory)]
    if len(names) < 2:
        raise DatasetError("a project needs at least 2 images to split into train and val")
    random.Random(seed).shuffle(names)
    n_val = min(len(names) - 1, max(1, round(len(names) * val_fraction)))
    return Split(
        train_items=sorted(names[n_val:]),
        val_items=sorted(names[:n_val]),
        description=f"random {100 * (1 - val_fraction):.0f}% / {100 * val_fraction:.0f}%",
    )


def dataset_split(project: LocalProject, train: list[str], val: list[str]) -> Split:
    """Whole datasets to train and to val; they must not be empty or overlap."""
    if not train or not val:
        raise DatasetError("choose at least one dataset for train and one for val")
    overlap = sorted(set(train) & set(val))
    if overlap:
        raise DatasetError(f"datasets {overlap} are in both train and val")
    unknown = sorted(set(train + val) - set(project.datasets))
    if unknown:
        raise DatasetError(f"datasets {unknown} are not in the project")
    return Split(train_datasets=train, val_datasets=val, description="by datasets")


def tags_of(project: LocalProject) -> list[str]:
    """Tag names the project defines (meta.json)."""
    return [t["name"] for t in read_meta(project.directory).get("tags", []) if t.get("name")]


def tag_split(project: LocalProject, train_tag: str, val_tag: str) -> Split:
    """Images tagged ``train_tag`` train, images tagged ``val_tag`` validate."""
    import json

    if not train_tag or not val_tag or train_tag == val_tag:
        raise DatasetError("choose two different tags for train and val")
    train, val = [], []
    for name, path in list_items(project.directory):
        tags = {t.get("name") for t in json.loads(path.read_text(encoding="utf-8")).get("tags", [])}
        if train_tag in tags:
            train.append(name)
        elif val_tag in tags:
            val.append(name)
    if not train or not val:
        empty = "train" if not train else "val"
        raise DatasetError(
            f"no image is tagged for {empty} ({train_tag if not train else val_tag})"
        )
    return Split(train_items=train, val_items=val, description=f"by tags {train_tag}/{val_tag}")
