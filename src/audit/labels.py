"""A project's labels as the audit judges them: each object's box and class, and where it is in
its annotation file, so that a suspect can be tagged on the very object it accuses.

The reader (``src.data.reader``) gives the instances a model trains on, but not which object of
the annotation each one came from; here every object keeps its index in ``objects``. The same
rules apply: only the run's classes are labels, objects named by the run's ``ignore`` (their
class or a tag) are ignore regions, and a geometry without a box (a point) is passed over.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.data.geometry import object_to_instance
from src.data.reader import DatasetError, image_path, list_items

# Supervisely's class shapes a rectangle may be drawn in (``any``: AnyGeometry)
RECTANGLE_SHAPES = ("rectangle", "any")


@dataclass
class ItemLabels:
    """One image's labels: boxes ``[x1, y1, x2, y2]`` (edges), class indices in the run's
    classes, and each label's index in the annotation's ``objects``."""

    item: str  # dataset/name, as the reader and the splits name items
    dataset: str
    ann_path: Path
    image: Path
    height: int
    width: int
    boxes: list[list[float]] = field(default_factory=list)
    classes: list[int] = field(default_factory=list)
    objects: list[int] = field(default_factory=list)
    ignore: list[list[float]] = field(default_factory=list)


def _ignored(obj: dict, ignore: set[str]) -> bool:
    """Whether the object is an ignore region: its class or one of its tags is named."""
    if obj.get("classTitle") in ignore:
        return True
    return any(t.get("name") in ignore for t in obj.get("tags") or [])


def read_item(item: str, ann_path: Path, classes: list[str], ignore: set[str]) -> ItemLabels:
    """One item's labels (see :class:`ItemLabels`); an unreadable file is a ``DatasetError``."""
    try:
        ann = json.loads(ann_path.read_text(encoding="utf-8"))
        height, width = int(ann["size"]["height"]), int(ann["size"]["width"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"cannot read annotation {ann_path}: {exc}") from None
    labels = ItemLabels(item, item.rsplit("/", 1)[0], ann_path, image_path(ann_path), height, width)
    index_of = {name: i for i, name in enumerate(classes)}
    for k, obj in enumerate(ann.get("objects") or []):
        ignored = _ignored(obj, ignore)
        if not ignored and obj.get("classTitle") not in index_of:
            continue
        try:
            found = object_to_instance(obj, height, width, False)
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"cannot read an object in {ann_path}: {exc}") from None
        if isinstance(found, str):  # no box (a point, an empty bitmap)
            continue
        if ignored:
            labels.ignore.append(found[0])
            continue
        labels.boxes.append(found[0])
        labels.classes.append(index_of[obj["classTitle"]])
        labels.objects.append(k)
    return labels


def read_labels(
    project_dir: str | Path, items: list[str], classes: list[str], ignore: list[str] | tuple = ()
) -> dict[str, ItemLabels]:
    """The labels of ``items`` (``dataset/name``) of the project, by item."""
    wanted = set(items)
    found = {
        name: read_item(name, path, classes, set(ignore))
        for name, path in list_items(project_dir)
        if name in wanted
    }
    if missing := sorted(wanted - set(found)):
        raise DatasetError(f"{len(missing)} items are not in {project_dir}, e.g. {missing[:3]}")
    return found


def box_object(class_title: str, box: list[float], shape: str, tags: list[dict]) -> dict[str, Any]:
    """A Supervisely object covering ``box`` (edges) in a class of ``shape``: a rectangle where
    the class takes one, else the box's four corners as a polygon (a polygon class), else a
    filled bitmap of the box (a bitmap class). Pixel coordinates are inclusive in Supervisely."""
    x1, y1 = round(box[0]), round(box[1])
    x2, y2 = max(x1, round(box[2]) - 1), max(y1, round(box[3]) - 1)
    obj: dict[str, Any] = {"classTitle": class_title, "description": "", "tags": tags}
    if shape in RECTANGLE_SHAPES:
        obj.update(geometryType="rectangle", points={"exterior": [[x1, y1], [x2, y2]]})
        obj["points"]["interior"] = []
    elif shape == "bitmap":
        import numpy as np

        from src.data.eval_projects import encode_bitmap

        mask = np.zeros((y2 + 1, x2 + 1), dtype=bool)
        mask[y1:, x1:] = True
        data, origin = encode_bitmap(mask)
        obj.update(geometryType="bitmap", bitmap={"data": data, "origin": list(origin)})
    else:
        corners = [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]
        obj.update(geometryType="polygon", points={"exterior": corners, "interior": []})
    return obj
