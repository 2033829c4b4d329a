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
