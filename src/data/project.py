"""Get the project to train on, and split it into train and val.

Headless, a project is a local directory in Supervisely format. On the platform it is downloaded
with the SDK into a cache keyed by project id and update time (``download_project``). Splits are
plain values handed to the config builder.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.core.errors import RequestError
from src.data.reader import DatasetError, list_datasets, list_items, project_classes, read_meta

logger = logging.getLogger(__name__)
COMPLETE_MARKER = ".download-complete"


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


def open_local_project(
    directory: str | Path, name: str | None = None, project_id: int | None = None
) -> LocalProject:
    """A local Supervisely project; a clear error when it is missing or empty."""
    directory = Path(directory)
    read_meta(directory)  # raises DatasetError with what is wrong
    datasets = list(list_datasets(directory))
    items = list_items(directory)
    if not items:
        raise DatasetError(f"project {directory} has no images: add images, or check the path")
    return LocalProject(
        directory=directory.resolve(),
        name=name or directory.resolve().name,
        classes=project_classes(directory),
        datasets=datasets,
        images=len(items),
        project_id=project_id,
    )


def _cache_key(project_id: int, updated_at: str) -> str:
    stamp = "".join(c if c.isalnum() else "-" for c in str(updated_at))
    return f"{project_id}_{stamp}"


def download_project(
    api: Any,
    project_id: int,
    cache_root: str | Path,
    progress: Callable[[int], None] | None = None,
) -> LocalProject:
    """The platform's project as a local one, downloaded once per version.

    The cache folder is ``<cache_root>/<project id>_<updated at>``: a second run of an unchanged
    project downloads nothing. The download goes to ``<key>.partial`` and is renamed only when
    complete, so a half-downloaded project is never trained on. An interrupted download resumes:
    an item counts as downloaded once its ``img_info`` record (written last) holds the image's
    update time. A changed project starts from the previous version's files, so only changed
    images travel. (The SDK's own ``resume_download`` cannot be used: in supervisely 6.74 it
    deletes an unchanged item before reading its annotation back, and fails.)

    Args:
        api: ``sly.Api``.
        project_id: the images project.
        cache_root: where downloaded projects are kept.
        progress: called with the number of images done after each batch.
    """
    info = api.project.get_info_by_id(project_id)
    if info is None:
        raise DatasetError(f"project {project_id} does not exist or you have no access to it")
    cache_root = Path(cache_root)
    final = cache_root / _cache_key(project_id, info.updated_at)
    if (final / COMPLETE_MARKER).is_file():
        logger.info("project %s (%s) is in the cache: %s", info.name, project_id, final)
        return open_local_project(final, name=info.name, project_id=project_id)

    partial = final.with_name(final.name + ".partial")
    older = sorted(
        p for p in cache_root.glob(f"{project_id}_*")
        if p != final and (p / COMPLETE_MARKER).is_file()
    )  # fmt: skip
    if not partial.exists() and older:
        logger.info("project %s changed since %s: updating a copy", project_id, older[-1].name)
        shutil.copytree(older[-1], partial)
        (partial / COMPLETE_MARKER).unlink()
    logger.info("downloading project %s (%s images) to %s", info.name, info.items_count, partial)
    _download_into(api, project_id, partial, progress)
    (partial / COMPLETE_MARKER).write_text(str(info.updated_at), encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    for stale in older:
        shutil.rmtree(stale, ignore_errors=True)
    return open_local_project(final, name=info.name, project_id=project_id)


def _download_into(
    api: Any, project_id: int, root: Path, progress: Callable[[int], None] | None
) -> None:
    """Images, annotations and ``img_info`` of every dataset, in the SDK's project layout."""
    import json

    from supervisely import ProjectMeta
    from supervisely.api.api import ApiContext
    from supervisely.project.project import Dataset

    from src.runs.atomic_files import write_bytes_atomic, write_text_atomic

    root.mkdir(parents=True, exist_ok=True)
    meta_json = api.project.get_meta(project_id)
    meta = ProjectMeta.from_json(meta_json)
    (root / "meta.json").write_text(json.dumps(meta_json), encoding="utf-8")
    kept = set()
    for parents, dataset in api.dataset.tree(project_id):
        ds_dir = root / Dataset._get_dataset_path(dataset.name, parents)
        kept.add(ds_dir)
        for sub in ("img", "ann", "img_info"):
            (ds_dir / sub).mkdir(parents=True, exist_ok=True)
        images = api.image.get_list(dataset.id, force_metadata_for_links=False)
        todo = [i for i in images if not _is_downloaded(ds_dir, i.name, str(i.updated_at))]
        if progress is not None and len(todo) < len(images):
            progress(len(images) - len(todo))
        for start in range(0, len(todo), 50):
            batch = todo[start : start + 50]
            ids = [i.id for i in batch]
            with ApiContext(api, project_id=project_id, dataset_id=dataset.id, project_meta=meta):
                anns = api.annotation.download_batch(dataset.id, ids)
            data = api.image.download_bytes(dataset.id, ids)
            for image, content, ann in zip(batch, data, anns, strict=True):
                if ann.image_id != image.id:
                    raise DatasetError(f"annotation of image {ann.image_id} came for {image.id}")
                write_bytes_atomic(content, ds_dir / "img" / image.name)
                write_text_atomic(ds_dir / "ann" / f"{image.name}.json", json.dumps(ann.annotation))
                record = {"id": image.id, "name": image.name, "updated_at": str(image.updated_at)}
                write_text_atomic(ds_dir / "img_info" / f"{image.name}.json", json.dumps(record))
            if progress is not None:
                progress(len(batch))
        names = {i.name for i in images}
        for stale in (ds_dir / "img").iterdir():
            if stale.name not in names:  # removed on the server since the cached version
                for path in (stale, ds_dir / "ann" / f"{stale.name}.json",
                             ds_dir / "img_info" / f"{stale.name}.json"):  # fmt: skip
                    path.unlink(missing_ok=True)
    for ds_dir in list_datasets(root).values():
        if ds_dir not in kept:  # a dataset removed on the server
            shutil.rmtree(ds_dir, ignore_errors=True)


def _is_downloaded(ds_dir: Path, name: str, updated_at: str) -> bool:
    import json

    record = ds_dir / "img_info" / f"{name}.json"
    try:
        done = json.loads(record.read_text(encoding="utf-8")).get("updated_at") == updated_at
    except (OSError, ValueError):
        return False
    files = (ds_dir / "img" / name, ds_dir / "ann" / f"{name}.json")
    return done and all(f.is_file() for f in files)


def default_split(project: LocalProject, val_fraction: float = 0.2, seed: int = 0) -> Split:
    """Datasets named ``train``/``val`` when the project has them, else a seeded random split."""
    top = {d.split("/")[0] for d in project.datasets}
    if {"train", "val"} <= top:
        train = [d for d in project.datasets if d.split("/")[0] == "train"]
        val = [d for d in project.datasets if d.split("/")[0] == "val"]
        return Split(train_datasets=train, val_datasets=val, description="datasets train / val")
    return random_split(project, val_fraction, seed)


def split_items(project: LocalProject, split: Split) -> dict[str, list[str]]:
    """The item names (``dataset/item``) each side of a split trains or validates on."""
    result = {}
    for side, items, datasets in (
        ("train", split.train_items, split.train_datasets),
        ("val", split.val_items, split.val_datasets),
    ):
        if items is not None:
            result[side] = sorted(items)
        else:
            result[side] = [name for name, _ in list_items(project.directory, datasets)]
    return result


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


def check_out_dir(
    out_dir: str | Path, project_dir: str | Path, doing: str, flag: str, empty: bool = False
) -> Path:
    """``out_dir`` resolved, for a command that writes a copy of a project (``doing``: "the
    audit", "pre-labelling"; ``flag``: how the user named it): refused when it overlaps the
    project (the copy would land in the original, or replacing it could reach the original), when
    it is a file, and with ``empty`` when it holds anything (nothing is ever overwritten)."""
    out, project = Path(out_dir).resolve(), Path(project_dir).resolve()
    if out == project or project in out.parents or out in project.parents:
        raise RequestError(
            f"{flag} {out_dir} overlaps the project {project_dir}: {doing} never writes into the "
            "project it reads; give a folder outside it"
        )
    if out.exists() and not out.is_dir():
        raise RequestError(f"{flag} {out_dir} is a file: give a {'new or empty ' * empty}folder")
    if empty and out.is_dir() and any(out.iterdir()):
        raise RequestError(
            f"{flag} {out_dir} is not empty: {doing} writes a whole project there and never "
            "overwrites; give a new or empty folder"
        )
    return out
