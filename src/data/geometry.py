"""Supervisely's geometries (rectangle, polygon, bitmap) as mmdet's instances: a box and a COCO
RLE mask, without the SDK's geometry objects.

Masks become COCO RLE computed on the object's own crop (a bitmap's runs are shifted into the full
image, never drawn at full size): drawing every mask at full image size is what made the older app
slow on big projects. Apart from the reader of the project format because the tiles of sliced
training and the merge of sliced predictions encode masks the same way.

Conventions match Supervisely's: pixel coordinates are inclusive, so a rectangle from (left, top)
to (right, bottom) covers ``[left, right + 1) x [top, bottom + 1)``.
"""

from __future__ import annotations

import base64
import zlib

import cv2
import numpy as np
from pycocotools import mask as mask_utils

BOX_GEOMETRIES = ("rectangle", "polygon", "bitmap")
MASK_GEOMETRIES = ("polygon", "bitmap")


def decode_bitmap(data: str) -> np.ndarray:
    """Supervisely's bitmap encoding (base64 of zlib of a PNG) → bool mask."""
    raw = zlib.decompress(base64.b64decode(data))
    image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError("bitmap data is not a PNG image")
    if image.ndim == 3:
        image = image[:, :, 3] if image.shape[2] >= 4 else image[:, :, 0]
    return image.astype(bool)


def crop_to_rle(crop: np.ndarray, x0: int, y0: int, height: int, width: int) -> dict:
    """COCO RLE of an image-size mask that is zero except for ``crop`` placed at (x0, y0).

    RLE runs go column by column (Fortran order). Each column of the crop contributes its runs at
    offset ``x * height + y0``; runs are computed on the crop only, so the cost does not depend on
    the image size. Parts of the crop outside the image are cut off.
    """
    h, w = crop.shape
    # clip the crop to the image
    top, left = max(0, -y0), max(0, -x0)
    bottom, right = min(h, height - y0), min(w, width - x0)
    if bottom <= top or right <= left:
        return mask_utils.frPyObjects(
            {"counts": [height * width], "size": [height, width]}, height, width
        )
    crop = crop[top:bottom, left:right]
    x0, y0 = x0 + left, y0 + top
    h, w = crop.shape
    padded = np.zeros((w, h + 2), dtype=np.int8)  # one column per row, zero guard at both ends
    padded[:, 1:-1] = crop.T
    changes = np.flatnonzero(np.diff(padded, axis=1).ravel())
    if changes.size == 0:
        return mask_utils.frPyObjects(
            {"counts": [height * width], "size": [height, width]}, height, width
        )
    cols, rows = np.divmod(changes, h + 1)
    positions = (x0 + cols) * height + y0 + rows  # flat Fortran index in the full image
    starts, ends = positions[0::2], positions[1::2]
    # merge runs that touch across a column boundary (crop spanning the whole image height)
    keep = np.ones(starts.size, dtype=bool)
    keep[1:] = starts[1:] != ends[:-1]
    run_starts = starts[keep]
    run_ends = np.append(ends[np.flatnonzero(keep[1:])], ends[-1])
    counts = np.empty(run_starts.size * 2 + 1, dtype=np.int64)
    counts[0] = run_starts[0]
    counts[1:-1:2] = run_ends - run_starts
    counts[2:-1:2] = run_starts[1:] - run_ends[:-1]
    counts[-1] = height * width - run_ends[-1]
    rle = mask_utils.frPyObjects(
        {"counts": counts.tolist(), "size": [height, width]}, height, width
    )
    return rle


def polygon_rle(exterior: list, interiors: list, height: int, width: int) -> dict:
    """COCO RLE of a polygon, rasterized by pycocotools as in the SDK's COCO export; holes cut."""
    outer = mask_utils.frPyObjects(
        [np.asarray(exterior, dtype=float).ravel().tolist()], height, width
    )
    rle = mask_utils.merge(outer)
    holes = [np.asarray(h, dtype=float).ravel().tolist() for h in interiors if len(h) >= 3]
    if holes:
        full = mask_utils.decode(rle).astype(bool)
        full &= ~mask_utils.decode(
            mask_utils.merge(mask_utils.frPyObjects(holes, height, width))
        ).astype(bool)
        rle = mask_utils.encode(np.asfortranarray(full.astype(np.uint8)))
    return rle


def _clip_box(x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> list[float]:
    return [
        float(min(max(x1, 0), width)),
        float(min(max(y1, 0), height)),
        float(min(max(x2, 0), width)),
        float(min(max(y2, 0), height)),
    ]


def object_to_instance(
    obj: dict, height: int, width: int, with_mask: bool
) -> tuple[list[float], dict | None] | str:
    """One Supervisely object → (box [x1, y1, x2, y2], RLE or None), or the reason it is skipped."""
    geometry = obj.get("geometryType")
    if geometry not in BOX_GEOMETRIES:
        return f"geometry '{geometry}' is not used for training"
    if with_mask and geometry not in MASK_GEOMETRIES:
        return f"{geometry} has no mask (instance segmentation)"
    rle = None
    if geometry == "bitmap":
        bitmap = obj["bitmap"]
        mask = decode_bitmap(bitmap["data"])
        x0, y0 = (int(v) for v in bitmap["origin"])
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            return "empty bitmap"
        box = _clip_box(
            x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1, width, height
        )
        if with_mask:
            rle = crop_to_rle(mask, x0, y0, height, width)
    else:
        points = obj.get("points") or {}
        exterior = points.get("exterior") or []
        if (geometry == "rectangle" and len(exterior) != 2) or (
            geometry == "polygon" and len(exterior) < 3
        ):
            return f"malformed {geometry}"
        xs = [p[0] for p in exterior]
        ys = [p[1] for p in exterior]
        box = _clip_box(min(xs), min(ys), max(xs) + 1, max(ys) + 1, width, height)
        if with_mask:
            rle = polygon_rle(exterior, points.get("interior") or [], height, width)
    if box[2] - box[0] < 1 or box[3] - box[1] < 1:
        return "object outside the image"
    if rle is not None:
        if isinstance(rle.get("counts"), bytes):
            rle["counts"] = rle["counts"].decode("ascii")
        if mask_utils.area(rle_bytes(rle)) == 0:
            return "empty mask"
    return box, rle


def rle_bytes(rle: dict) -> dict:
    """``rle`` with its counts as bytes, as pycocotools reads them (JSON holds them as text)."""
    counts = rle["counts"]
    return {
        "size": rle["size"],
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }
