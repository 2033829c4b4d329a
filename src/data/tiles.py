"""Sliced training and evaluation: a split's large images as overlapping tiles.

Aerial, document and inspection images are many thousand pixels wide with objects of a few tens:
resized to the model's input they vanish. Here each image is cut into tiles of ``size`` px that
overlap by a fraction, and a tile is an image of the split with its objects clipped to it (boxes
and masks). An object cut so that less than ``min_visible`` of it is in the tile is dropped or
marked as an ignore region (``ignore_flag``: never trained as an object, never counted as a miss),
as ``partial`` says. For training, tiles without objects are kept at the fraction ``empty`` (the
same tiles every epoch: a hash of the image and window decides); validation keeps every tile, so
that its merged predictions cover each image whole. ``full_image`` keeps each image too, whole,
downscaled by the pipeline like any other.

Cost: the data list is computed from the split's instances (no pixel read; cached like the split,
``src.data.reader.load_split``). The tile files are written lazily, the first time a tile is
loaded, into the cache (``<cache>/tiles/<image digest>/``): all of an image's tiles at once, under
a lock, so that one decode of a large image serves all its tiles and loader workers never write
the same file twice. An image no larger than a tile is its own single tile and its file is used
as it is.

This module imports neither mmdet nor torch: the dry run and the UI use it too.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import logging
import os
import pickle
import shutil
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from src.config.params import TrainParams, slicing_problems
from src.data.reader import crop_to_rle
from src.runs.atomic_files import atomic_path

logger = logging.getLogger(__name__)

_TILES_VERSION = 1  # bump when the tiled data list's format changes


@dataclass(frozen=True)
class Slicing:
    """How a split is cut, as the config's ``slicing`` dict spells it (``SuperviselyDataset``)."""

    size: int
    # the defaults are the settings' (one place: TrainParams' slice_* fields)
    overlap: float = TrainParams.slice_overlap
    full_image: bool = TrainParams.slice_full_image
    empty: float = TrainParams.slice_empty
    min_visible: float = TrainParams.slice_min_visible
    partial: str = TrainParams.slice_partial

    @classmethod
    def of(cls, value: dict | None) -> Slicing | None:
        """From the config's dict (None or a size of 0: no slicing); unknown keys refused."""
        if not value or not int(value.get("size") or 0):
            return None
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(
                f"slicing has no setting {', '.join(unknown)}: it takes {sorted(known)}"
            )
        slicing = cls(**dict(value))
        problems = slicing.problems()
        if problems:
            raise ValueError("slicing: " + "; ".join(problems))
        return slicing

    def problems(self) -> list[str]:
        return slicing_problems(self.as_cfg())

    def as_cfg(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TileStats:
    """What slicing made of a split, for the dry run and the log."""

    images: int = 0
    tiles: int = 0  # in the split (the kept empty ones included)
    empty_dropped: int = 0
    full_images: int = 0  # whole images kept besides their tiles
    # "ignore"/"drop" -> objects cut below the visible fraction
    cut_objects: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"cut_objects": dict(self.cut_objects)}


def windows(width: int, height: int, size: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """The tiles of an image, row by row: (x1, y1, x2, y2). A stride of ``size * (1 - overlap)``
    and a last tile flush with the edge; a side no longer than ``size`` is one tile."""
    stride = max(1, round(size * (1.0 - overlap)))

    def starts(length: int) -> list[int]:
        if length <= size:
            return [0]
        found = list(range(0, length - size, stride))
        return [*found, length - size]

    return [
        (x, y, min(x + size, width), min(y + size, height))
        for y in starts(height)
        for x in starts(width)
    ]


def image_digest(path: str | Path) -> str:
    """Names an image's tile folder: its path, size and modification time (a changed image
    gets new tiles)."""
    st = os.stat(path)
    return hashlib.sha256(
        f"{Path(path).resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()
    ).hexdigest()[:24]


def tile_file(folder: Path, window: tuple[int, int, int, int]) -> Path:
    x1, y1, x2, y2 = window
    return folder / f"{x1}_{y1}_{x2 - x1}x{y2 - y1}.png"


@dataclass
class TiledSplit:
    """A split cut into tiles: its data list, and what the metric needs to put tiles back.

    ``sources``: a tile's ``img_id`` → [the image's ``img_id``, x offset, y offset] (the whole
    images kept besides their tiles map to themselves)."""

    data_list: list[dict]
    sources: dict[int, list[int]]
    stats: TileStats
    # an image's path → (the folder of its tiles, the windows this split has of it)
    cuts: dict[str, tuple[str, list[list[int]]]] = field(default_factory=dict)


def slice_split(
    data_list: list[dict], slicing: Slicing, tiles_dir: str | Path, train: bool
) -> TiledSplit:
    """The tiles of a split's images (``data_list`` as ``src.data.reader.read_instances`` makes
    it), numbered after its last image."""
    stats = TileStats(images=len(data_list))
    out: list[dict] = []
    sources: dict[int, list[int]] = {}
    cuts: dict[str, tuple[str, list[list[int]]]] = {}
    next_id = max((info["img_id"] for info in data_list), default=0) + 1
    for info in data_list:
        width, height = info["width"], info["height"]
        if width <= slicing.size and height <= slicing.size:
            out.append(info)  # its own single tile
            sources[info["img_id"]] = [info["img_id"], 0, 0]
            stats.tiles += 1
            continue
        if slicing.full_image:
            out.append(info)
            sources[info["img_id"]] = [info["img_id"], 0, 0]
            stats.full_images += 1
        folder = Path(tiles_dir) / image_digest(info["img_path"])
        kept_windows = []
        instances = _Instances(info["instances"], height, width)
        for window in windows(width, height, slicing.size, slicing.overlap):
            tile_instances = instances.clip(window, slicing, stats.cut_objects)
            has_objects = any(not i["ignore_flag"] for i in tile_instances)
            if train and not has_objects and not _kept(info["img_path"], window, slicing.empty):
                stats.empty_dropped += 1
                continue
            x1, y1, x2, y2 = window
            out.append(
                {
                    "img_path": str(tile_file(folder, window)),
                    "img_id": next_id,
                    "item_name": f"{info['item_name']}@{x1},{y1}",
                    "height": y2 - y1,
                    "width": x2 - x1,
                    "instances": tile_instances,
                    "tile": [x1, y1, x2, y2],
                    "source_path": info["img_path"],
                }
            )
            sources[next_id] = [info["img_id"], x1, y1]
            kept_windows.append(list(window))
            next_id += 1
            stats.tiles += 1
        cuts[info["img_path"]] = (str(folder), kept_windows)
    return TiledSplit(out, sources, stats, cuts)


def _kept(img_path: str, window: tuple, fraction: float) -> bool:
    """Whether an empty tile is kept: the same answer every epoch and run (a hash, not a draw)."""
    if fraction >= 1.0:
        return True
    digest = hashlib.sha256(f"{Path(img_path).name}{window}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


class _Instances:
    """An image's instances, clipped to one window after another (each mask decoded once)."""

    def __init__(self, instances: list[dict], height: int, width: int) -> None:
        self.instances = instances
        self.height, self.width = height, width
        self.boxes = np.asarray([i["bbox"] for i in instances], np.float64).reshape(-1, 4)
        self._crops: dict[int, tuple[np.ndarray, int, int]] = {}

    def clip(self, window: tuple, slicing: Slicing, cut: Counter) -> list[dict]:
        x1, y1, x2, y2 = window
        b = self.boxes
        inter_w = np.minimum(b[:, 2], x2) - np.maximum(b[:, 0], x1)
        inter_h = np.minimum(b[:, 3], y2) - np.maximum(b[:, 1], y1)
        out = []
        for n in np.flatnonzero((inter_w >= 1) & (inter_h >= 1)):
            source = self.instances[n]
            tile = self._clip_one(int(n), source, window)
            if tile is None:
                continue
            instance, visible = tile
            if source.get("ignore_flag"):
                instance["ignore_flag"] = 1  # a region to ignore stays one, wherever it is cut
            elif visible < slicing.min_visible:
                cut[slicing.partial] += 1
                if slicing.partial == "drop":
                    continue
                instance["ignore_flag"] = 1
            out.append(instance)
        return out

    def _clip_one(self, n: int, source: dict, window: tuple) -> tuple[dict, float] | None:
        x1, y1, x2, y2 = window
        bx1, by1, bx2, by2 = source["bbox"]
        instance = {"bbox_label": source["bbox_label"], "ignore_flag": int(source["ignore_flag"])}
        if "mask" not in source:
            box = [max(bx1, x1) - x1, max(by1, y1) - y1, min(bx2, x2) - x1, min(by2, y2) - y1]
            area = max((bx2 - bx1) * (by2 - by1), 1e-9)
            instance["bbox"] = [float(v) for v in box]
            return instance, (box[2] - box[0]) * (box[3] - box[1]) / area
        crop, cx, cy = self._crop(n, source)
        total = int(crop.sum())
        part = crop[max(y1 - cy, 0) : max(y2 - cy, 0), max(x1 - cx, 0) : max(x2 - cx, 0)]
        if total == 0 or not part.any():
            return None
        rows = np.flatnonzero(part.any(axis=1))
        cols = np.flatnonzero(part.any(axis=0))
        left, top = max(x1 - cx, 0) + cx - x1, max(y1 - cy, 0) + cy - y1
        instance["bbox"] = [float(left + cols[0]), float(top + rows[0]),
                            float(left + cols[-1] + 1), float(top + rows[-1] + 1)]  # fmt: skip
        rle = crop_to_rle(crop, cx - x1, cy - y1, y2 - y1, x2 - x1)
        if isinstance(rle.get("counts"), bytes):
            rle["counts"] = rle["counts"].decode("ascii")
        instance["mask"] = rle
        return instance, int(part.sum()) / total

    def _crop(self, n: int, source: dict) -> tuple[np.ndarray, int, int]:
        """The instance's mask within its box (decoded once per image): (crop, x, y)."""
        if n not in self._crops:
            rle = dict(source["mask"])
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
            full = mask_utils.decode(rle)
            bx1, by1, bx2, by2 = source["bbox"]
            x1, y1 = int(np.floor(bx1)), int(np.floor(by1))
            x2, y2 = int(np.ceil(bx2)), int(np.ceil(by2))
            self._crops[n] = (full[y1:y2, x1:x2].astype(bool), x1, y1)
        return self._crops[n]


def load_tiled_split(
    data_list: list[dict],
    slicing: Slicing,
    cache_dir: str | Path | None,
    split_key: str,
    train: bool,
) -> TiledSplit:
    """:func:`slice_split` through the cache (keyed by the split's own cache key and the
    slicing), its tiles under ``<cache>/tiles``. Without a cache (the CLI's ``--no-cache``) the
    tiles go to a temporary folder that is removed when the process ends."""
    if not cache_dir:
        scratch = tempfile.mkdtemp(prefix="sly_tiles_")
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        return slice_split(data_list, slicing, Path(scratch) / "tiles", train)
    tiles_dir = Path(cache_dir) / "tiles"
    key = (_TILES_VERSION, split_key, sorted(slicing.as_cfg().items()), train, str(tiles_dir))
    path = Path(cache_dir) / f"tiles_{hashlib.sha256(repr(key).encode()).hexdigest()[:32]}.pkl"
    if path.is_file():
        try:
            with open(path, "rb") as f:
                return pickle.load(f)
        except Exception as exc:  # a broken cache file is rebuilt, never trusted
            logger.warning("tile cache %s is unreadable (%s): rebuilding it", path, exc)
    tiled = slice_split(data_list, slicing, tiles_dir, train)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        pickle.dump(tiled, f, protocol=pickle.HIGHEST_PROTOCOL)
    return tiled


def cut_tiles(source_path: str, folder: str | Path, cut: list[list[int]]) -> int:
    """Write the tile files of one image that are missing (its windows ``cut`` into ``folder``,
    as :func:`slice_split` named them); returns how many were written. One decode of the image
    for all of them, under a lock per image: loader workers asking for tiles of the same image
    wait for one another instead of cutting it twice."""
    folder = Path(folder)
    missing = [w for w in cut if not tile_file(folder, tuple(w)).is_file()]
    if not missing:
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = [w for w in cut if not tile_file(folder, tuple(w)).is_file()]
        if not missing:
            return 0
        # as mmcv's LoadImageFromFile decodes it (cv2 backend, colour, EXIF orientation applied)
        image = cv2.imdecode(np.fromfile(source_path, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"{source_path} is not an image OpenCV can read")
        for x1, y1, x2, y2 in missing:
            ok, encoded = cv2.imencode(
                ".png", image[y1:y2, x1:x2], [cv2.IMWRITE_PNG_COMPRESSION, 1]
            )
            if not ok:
                raise OSError(f"cannot encode a tile of {source_path}")
            with atomic_path(tile_file(folder, (x1, y1, x2, y2))) as tmp:
                Path(tmp).write_bytes(encoded.tobytes())
    return len(missing)
