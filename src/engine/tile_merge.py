"""Put the detections of an image's tiles back together (numpy and pycocotools, no torch: the
validation metric and the ONNX ``predict`` share it).

Tiles overlap, so an object near a border is found in two or four tiles, whole in one and cut in
the others. Plain NMS keeps a cut box beside the whole one when they overlap less than its IoU
threshold (a box a third inside the tile has IoU 0.33 with the whole). So the merge is greedy
non-maximum *merging*, as SAHI's: best score first, each detection absorbs the lower ones of the
same class from *other* tiles whose intersection over the smaller box is at least ``thr``; the
merged box is their union, the mask their union, the score the best. Two detections of one tile
merge as NMS would, by IoU at least ``thr``: the model's own NMS is looser (RTMDet's at IoU 0.65),
and the duplicates it leaves are false positives scored high (AP50 0.183 so on the bench's run,
0.206 with them merged; SAHI's NMS 0.207).

Unlike SAHI's, given the tiles' ``windows`` the box is widened only when the kept one is cut by
its tile's border, and only by the absorbed boxes that agree with it where both tiles see the
image. A model's low-scored guesses (down to 0.001, hundreds a tile, as COCO's evaluation wants
them) include large boxes that contain a good small one: intersection over the smaller box takes
them for the same object, and their union turned the good box into a miss; and the union of two
boxes of an object whole in both tiles is a pixel or two wider than either, which costs a 12 px
object its IoU (issue 36, ``bench/sliced_vs_sahi.py``: AP50 0.114 with the union of all, 0.183
so; SAHI avoids the first only by dropping every detection under 0.3, or by NMS below 0.1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

from src.data.geometry import crop_to_rle
from src.data.tiles import windows

# detections kept per whole image after a merge: a large image holds many more objects than a tile
# (1000: the most that COCO's evaluation reads per image with mmdet's proposal_nums)
MERGED_MAX_PER_IMG = 1000


@dataclass
class Merged:
    """An image's merged detections, best first."""

    boxes: np.ndarray  # [N, 4] x1, y1, x2, y2 in the image's pixels
    scores: np.ndarray  # [N]
    labels: np.ndarray  # [N]
    masks: list[dict] | None = None  # COCO RLE at the image's size, with masks
    index: np.ndarray | None = None  # [N] each one's best detection, an index into the input


def shift_boxes(boxes: np.ndarray, dx: float, dy: float) -> np.ndarray:
    return np.asarray(boxes, np.float64).reshape(-1, 4) + np.array([dx, dy, dx, dy], np.float64)


def merge_tiles(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    tiles: np.ndarray,
    thr: float = 0.5,
    max_dets: int = MERGED_MAX_PER_IMG,
    masks: list[dict] | None = None,
    windows: np.ndarray | None = None,
) -> Merged:
    """Merge an image's detections (already in its pixels); ``tiles`` says which tile (any id;
    the whole image is one more) each came from. At most ``max_dets`` are kept.

    ``windows`` ([N, 4], each one's tile x1, y1, x2, y2 in the image): a kept box that reaches
    an inner border of its tile is widened (box and mask) by the absorbed ones that agree with
    it where both tiles see the image (IoU of the boxes clipped there at least ``thr``), as the
    whole of a cut object does; any other is kept as it is. Without ``windows`` every absorbed
    box widens it (SAHI's union)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    tiles = np.asarray(tiles).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    boxes, scores, labels, tiles = boxes[order], scores[order], labels[order], tiles[order]
    masks = [masks[i] for i in order] if masks is not None else None
    windows = np.asarray(windows, np.float64).reshape(-1, 4)[order] if windows is not None else None
    extent = windows[:, 2:].max(axis=0) if windows is not None and len(windows) else None
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(
        boxes[:, 3] - boxes[:, 1], 0, None
    )
    taken = np.zeros(len(scores), bool)
    out_boxes, out_idx, out_masks = [], [], []
    for i in range(len(scores)):
        if taken[i]:
            continue
        taken[i] = True
        rest = np.flatnonzero(~taken & (labels == labels[i]))
        smaller, iou = _overlaps(boxes[i], areas[i], boxes[rest], areas[rest])
        # another tile's box by intersection over the smaller (a piece of a cut object); one of
        # the same tile by IoU, as NMS (the model's own NMS is looser: RTMDet's at 0.65)
        overlap = np.where(tiles[rest] != tiles[i], smaller, iou)
        group = rest[overlap >= thr]
        taken[group] = True
        members = np.concatenate([[i], _widening(i, group, boxes, windows, extent, thr)])
        out_boxes.append([*boxes[members, :2].min(axis=0), *boxes[members, 2:].max(axis=0)])
        out_idx.append(i)
        if masks is not None:
            out_masks.append(_union([masks[m] for m in members]))
        if len(out_idx) == max_dets:
            break
    idx = np.asarray(out_idx, int)
    return Merged(
        boxes=np.asarray(out_boxes, np.float64).reshape(-1, 4),
        scores=scores[idx],
        labels=labels[idx],
        masks=out_masks if masks is not None else None,
        index=order[idx],
    )


def _widening(
    i: int,
    group: np.ndarray,
    boxes: np.ndarray,
    windows: np.ndarray | None,
    extent: np.ndarray | None,
    thr: float,
) -> np.ndarray:
    """Of the boxes ``group`` that box ``i`` absorbed, those that widen it: all of them without
    ``windows`` (SAHI's union); else none unless box ``i`` is cut by an inner border of its tile,
    and then only those that agree with it where both tiles see the image."""
    if windows is None:
        return group
    if not _touches_inner_border(boxes[i], windows[i], extent):
        return group[:0]
    return group[_agree_in_common_window(boxes[i], windows[i], boxes[group], windows[group], thr)]


def _overlaps(
    box: np.ndarray, area: float, others: np.ndarray, other_areas: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Intersection over the smaller box, and IoU, of ``box`` with each of ``others``."""
    w = np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])
    h = np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    smaller = inter / np.maximum(np.minimum(area, other_areas), 1e-9)
    return smaller, inter / np.maximum(area + other_areas - inter, 1e-9)


def _touches_inner_border(box: np.ndarray, window: np.ndarray, extent: np.ndarray) -> bool:
    """Whether ``box`` reaches (within a pixel) an edge of its tile that is not the image's:
    what an object cut by that edge looks like there."""
    low = (box[:2] <= window[:2] + 1) & (window[:2] > 0)
    high = (box[2:] >= window[2:] - 1) & (window[2:] < extent)
    return bool(low.any() or high.any())


def _agree_in_common_window(
    box: np.ndarray, window: np.ndarray, others: np.ndarray, other_windows: np.ndarray, thr: float
) -> np.ndarray:
    """Whether each of ``others`` and ``box``, clipped to the window both of their tiles see,
    overlap by IoU ``thr`` or more there."""
    common = np.concatenate(
        [
            np.maximum(window[:2], other_windows[:, :2]),
            np.minimum(window[2:], other_windows[:, 2:]),
        ],
        axis=1,
    )
    a = np.clip(box, np.tile(common[:, :2], 2), np.tile(common[:, 2:], 2))
    b = np.clip(others, np.tile(common[:, :2], 2), np.tile(common[:, 2:], 2))
    w = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0])
    h = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    return inter >= thr * np.maximum(area_a + area_b - inter, 1e-9)


def _union(rles: list[dict]) -> dict:
    if len(rles) == 1:
        return rles[0]
    merged = mask_utils.merge([_as_bytes(r) for r in rles], intersect=False)
    return merged


def _as_bytes(rle: dict) -> dict:
    counts = rle["counts"]
    return {
        "size": rle["size"],
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }


def tile_rle_to_image(rle: dict, dx: int, dy: int, height: int, width: int) -> dict:
    """A tile's mask (COCO RLE at the tile's size) as an RLE of the whole image: the runs are
    computed on the tile's crop, never on a full-size array."""
    mask = mask_utils.decode(_as_bytes(rle)).astype(bool)
    return crop_to_rle(mask, dx, dy, height, width)


# a detector: images (BGR arrays) -> per image (boxes [N, 4], scores [N], labels [N]) in its pixels
Detect = Callable[[list[np.ndarray]], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]


def predict_sliced(
    detect: Detect,
    image: np.ndarray,
    size: int,
    overlap: float = 0.2,
    full_image: bool = True,
    batch: int = 8,
    thr: float = 0.5,
    max_dets: int = MERGED_MAX_PER_IMG,
) -> Merged:
    """Sliced inference on one large image, as a sliced run validates: its tiles (and the whole
    image, downscaled by the detector's own resize, when ``full_image``) through ``detect`` in
    batches, moved into the image's pixels and merged. A ``detect`` that also gives masks (a
    fourth element: per detection a boolean array at its crop's size) gets them merged too, as
    COCO RLE at the image's size (pre-labelling with an instance segmentation run)."""
    height, width = image.shape[:2]
    tiles = windows(width, height, size, overlap)
    parts = [(t, image[t[1] : t[3], t[0] : t[2]]) for t in tiles]
    if full_image and len(tiles) > 1:
        parts.append(((0, 0, width, height), image))
    boxes, scores, labels, sources, tiles_of, masks = [], [], [], [], [], []
    for start in range(0, len(parts), batch):
        chunk = parts[start : start + batch]
        found = detect([crop for _, crop in chunk])
        for n, (window, _), (b, s, lab, *m) in zip(
            range(start, start + len(chunk)), chunk, found, strict=True
        ):
            for mask in m[0] if m else ():  # a tile's mask into the image's pixels
                masks.append(crop_to_rle(mask, window[0], window[1], height, width))
            boxes.append(shift_boxes(b, window[0], window[1]))
            scores.append(np.asarray(s, np.float64).reshape(-1))
            labels.append(np.asarray(lab).reshape(-1))
            sources.append(np.full(len(scores[-1]), n))
            tiles_of.append(np.tile(np.asarray(window, np.float64), (len(scores[-1]), 1)))
    if not boxes:
        return Merged(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), index=np.zeros(0, int))
    return merge_tiles(
        np.concatenate(boxes), np.concatenate(scores), np.concatenate(labels),
        np.concatenate(sources), thr=thr, max_dets=max_dets, windows=np.concatenate(tiles_of),
        masks=masks if len(masks) == sum(len(s) for s in scores) and masks else None,
    )  # fmt: skip
