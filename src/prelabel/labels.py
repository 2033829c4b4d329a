"""Predictions as Supervisely annotations: the copy's meta (the run's classes, the confidence tag)
and each detection as an object, a rectangle for detection, a bitmap for instance segmentation.

A class the project already has is used as it is (its colour kept) when its shape can hold the
prediction ("any geometry" or the same shape); another shape is refused before anything is
written: a polygon class would get bitmaps the platform's tools and the SDK refuse for it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from src.core.errors import RequestError

CONFIDENCE_TAG = "confidence"  # each predicted object's score (a number tag)
ANY_SHAPE = "any"
NUMBER = "any_number"


def prelabel_meta(
    meta: dict[str, Any], classes: list[str], shape: str, colors: dict[str, list[int]]
) -> dict[str, Any]:
    """``meta`` (a project's ``meta.json``) with the run's classes that it lacks (``shape``,
    the run's colours) and the ``confidence`` tag; a ``RequestError`` naming each class of the
    same name with another shape, or a ``confidence`` tag that does not hold numbers."""
    import supervisely as sly

    project_meta = sly.ProjectMeta.from_json(meta)
    wrong = [
        f"{name} ({own.geometry_type.geometry_name()})"
        for name in classes
        if (own := project_meta.get_obj_class(name)) is not None
        and own.geometry_type.geometry_name() not in (shape, ANY_SHAPE)
    ]
    if wrong:
        raise RequestError(
            f"the project has classes of the run's names with another shape: {', '.join(wrong)}; "
            f"the run predicts {shape}s: rename those classes or make them '{shape}' or 'any "
            "geometry' in a copy of the project first"
        )
    geometry = sly.Bitmap if shape == "bitmap" else sly.Rectangle
    added = [
        sly.ObjClass(name, geometry, color=colors.get(name))
        for name in classes
        if project_meta.get_obj_class(name) is None
    ]
    project_meta = project_meta.add_obj_classes(added)
    tag = project_meta.get_tag_meta(CONFIDENCE_TAG)
    if tag is not None and tag.value_type != NUMBER:
        raise RequestError(
            f"the project has a tag '{CONFIDENCE_TAG}' of type {tag.value_type}: pre-labelling "
            "tags each predicted object with its score, a number; rename that tag first"
        )
    if tag is None:
        project_meta = project_meta.add_tag_meta(
            sly.TagMeta(CONFIDENCE_TAG, sly.TagValueType.ANY_NUMBER,
                        applicable_to=sly.TagApplicableTo.OBJECTS_ONLY)
        )  # fmt: skip
    return project_meta.to_json()


def predicted_objects(found: Any, classes: list[str], height: int, width: int) -> list[dict]:
    """Each detection of ``found`` (``src.prelabel.model.Found``) as an annotation object: its
    class, a rectangle (or the bitmap of its mask), and its score in the ``confidence`` tag. A
    box or mask with nothing left inside the image is passed over."""
    objects = []
    for i, (box, score, label) in enumerate(
        zip(found.boxes, found.scores, found.labels, strict=True)
    ):
        tags = [{"name": CONFIDENCE_TAG, "value": round(float(score), 4)}]
        if found.masks is not None:
            geometry = _bitmap(found.masks[i])
        else:
            geometry = _rectangle(box, height, width)
        if geometry is not None:
            objects.append({"classTitle": classes[int(label)], "tags": tags, **geometry})
    return objects


def _rectangle(box: np.ndarray, height: int, width: int) -> dict | None:
    """A box in the SDK's rectangle JSON (integer pixels, inclusive), clipped to the image."""
    x1, y1 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x2, y2 = min(width - 1, int(np.ceil(box[2])) - 1), min(height - 1, int(np.ceil(box[3])) - 1)
    if x2 < x1 or y2 < y1:
        return None
    return {
        "geometryType": "rectangle",
        "points": {"exterior": [[x1, y1], [x2, y2]], "interior": []},
    }


def _bitmap(rle: dict) -> dict | None:
    """A COCO RLE mask as the SDK's bitmap JSON (its crop and origin), None when empty."""
    import supervisely as sly

    mask = mask_utils.decode(rle).astype(bool)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    origin = sly.PointLocation(int(rows[0]), int(cols[0]))
    geometry = sly.Bitmap(crop, origin=origin).to_json()
    return {"geometryType": "bitmap", "bitmap": geometry["bitmap"]}
