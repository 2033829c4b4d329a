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

Cost: what a split will make is counted first (:func:`estimate_tiles`: from the images' sizes and
the objects' boxes, nothing cut, no window listed), and a split past the limits (``max_tiles``,
``max_gb``: the settings ``slice_max_tiles``, ``slice_max_gb``) is refused with the numbers. The
data list is computed from the split's instances (no pixel read; cached like the split,
``src.data.reader.load_split``). The tile files are written lazily, the first time a tile is
loaded, into the cache (``<cache>/tiles/<image digest>/``): all of an image's tiles at once, under
a lock, so that one decode of a large image serves all its tiles and loader workers never write
the same file twice. An image no larger than a tile is its own single tile and its file is used
as it is. A cut or a cache write that was killed leaves a temporary file: the next cut of that
image, and the next load of the split, remove it.

This module imports neither mmdet nor torch: the dry run and the UI use it too.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import logging
import os
import pickle
import re
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
from src.data.geometry import crop_to_rle
from src.data.reader import DatasetError
from src.runs.atomic_files import atomic_path

logger = logging.getLogger(__name__)

_TILES_VERSION = 2  # bump when the tiled data list's format changes
# the limits on what a split may make: checked, not part of what is cut (nor of the cache key)
LIMITS = ("max_tiles", "max_gb")


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
    max_tiles: int = TrainParams.slice_max_tiles
    max_gb: float = TrainParams.slice_max_gb

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

    def cut_key(self) -> list[tuple[str, Any]]:
        """What decides the tiles (the limits do not)."""
        return sorted((k, v) for k, v in self.as_cfg().items() if k not in LIMITS)


@dataclass
class TileStats:
    """What slicing made of a split, for the dry run and the log."""

    images: int = 0
    tiles: int = 0  # in the split (the kept empty ones included)
    empty_dropped: int = 0
    full_images: int = 0  # whole images kept besides their tiles
    files: int = 0  # tile files cut into the cache (an image no larger than a tile: none)
    bytes: int = 0  # at most, on disk (tile_file_bytes each)
    # "ignore"/"drop" -> objects cut below the visible fraction
    cut_objects: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"cut_objects": dict(self.cut_objects)}


def window_starts(length: int, size: int, overlap: float) -> list[int]:
    """Where the tiles along one side begin: a stride of ``size * (1 - overlap)`` and a last
    tile flush with the edge; a side no longer than ``size`` is one tile."""
    if length <= size:
        return [0]
    stride = max(1, round(size * (1.0 - overlap)))
    return [*range(0, length - size, stride), length - size]


def windows(width: int, height: int, size: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """The tiles of an image, row by row: (x1, y1, x2, y2) (:func:`window_starts` each way)."""
    return [
        (x, y, min(x + size, width), min(y + size, height))
        for y in window_starts(height, size, overlap)
        for x in window_starts(width, size, overlap)
    ]


_BLOCK = 4096  # a file takes whole blocks of the file system


def tile_file_bytes(width: int, height: int) -> int:
    """At most what one tile file takes on disk: a colour PNG never exceeds its raw rows (3 bytes
    a pixel and a filter byte a row) plus zlib's worst-case overhead (``deflateBound``), PNG's
    chunks (signature, IHDR, IEND, an IDAT header per 8 KiB), rounded up to whole blocks."""
    raw = height * (3 * width + 1)
    deflated = raw + (raw >> 12) + (raw >> 14) + (raw >> 25) + 13
    png = 8 + 25 + 12 + deflated + 12 * -(-deflated // 8192)
    return -(-png // _BLOCK) * _BLOCK


def estimate_tiles(data_list: list[dict], slicing: Slicing, train: bool) -> TileStats:
    """What :func:`slice_split` will make of a split, counted without cutting or listing a
    window: the tiles, the whole images kept, the files to cut and their bytes (at most). The
    tiles of an image come from its size; for training, a tile counts as one with objects when
    an object's box reaches into it (a cut object that slicing turns into an ignore region still
    counts), and the empty ones as their expected share (``empty``). ``cut_objects`` stays
    empty: it needs the clipping."""
    stats = TileStats(images=len(data_list))
    kept_empty = 0.0  # their expected number, summed over the images
    for info in data_list:
        width, height = info["width"], info["height"]
        if width <= slicing.size and height <= slicing.size:
            stats.tiles += 1  # its own single tile: its file as it is
            continue
        stats.full_images += int(slicing.full_image)
        xs = np.asarray(window_starts(width, slicing.size, slicing.overlap))
        ys = np.asarray(window_starts(height, slicing.size, slicing.overlap))
        total = len(xs) * len(ys)
        with_objects = _windows_with_objects(info, xs, ys, slicing.size) if train else total
        empty = (total - with_objects) * slicing.empty
        kept_empty += empty
        stats.tiles += with_objects
        stats.files += with_objects
        stats.empty_dropped += total - with_objects
        per_file = tile_file_bytes(min(slicing.size, width), min(slicing.size, height))
        stats.bytes += round((with_objects + empty) * per_file)
    kept = round(kept_empty)
    stats.tiles += kept
    stats.files += kept
    stats.empty_dropped -= kept
    return stats


def _windows_with_objects(info: dict, xs: np.ndarray, ys: np.ndarray, size: int) -> int:
    """How many of an image's windows an object's box reaches into by at least a pixel each way
    (as :meth:`_Instances.clip` finds them); ignore regions do not count."""
    x_ends = np.minimum(xs + size, info["width"])
    y_ends = np.minimum(ys + size, info["height"])
    hit = np.zeros((len(ys), len(xs)), bool)
    for instance in info["instances"]:
        if instance.get("ignore_flag"):
            continue
        bx1, by1, bx2, by2 = instance["bbox"]
        in_x = np.minimum(bx2, x_ends) - np.maximum(bx1, xs) >= 1
        in_y = np.minimum(by2, y_ends) - np.maximum(by1, ys) >= 1
        hit[np.ix_(in_y, in_x)] = True
    return int(hit.sum())


def limit_problem(stats: TileStats, slicing: Slicing, split: str) -> str | None:
    """Why a split that slicing would make as ``stats`` says is refused (None: within the
    limits), with the numbers and what to change."""
    over = []
    if stats.tiles > slicing.max_tiles:
        over.append(f"more than slice_max_tiles ({slicing.max_tiles:,})")
    if stats.bytes > slicing.max_gb * 1e9:
        over.append(f"more than slice_max_gb ({slicing.max_gb:g} GB)")
    if not over:
        return None
    return (
        f"the {split} split would be cut into {stats.tiles:,} tiles of {slicing.size} px (overlap "
        f"{slicing.overlap:g}) from {stats.images:,} images, at most {human_bytes(stats.bytes)} "
        f"of tile files in the cache: {' and '.join(over)}. Cut fewer: larger tiles "
        "or less overlap (--slice-size, --slice-overlap), fewer empty tiles (--slice-empty); or "
        "raise the limit (--slice-max-tiles / --slice-max-gb; the API's slice_max_tiles / "
        "slice_max_gb; slicing.max_tiles / slicing.max_gb in the config)"
    )


def human_bytes(count: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count:.0f} B"


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
        per_file = tile_file_bytes(min(slicing.size, width), min(slicing.size, height))
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
            stats.files += 1
            stats.bytes += per_file
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
    tiles go to a temporary folder that is removed when the process ends.

    Raises:
        DatasetError: the split would pass the limits (:func:`limit_problem`); nothing is cut
            or cached then."""
    problem = limit_problem(estimate_tiles(data_list, slicing, train), slicing, _split(train))
    if problem:
        raise DatasetError(problem)
    if not cache_dir:
        scratch = tempfile.mkdtemp(prefix="sly_tiles_")
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        return slice_split(data_list, slicing, Path(scratch) / "tiles", train)
    remove_stale_temporaries(cache_dir)
    tiles_dir = Path(cache_dir) / "tiles"
    key = (_TILES_VERSION, split_key, slicing.cut_key(), train, str(tiles_dir))
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


def _split(train: bool) -> str:
    return "train" if train else "val"


# ``src.runs.atomic_files.atomic_path``'s temporary files: ``.<name>.tmp<pid>_<thread>``
_TEMPORARY = re.compile(r"^\..+\.tmp(\d+)_\d+$")


def remove_stale_temporaries(folder: str | Path, *, any_writer: bool = False) -> int:
    """Remove the temporary files a killed writer left in ``folder`` (not its subfolders): those
    of processes that no longer run, or all of them (``any_writer``: the caller holds the lock
    every writer there takes). Returns how many were removed."""
    removed = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            found = _TEMPORARY.match(entry.name)
            if found and (any_writer or not _running(int(found.group(1)))):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    if removed:
        logger.info("%s: removed %d partial files left by an interrupted write", folder, removed)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


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
        remove_stale_temporaries(folder, any_writer=True)  # a cut that was killed
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
