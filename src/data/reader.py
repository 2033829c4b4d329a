"""Read a local Supervisely project straight into mmdet's instance format (without importing mmdet).

Why not the SDK's ``Annotation.from_json`` + ``Bitmap.draw``: building geometry objects and drawing
every mask at full image size is what made the older app slow on big projects. Here each annotation
JSON is read once, boxes come from the points directly, and masks become COCO RLE computed on the
object's own crop (``src.data.geometry``). The result is cached, keyed on the annotation files'
sizes and modification times.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycocotools import mask as mask_utils

from src.core.tasks import SEGMENTATION
from src.data.geometry import object_to_instance, rle_bytes
from src.runs.atomic_files import atomic_path

logger = logging.getLogger(__name__)

_CACHE_VERSION = 3  # bump when the cached data_list format changes


class DatasetError(ValueError):
    """The project cannot be read as asked (missing dir, unreadable file, nothing selected)."""


@dataclass
class SplitStats:
    """What was read for one split, for the pre-flight summary and the log."""

    images: int = 0
    images_without_objects: int = 0
    dropped_empty_images: int = 0
    objects_per_class: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    ignore_regions: Counter = field(default_factory=Counter)  # the name that made each one

    @property
    def objects(self) -> int:
        return sum(self.objects_per_class.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "objects": self.objects,
            "images_without_objects": self.images_without_objects,
            "dropped_empty_images": self.dropped_empty_images,
            "objects_per_class": dict(self.objects_per_class),
            "skipped": dict(self.skipped),
            "ignore_regions": dict(self.ignore_regions),
        }


# --------------------------------------------------------------------------- project layout


def read_meta(project_dir: str | Path) -> dict:
    """The project's ``meta.json`` (classes with their shapes and colors)."""
    path = Path(project_dir) / "meta.json"
    if not Path(project_dir).is_dir():
        raise DatasetError(f"project directory {project_dir} does not exist")
    if not path.is_file():
        raise DatasetError(f"{project_dir} is not a Supervisely project: meta.json is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None


def project_classes(project_dir: str | Path) -> list[str]:
    return [c["title"] for c in read_meta(project_dir).get("classes", [])]


def class_colors(project_dir: str | Path) -> dict[str, tuple[int, int, int]]:
    colors = {}
    for c in read_meta(project_dir).get("classes", []):
        hex_color = (c.get("color") or "#808080").lstrip("#")
        colors[c["title"]] = tuple(int(hex_color[i : i + 2], 16) for i in (0, 2, 4))
    return colors


def list_datasets(project_dir: str | Path) -> dict[str, Path]:
    """Every dataset of a project, nested ones included: full name ("parent/child") → directory.

    Nested datasets live in ``<parent>/datasets/<child>``, as the SDK writes them.
    """
    root = Path(project_dir)
    found: dict[str, Path] = {}
    for dirpath, dirnames, _ in os.walk(root):
        path = Path(dirpath)
        if (path / "ann").is_dir() and (path / "img").is_dir():
            parts = [p for p in path.relative_to(root).parts if p != "datasets"]
            found["/".join(parts)] = path
        dirnames[:] = sorted(d for d in dirnames if d not in ("ann", "img", "meta", "img_info"))
    return dict(sorted(found.items()))


def image_path(ann_path: Path) -> Path:
    """The image of an item, from its annotation file (``<dataset>/ann/<name>.json`` describes
    ``<dataset>/img/<name>``)."""
    return ann_path.parent.parent / "img" / ann_path.name[: -len(".json")]


def list_items(
    project_dir: str | Path, datasets: list[str] | None = None
) -> list[tuple[str, Path]]:
    """(``dataset/item_name``, annotation path) of every item of the chosen datasets, sorted."""
    all_datasets = list_datasets(project_dir)
    if datasets is not None:
        unknown = sorted(set(datasets) - set(all_datasets))
        if unknown:
            raise DatasetError(
                f"datasets {unknown} are not in {project_dir}; it has: {', '.join(all_datasets)}"
            )
    items = []
    for name, path in all_datasets.items():
        if datasets is not None and name not in datasets:
            continue
        for entry in sorted(os.scandir(path / "ann"), key=lambda e: e.name):
            if entry.name.endswith(".json"):
                items.append((f"{name}/{entry.name[:-5]}", Path(entry.path)))
    return items


# --------------------------------------------------------------------------- reading a split


def _ignored_by(obj: dict, ignore: tuple[str, ...] | list[str]) -> str | None:
    """The ignore name that makes ``obj`` an ignore region: its class, or one of its tags."""
    if not ignore:
        return None
    if obj.get("classTitle") in ignore:
        return str(obj["classTitle"])
    return next((t.get("name") for t in obj.get("tags") or [] if t.get("name") in ignore), None)


def read_instances(
    project_dir: str | Path,
    classes: list[str],
    task: str,
    datasets: list[str] | None = None,
    items: list[str] | None = None,
    keep_empty_images: bool = True,
    ignore: tuple[str, ...] | list[str] = (),
) -> tuple[list[dict], SplitStats]:
    """mmdet ``data_list`` of one split + what was skipped. ``img_id`` counts from 1 in order.

    ``ignore``: class or object-tag names whose objects are regions that must not count (crowds,
    "ignore" areas): instances with ``ignore_flag`` 1 in mmdet's sense (``PackDetInputs`` puts
    them apart, so they are never trained as objects; the COCO ground truth marks them
    ``iscrowd``). An ignore class keeps label 0 (a label it never trains), a tagged object its
    own class's."""
    project_dir = Path(project_dir)
    read_meta(project_dir)
    with_mask = task == SEGMENTATION
    label_of = {name: i for i, name in enumerate(classes)}
    stats = SplitStats()
    data_list = []
    for item_name, ann_path in _selected_items(project_dir, datasets, items):
        ann, height, width = _read_annotation(ann_path)
        instances = _image_instances(
            ann, ann_path, (height, width), (classes, label_of), ignore, with_mask, stats
        )
        if not any(not inst["ignore_flag"] for inst in instances):
            stats.images_without_objects += 1
            if not keep_empty_images:
                stats.dropped_empty_images += 1
                continue
        data_list.append(
            {
                "img_path": str(image_path(ann_path)),
                "img_id": len(data_list) + 1,
                "item_name": item_name,
                "height": height,
                "width": width,
                "instances": instances,
            }
        )
    stats.images = len(data_list)
    return data_list, stats


def _selected_items(
    project_dir: Path, datasets: list[str] | None, items: list[str] | None
) -> list[tuple[str, Path]]:
    """The split's items, in the project's order: those of ``datasets`` (None: all), only
    ``items`` when given (each of which must be in the project)."""
    selected = list_items(project_dir, datasets)
    if items is None:
        return selected
    wanted = set(items)
    missing = wanted - {name for name, _ in selected}
    if missing:
        raise DatasetError(
            f"{len(missing)} split items are not in the project, e.g. {sorted(missing)[:3]}"
        )
    return [(name, path) for name, path in selected if name in wanted]


def _read_annotation(ann_path: Path) -> tuple[dict, int, int]:
    """An item's annotation JSON and its image's height and width."""
    try:
        with open(ann_path, encoding="utf-8") as f:
            ann = json.load(f)
        height, width = int(ann["size"]["height"]), int(ann["size"]["width"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"cannot read annotation {ann_path}: {exc}") from None
    return ann, height, width


def _image_instances(
    ann: dict,
    ann_path: Path,
    size: tuple[int, int],
    labels: tuple[list[str], dict[str, int]],
    ignore: tuple[str, ...] | list[str],
    with_mask: bool,
    stats: SplitStats,
) -> list[dict[str, Any]]:
    """One image's instances of the selected classes and its ignore regions (``size``: its
    height and width; ``labels``: the classes and each one's label); what is skipped, and each
    kept object, counted in ``stats``."""
    height, width = size
    classes, label_of = labels
    instances = []
    for obj in ann.get("objects") or []:
        label = label_of.get(obj.get("classTitle"))
        ignored_by = _ignored_by(obj, ignore)
        if label is None and ignored_by is None:
            continue  # a class the user did not select
        try:
            result = object_to_instance(obj, height, width, with_mask)
        except (ValueError, KeyError, TypeError, zlib.error) as exc:
            raise DatasetError(f"cannot read an object in {ann_path}: {exc}") from None
        if isinstance(result, str):
            stats.skipped[result] += 1
            continue
        box, rle = result
        instance: dict[str, Any] = {
            "bbox": box, "bbox_label": label or 0, "ignore_flag": int(ignored_by is not None)
        }  # fmt: skip
        if rle is not None:
            instance["mask"] = rle
        instances.append(instance)
        if ignored_by is not None:
            stats.ignore_regions[ignored_by] += 1
        else:
            stats.objects_per_class[classes[label]] += 1
    return instances


def cache_key(
    project_dir: str | Path,
    classes: list[str],
    task: str,
    datasets: list[str] | None,
    items: list[str] | None,
    keep_empty_images: bool,
    ignore: tuple[str, ...] | list[str] = (),
) -> str:
    """Hash of the annotation files (path, size, mtime) and every option that shapes the result."""
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            [
                _CACHE_VERSION,
                str(Path(project_dir).resolve()),
                classes,
                task,
                datasets,
                items,
                keep_empty_images,
                *([sorted(ignore)] if ignore else []),  # (the key of a run without is unchanged)
            ]
        ).encode()
    )
    for name, path in list_items(project_dir, datasets):
        st = path.stat()
        digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def load_split(
    project_dir: str | Path,
    classes: list[str],
    task: str,
    datasets: list[str] | None = None,
    items: list[str] | None = None,
    keep_empty_images: bool = True,
    cache_dir: str | Path | None = None,
    ignore: tuple[str, ...] | list[str] = (),
) -> tuple[list[dict], SplitStats]:
    """:func:`read_instances` through an on-disk cache (when ``cache_dir`` is given)."""
    result = None
    path = None
    if cache_dir is not None:
        key = cache_key(project_dir, classes, task, datasets, items, keep_empty_images, ignore)
        path = Path(cache_dir) / f"split_{key}.pkl"
        if path.is_file():
            try:
                with open(path, "rb") as f:
                    result = pickle.load(f)
            except Exception as exc:  # a broken cache file is rebuilt, never trusted
                logger.warning("dataset cache %s is unreadable (%s): rebuilding it", path, exc)
    if result is None:
        result = read_instances(
            project_dir, classes, task, datasets, items, keep_empty_images, ignore
        )
        if path is not None:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
    _check_images_exist(result[0])
    return result


def _check_images_exist(data_list: list[dict]) -> None:
    """Every image of the split is on disk: a missing one is named now (dry run, Start), not
    mid-epoch when the loader reaches it. (The cache is keyed by annotations, so this is checked
    on every load; a stat per image.)"""
    missing = [info["img_path"] for info in data_list if not os.path.isfile(info["img_path"])]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        shown = ", ".join(missing[:3]) + more
        raise DatasetError(
            f"{len(missing)} image(s) of the split are missing: {shown}; restore them or remove "
            "their annotations"
        )


# --------------------------------------------------------------------------- COCO ground truth


def to_coco(data_list: list[dict], classes: list[str]) -> dict:
    """COCO ground truth of a split, built from the very instances the model trains on."""
    images, annotations = [], []
    for info in data_list:
        images.append(
            {
                "id": info["img_id"],
                "file_name": info["item_name"],
                "height": info["height"],
                "width": info["width"],
            }
        )
        for inst in info["instances"]:
            x1, y1, x2, y2 = inst["bbox"]
            ann = {
                "id": len(annotations) + 1,
                "image_id": info["img_id"],
                "category_id": inst["bbox_label"] + 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": int(inst.get("ignore_flag", 0)),  # COCO: never a miss nor a match
            }
            if "mask" in inst:
                ann["segmentation"] = inst["mask"]
                ann["area"] = float(mask_utils.area(rle_bytes(inst["mask"])))
            annotations.append(ann)
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def class_counts(project_dir: str | Path) -> dict[str, tuple[int, int]]:
    """Per class: (objects, images containing it), over the whole project."""
    objects: Counter = Counter()
    images: Counter = Counter()
    for _, path in list_items(project_dir):
        try:
            ann = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read annotation {path}: {exc}") from None
        titles = [o.get("classTitle") for o in ann.get("objects") or []]
        objects.update(titles)
        images.update(set(titles))
    return {name: (objects[name], images[name]) for name in project_classes(project_dir)}
