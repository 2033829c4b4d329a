"""Ground truth and predictions as local Supervisely projects: the input of the SDK's evaluators.

The platform's Model Benchmark compares two projects (ground truth, and the model's predictions
with a ``confidence`` tag on every object) through ``sly.nn.benchmark``'s evaluators, which read
them back with their own converter (``sly2coco``). Both projects are written here from the very
instances the model was validated on (``src.data.reader``) and from mmdet's COCO-format
predictions, so the numbers are the SDK's, computed on what the model saw.

Geometry round-trips exactly. Supervisely pixel coordinates are inclusive (``sly2coco`` reads a
rectangle as ``width = right - left + 1``), mmdet's are edges (``width = x2 - x1``): a box
``[x, y, w, h]`` is written as ``left = x``, ``right = x + w - 1``. Coordinates stay floats
(``sly2coco`` reads them as given), so the SDK's COCO data are the boxes mmdet scored; masks are
written as bitmaps, which ``sly2coco`` turns back into the same RLE. The images are linked, not
copied (the evaluators only list them).
"""

from __future__ import annotations

import base64
import json
import os
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

CONFIDENCE_TAG = "confidence"  # the tag sly2coco reads a prediction's score from


def encode_bitmap(mask: np.ndarray) -> tuple[str, tuple[int, int]] | None:
    """A full-image bool mask → Supervisely's bitmap (base64 of zlib of a PNG of the mask's
    bounding crop) and its origin (x, y); None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    ok, png = cv2.imencode(".png", mask[y0:y1, x0:x1].astype(np.uint8) * 255)
    if not ok:
        raise ValueError("cannot encode a mask as PNG")
    return base64.b64encode(zlib.compress(png.tobytes())).decode(), (int(x0), int(y0))


def _rle(segmentation: dict) -> dict:
    counts = segmentation["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        height, width = segmentation["size"]
        return mask_utils.frPyObjects(segmentation, height, width)
    return {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str)
            else counts}  # fmt: skip


def _object(
    oid: int, class_name: str, box: list[float], segmentation: dict | None, score: float | None
) -> dict[str, Any] | None:
    """One Supervisely object: a bitmap when a mask is given, else a rectangle."""
    tags = [] if score is None else [{"name": CONFIDENCE_TAG, "value": float(score)}]
    obj: dict[str, Any] = {"id": oid, "classTitle": class_name, "tags": tags}
    if segmentation is not None:
        encoded = encode_bitmap(mask_utils.decode(_rle(segmentation)).astype(bool))
        if encoded is None:
            return None
        data, origin = encoded
        obj.update(geometryType="bitmap", bitmap={"data": data, "origin": list(origin)})
        return obj
    x, y, w, h = (float(v) for v in box)
    obj.update(
        geometryType="rectangle",
        points={"exterior": [[x, y], [x + w - 1, y + h - 1]], "interior": []},
    )
    return obj


def _meta(classes: list[str], segmentation: bool) -> dict[str, Any]:
    shape = "bitmap" if segmentation else "rectangle"
    return {
        "classes": [{"title": c, "shape": shape, "color": "#FF0000"} for c in classes],
        "tags": [{"name": CONFIDENCE_TAG, "value_type": "any_number", "color": "#00FF00"}],
    }


def _link(source: str, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        target.symlink_to(os.path.abspath(source))


def _annotation(image: dict, objects_of: dict[int, list[dict]]) -> dict[str, Any]:
    """The Supervisely annotation of one of ``images`` (see :func:`_write_project`)."""
    return {
        "size": {"height": image["height"], "width": image["width"]},
        "tags": [],
        "description": "",
        "objects": objects_of.get(image["id"], []),
    }


def _write_project(
    root: Path,
    images: list[dict],
    objects_of: dict[int, list[dict]],
    meta: dict[str, Any],
) -> Path:
    """``images``: id, item_name (``dataset/name``, nested datasets flattened), size, img_path."""
    root.mkdir(parents=True)
    (root / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    for image in images:
        dataset, name = image["item_name"].rsplit("/", 1)
        ds = root / dataset.replace("/", "__")
        for sub in ("ann", "img", "img_info"):
            (ds / sub).mkdir(parents=True, exist_ok=True)
        ann = _annotation(image, objects_of)
        (ds / "ann" / f"{name}.json").write_text(json.dumps(ann), encoding="utf-8")
        info = {"id": image["id"], "name": name}
        (ds / "img_info" / f"{name}.json").write_text(json.dumps(info), encoding="utf-8")
        _link(image["img_path"], ds / "img" / name)
    return root


def _in_ignore_region(det: dict, ignored: dict[int, list]) -> bool:
    """Whether a prediction lies in an ignore region of its image (half of its box or more, as
    COCO matches a detection to a crowd region): then it is neither a match nor a false
    positive, and it is left out of the SDK evaluators' input, which know no ignore regions."""
    x, y, w, h = det["bbox"]
    for x1, y1, x2, y2 in ignored.get(det["image_id"], ()):
        overlap = max(0.0, min(x + w, x2) - max(x, x1)) * max(0.0, min(y + h, y2) - max(y, y1))
        if w > 0 and h > 0 and overlap >= 0.5 * w * h:
            return True
    return False


def write_eval_projects(
    data_list: list[dict],
    classes: list[str],
    predictions: Iterable[dict],
    root: str | Path,
    segmentation: bool,
    predictions_file: str | Path | None = None,
    max_detections: int | None = None,
) -> tuple[Path, Path]:
    """(ground truth, predictions) projects under ``root``, from a split's data list (the
    reader's instances) and mmdet's COCO-format results (``image_id``, ``category_id`` 1-based
    in ``classes`` order, ``bbox`` [x, y, w, h], ``score``, and ``segmentation`` RLE for masks).
    ``predictions_file``: both also as one JSON, ``{"meta": ..., "annotations": {item_name:
    prediction}, "ground_truth": {item_name: annotation}}`` (what the platform's report uploads:
    ``src.publish.platform_report``), with ``max_detections`` when given: the detections per image
    the evaluators are to read (a sliced run keeps more than their default 100)."""
    root = Path(root)
    images = [
        {k: info[k] for k in ("item_name", "height", "width", "img_path")} | {"id": info["img_id"]}
        for info in data_list
    ]
    ignored = {info["img_id"]: [i["bbox"] for i in info["instances"] if i.get("ignore_flag")]
               for info in data_list}  # fmt: skip
    predictions = [d for d in predictions if not _in_ignore_region(d, ignored)]
    gt, last_id = _ground_truth_objects(data_list, classes, segmentation)
    pred = _predicted_objects(predictions, classes, segmentation, last_id)
    meta = _meta(classes, segmentation)
    if predictions_file is not None:
        both = {
            "meta": meta,
            "annotations": {image["item_name"]: _annotation(image, pred) for image in images},
            "ground_truth": {image["item_name"]: _annotation(image, gt) for image in images},
        }
        if max_detections is not None:
            both["max_detections"] = int(max_detections)
        Path(predictions_file).write_text(json.dumps(both), encoding="utf-8")
    return (
        _write_project(root / "ground_truth", images, gt, meta),
        _write_project(root / "predictions", images, pred, meta),
    )


def _ground_truth_objects(
    data_list: list[dict], classes: list[str], segmentation: bool
) -> tuple[dict[int, list[dict]], int]:
    """Each image's objects (by image id) from the reader's instances, ignore regions left out;
    and the last object id given (the predictions' ids follow it)."""
    gt: dict[int, list[dict]] = {}
    oid = 0
    for info in data_list:
        for inst in info["instances"]:
            if inst.get("ignore_flag"):  # not an object to find (COCO's iscrowd)
                continue
            x1, y1, x2, y2 = inst["bbox"]
            oid += 1
            obj = _object(
                oid, classes[inst["bbox_label"]], [x1, y1, x2 - x1, y2 - y1],
                inst.get("mask") if segmentation else None, None,
            )  # fmt: skip
            if obj is not None:
                gt.setdefault(info["img_id"], []).append(obj)
    return gt, oid


def _predicted_objects(
    predictions: list[dict], classes: list[str], segmentation: bool, last_id: int
) -> dict[int, list[dict]]:
    """Each image's predicted objects (by image id) with their scores, numbered after
    ``last_id``."""
    pred: dict[int, list[dict]] = {}
    for oid, det in enumerate(predictions, start=last_id + 1):
        obj = _object(
            oid, classes[det["category_id"] - 1], det["bbox"],
            det.get("segmentation") if segmentation else None, det["score"],
        )  # fmt: skip
        if obj is not None:
            pred.setdefault(det["image_id"], []).append(obj)
    return pred
