"""A deterministic synthetic Supervisely project: shapes on textured backgrounds.

Three classes — ``square``, ``circle``, ``triangle`` — each object annotated as a rectangle,
polygon or bitmap (the class shape is "any geometry", as on real projects that mix tools). Written
with the SDK's own classes (``sly.Project``, ``Annotation``, ``Label``), so the layout is exactly
what the platform produces. Options add what tests need: nested datasets, objects touching the
border, tiny objects, images without objects and unsupported geometries — and the shapes and
files of real photos (:data:`REAL_WORLD_IMAGES`, :func:`make_real_world_project`): 16:9 and 4:3
landscape, portrait, tiny and ≥ 1920 px images, grayscale and RGBA, PNG and JPEG, JPEGs whose EXIF
orientation rotates them, because square demo images once hid a crash of the default model on
ordinary photos.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

CLASSES = ("square", "circle", "triangle")
COLORS = {"square": [230, 60, 60], "circle": [60, 200, 60], "triangle": [60, 90, 230]}


# (width, height) of the images the demo project cycles through when ``mixed_sizes`` is on: the
# aspect ratios of ordinary photos (16:9, 4:3, portrait 3:4 and 9:16, square) at sizes small enough
# that the first run stays fast on 2 cores.
MIXED_SIZES = ((448, 252), (384, 288), (288, 384), (256, 256), (252, 448), (400, 300))


@dataclass(frozen=True)
class ImageSpec:
    """One image as it lies on disk: displayed size, file format and pixel layout."""

    size: tuple[int, int]  # (width, height) as displayed, i.e. after EXIF orientation
    ext: str = ".png"  # .png or .jpg
    mode: str = "rgb"  # rgb, gray, rgba
    exif_rotated: bool = False  # stored rotated, with EXIF orientation 6 (JPEG only)


# What real projects hold, each kind twice (so both splits see it): see make_real_world_project.
REAL_WORLD_IMAGES: dict[str, list[ImageSpec]] = {
    "photos": [
        ImageSpec((1920, 1080), ".jpg"),  # 16:9, large
        ImageSpec((1280, 960), ".png"),  # 4:3
        ImageSpec((2048, 1536), ".jpg"),  # over 1920 px
    ],
    "photos/phone": [  # nested dataset: portraits as phones store them
        ImageSpec((720, 1280), ".jpg", exif_rotated=True),
        ImageSpec((600, 800), ".png"),
    ],
    "misc": [
        ImageSpec((48, 40), ".png"),  # tiny
        ImageSpec((60, 56), ".jpg"),  # tiny
        ImageSpec((320, 240), ".png", mode="gray"),
        ImageSpec((300, 400), ".jpg", mode="gray"),
        ImageSpec((400, 300), ".png", mode="rgba"),
        ImageSpec((1000, 180), ".png"),  # panorama strip
    ],
}


@dataclass
class DemoOptions:
    images: int = 160  # in all; a quarter goes to "val"
    seed: int = 0
    size: tuple[int, int] = (256, 256)  # (width, height)
    mixed_sizes: bool = False  # cycle through MIXED_SIZES instead of ``size``
    min_objects: int = 1
    max_objects: int = 4
    nested: bool = False  # add a nested dataset "train/extra"
    hard_cases: bool = False  # border-touching and tiny objects, empty images, a point object
    # objects' radius range in px (None: from the image's size), and the image files' format
    radius: tuple[int, int] | None = None
    ext: str = ".png"
    # where objects are placed: (x1, y1, x2, y2) of each image (None: anywhere), e.g. a cluster
    region: tuple[int, int, int, int] | None = None


# Large aerial-like images with small objects, for sliced training (``demo-project --large``):
# 4000x3000 JPEGs, 12 to 30 px objects.
LARGE_OPTIONS = dict(size=(4000, 3000), radius=(6, 15), min_objects=20, max_objects=40, ext=".jpg")


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Low-frequency color noise plus a gradient: enough texture that shapes are not trivial."""
    small = rng.integers(
        60, 190, size=(max(2, height // 32), max(2, width // 32), 3), dtype=np.uint8
    )
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    image += rng.integers(-12, 13, size=image.shape, dtype=np.int16)
    ramp = np.linspace(-20, 20, width, dtype=np.int16)[None, :, None]
    return np.clip(image + ramp, 0, 255).astype(np.uint8)


def _shape_mask(kind: str, cx: int, cy: int, r: int, height: int, width: int, angle: float):
    """Pixel mask and polygon points (x, y) of one shape."""
    mask = np.zeros((height, width), dtype=np.uint8)
    if kind == "circle":
        cv2.circle(mask, (cx, cy), r, 1, thickness=-1)
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        points = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)
    else:
        n = 4 if kind == "square" else 3
        t = angle + np.arange(n) * 2 * np.pi / n
        if kind == "square":
            t = np.pi / 4 + np.arange(4) * np.pi / 2  # axis-aligned
        points = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask.astype(bool), points


def _draw(image: np.ndarray, mask: np.ndarray, color: list[int], rng: np.random.Generator) -> None:
    shade = np.clip(np.array(color) + rng.integers(-25, 26, size=3), 0, 255)
    image[mask] = (0.85 * shade + 0.15 * image[mask]).astype(np.uint8)


# Written into every demo project: what it was generated with, so it can be reused or replaced.
DEMO_MARKER = ".demo_options.json"


def _prepare_directory(directory: Path, marker: dict) -> bool:
    """True when ``directory`` already holds this exact generated project (reuse it). A project
    generated here with other options is replaced; any other non-empty folder is refused."""
    if not directory.exists() or not any(directory.iterdir()):
        return False
    marker_file = directory / DEMO_MARKER
    if not marker_file.is_file():
        raise FileExistsError(
            f"{directory} is not empty and is not a generated demo project: choose a new directory"
        )
    try:
        if json.loads(marker_file.read_text()) == marker:
            return True
    except (OSError, ValueError):
        pass
    logger.info("%s was generated with other options: generating it again", directory)
    shutil.rmtree(directory)
    return False


def make_demo_project(directory: str | Path, options: DemoOptions | None = None) -> Path:
    """Write the project to ``directory`` and return its path. An empty or missing directory is
    filled; one holding the same generated project is reused as it is; one generated with other
    options is generated again; anything else is refused (never deleted)."""
    import supervisely as sly

    opts = options or DemoOptions()
    directory = Path(directory)
    marker = {"kind": "demo", **json.loads(json.dumps(asdict(opts)))}
    if _prepare_directory(directory, marker):
        logger.info("reusing the demo project in %s", directory)
        return directory
    rng = np.random.default_rng(opts.seed)

    obj_classes = [sly.ObjClass(name, sly.AnyGeometry, color=COLORS[name]) for name in CLASSES]
    meta = sly.ProjectMeta(obj_classes=sly.ObjClassCollection(obj_classes))
    if opts.hard_cases:
        meta = meta.add_obj_class(sly.ObjClass("keypoint", sly.Point, color=[255, 255, 0]))
    project = sly.Project(str(directory), sly.OpenMode.CREATE)
    project.set_meta(meta)

    n_val = max(1, opts.images // 4)
    plan = [("val", i) for i in range(n_val)] + [("train", i) for i in range(opts.images - n_val)]
    datasets = {"train": project.create_dataset("train"), "val": project.create_dataset("val")}
    if opts.nested:
        datasets["train/extra"] = project.create_dataset("extra", "train/datasets/extra")
        plan = [("train/extra" if s == "train" and i % 5 == 4 else s, i) for s, i in plan]

    for index, (split, _) in enumerate(plan):
        size = MIXED_SIZES[index % len(MIXED_SIZES)] if opts.mixed_sizes else opts.size
        image, labels = _image_with_objects(rng, meta, size, opts, index)
        ann = sly.Annotation((size[1], size[0]), labels=labels)
        datasets[split].add_item_np(f"img_{index:05d}{opts.ext}", image, ann=ann)
    (directory / DEMO_MARKER).write_text(json.dumps(marker))  # last: marks it complete
    logger.info("demo project with %d images written to %s", len(plan), directory)
    return directory


def _image_with_objects(rng: np.random.Generator, meta, size: tuple[int, int], opts, index: int):
    """An RGB image of ``size`` (width, height) with shapes drawn on it, and their labels."""
    import supervisely as sly

    width, height = size
    image = _background(rng, width, height)
    labels = []
    empty = opts.hard_cases and index % 7 == 3
    n_objects = 0 if empty else int(rng.integers(opts.min_objects, opts.max_objects + 1))
    occupied = np.zeros((height, width), dtype=bool)
    short = min(width, height)
    for k in range(n_objects):
        kind = CLASSES[int(rng.integers(0, 3))]
        low, high = opts.radius or (max(6, short // 14), max(7, short // 6))
        r = int(rng.integers(low, high + 1)) if opts.radius else int(rng.integers(low, high))
        r = min(r, max(3, short // 2 - 3))  # fits tiny images too
        if opts.hard_cases and k == 0 and index % 3 == 0:
            cx, cy = r // 2, int(rng.integers(r, max(r + 1, height - r)))  # cut by the border
        elif opts.hard_cases and k == 1 and index % 4 == 1:
            r = 3  # tiny
            cx, cy = int(rng.integers(10, width - 10)), int(rng.integers(10, height - 10))
        else:
            x1, y1, x2, y2 = opts.region or (0, 0, width, height)
            cx = int(rng.integers(x1 + r + 2, max(x1 + r + 3, x2 - r - 2)))
            cy = int(rng.integers(y1 + r + 2, max(y1 + r + 3, y2 - r - 2)))
        mask, points = _shape_mask(kind, cx, cy, r, height, width, float(rng.uniform(0, np.pi)))
        if (mask & occupied).sum() > 0.1 * mask.sum() or not mask.any():
            continue  # keep objects mostly apart so every one stays visible
        occupied |= mask
        _draw(image, mask, COLORS[kind], rng)
        geometry_kind = ("rectangle", "polygon", "bitmap")[int(rng.integers(0, 3))]
        if geometry_kind == "rectangle":
            ys, xs = np.nonzero(mask)
            geometry = sly.Rectangle(int(ys.min()), int(xs.min()), int(ys.max()), int(xs.max()))
        elif geometry_kind == "polygon":
            pts = np.clip(np.round(points), [0, 0], [width - 1, height - 1])
            geometry = sly.Polygon([sly.PointLocation(int(y), int(x)) for x, y in pts])
        else:
            geometry = sly.Bitmap(mask)
        labels.append(sly.Label(geometry, meta.get_obj_class(kind)))
    if opts.hard_cases and index % 5 == 2:
        labels.append(sly.Label(sly.Point(height // 2, width // 2), meta.get_obj_class("keypoint")))
    return image, labels


def write_image_file(path: str | Path, rgb: np.ndarray, spec: ImageSpec) -> Path:
    """Write ``rgb`` (as displayed) the way ``spec`` says a camera or an editor would store it."""
    from PIL import Image

    path = Path(path).with_suffix(spec.ext)
    if spec.mode == "gray":
        pixels = Image.fromarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    elif spec.mode == "rgba":
        alpha = np.full((*rgb.shape[:2], 1), 255, dtype=np.uint8)
        alpha[: rgb.shape[0] // 4] = 128  # a translucent band, as in exported screenshots
        pixels = Image.fromarray(np.concatenate([rgb, alpha], axis=2))  # 4 channels: RGBA
    else:
        pixels = Image.fromarray(rgb)
    if spec.exif_rotated:
        if spec.ext != ".jpg":
            raise ValueError("EXIF orientation is only written into JPEGs")
        # stored 90 degrees counter-clockwise; orientation 6 tells viewers to turn it back
        pixels = pixels.transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif[0x0112] = 6
        pixels.save(path, quality=92, exif=exif)
    elif spec.ext == ".jpg":
        pixels.save(path, quality=92)
    else:
        pixels.save(path)
    return path


def make_real_world_project(directory: str | Path, seed: int = 0, copies: int = 2) -> Path:
    """A project shaped like users' data (:data:`REAL_WORLD_IMAGES`), each kind ``copies``
    times, in nested datasets. Annotations are in the displayed frame, as the platform's tools
    make them."""
    import tempfile

    import supervisely as sly

    directory = Path(directory)
    marker = {"kind": "real-world", "seed": seed, "copies": copies}
    if _prepare_directory(directory, marker):
        return directory
    rng = np.random.default_rng(seed)
    obj_classes = [sly.ObjClass(name, sly.AnyGeometry, color=COLORS[name]) for name in CLASSES]
    meta = sly.ProjectMeta(obj_classes=sly.ObjClassCollection(obj_classes))
    project = sly.Project(str(directory), sly.OpenMode.CREATE)
    project.set_meta(meta)
    opts = DemoOptions(min_objects=1, max_objects=3)
    index = 0
    with tempfile.TemporaryDirectory() as tmp:
        for path, specs in REAL_WORLD_IMAGES.items():
            parent, _, name = path.rpartition("/")
            if parent:
                dataset = project.create_dataset(name, f"{parent}/datasets/{name}")
            else:
                dataset = project.create_dataset(name)
            for copy_index in range(copies):
                for spec in specs:
                    image, labels = _image_with_objects(rng, meta, spec.size, opts, index)
                    file = write_image_file(Path(tmp) / f"img_{index:03d}", image, spec)
                    ann = sly.Annotation((spec.size[1], spec.size[0]), labels=labels)
                    item = f"{name}_{copy_index}_{spec.size[0]}x{spec.size[1]}_{spec.mode}"
                    dataset.add_item_file(f"{item}{spec.ext}", str(file), ann=ann)
                    index += 1
    (directory / DEMO_MARKER).write_text(json.dumps(marker))
    logger.info("real-world-shaped project with %d images written to %s", index, directory)
    return directory
