"""A deterministic synthetic Supervisely project: shapes on textured backgrounds.

Three classes — ``square``, ``circle``, ``triangle`` — each object annotated as a rectangle,
polygon or bitmap (the class shape is "any geometry", as on real projects that mix tools). Written
with the SDK's own classes (``sly.Project``, ``Annotation``, ``Label``), so the layout is exactly
what the platform produces. Options add what tests need: nested datasets, objects touching the
border, tiny objects, images without objects and unsupported geometries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

CLASSES = ("square", "circle", "triangle")
COLORS = {"square": [230, 60, 60], "circle": [60, 200, 60], "triangle": [60, 90, 230]}


@dataclass
class DemoOptions:
    images: int = 160  # in all; a quarter goes to "val"
    seed: int = 0
    size: tuple[int, int] = (256, 256)  # (width, height)
    min_objects: int = 1
    max_objects: int = 4
    nested: bool = False  # add a nested dataset "train/extra"
    hard_cases: bool = False  # border-touching and tiny objects, empty images, a point object


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


def make_demo_project(directory: str | Path, options: DemoOptions | None = None) -> Path:
    """Write the project to ``directory`` (which must not exist or be empty); returns its path."""
    import supervisely as sly

    opts = options or DemoOptions()
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} is not empty: choose a new directory")
    rng = np.random.default_rng(opts.seed)
    width, height = opts.size

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
        image = _background(rng, width, height)
        labels = []
        empty = opts.hard_cases and index % 7 == 3
        n_objects = 0 if empty else int(rng.integers(opts.min_objects, opts.max_objects + 1))
        occupied = np.zeros((height, width), dtype=bool)
        for k in range(n_objects):
            kind = CLASSES[int(rng.integers(0, 3))]
            r = int(rng.integers(max(6, min(width, height) // 14), min(width, height) // 6))
            if opts.hard_cases and k == 0 and index % 3 == 0:
                cx, cy = r // 2, int(rng.integers(r, height - r))  # cut by the left border
            elif opts.hard_cases and k == 1 and index % 4 == 1:
                r = 3  # tiny
                cx, cy = int(rng.integers(10, width - 10)), int(rng.integers(10, height - 10))
            else:
                cx = int(rng.integers(r + 2, width - r - 2))
                cy = int(rng.integers(r + 2, height - r - 2))
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
            labels.append(
                sly.Label(sly.Point(height // 2, width // 2), meta.get_obj_class("keypoint"))
            )
        ann = sly.Annotation((height, width), labels=labels)
        datasets[split].add_item_np(f"img_{index:05d}.png", image, ann=ann)
    logger.info("demo project with %d images written to %s", len(plan), directory)
    return directory
