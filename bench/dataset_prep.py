"""How fast train + val datasets are prepared from a big Supervisely project.

Generates a project of 10,000 annotations x 10 objects (rectangles, polygons, bitmaps; 1920x1080
image size; the image files are tiny placeholders, since only annotations are read), then measures
in fresh child processes (so peak memory is each one's own):

- ours, cold: ``src.data.reader.load_split`` for train and val, empty cache
- ours, warm: the same again, cache filled
- ours vs the reference on the same sample of annotations, side by side: the reference is what the
  older app does — SDK ``Annotation.from_json``, every mask drawn at full image size, RLE of each.
  The reference takes minutes on the whole project, so the ratio is measured on a sample of
  ``--ref-images`` annotations, both implementations on exactly those files.

Goals (issue 2): cold at least 5x faster than the reference, warm under 3 s.

    .venv/bin/python bench/dataset_prep.py [--images 10000] [--ref-images 300] [--task ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import run_child  # noqa: E402

CLASSES = ["square", "circle", "triangle"]
WIDTH, HEIGHT = 1920, 1080


def generate(project: Path, images: int, objects: int, seed: int = 0) -> None:
    """Write the project's JSON directly (fast); bitmaps use the SDK's own encoding."""
    import cv2
    import supervisely as sly

    rng = np.random.default_rng(seed)
    meta = sly.ProjectMeta(
        obj_classes=sly.ObjClassCollection([sly.ObjClass(c, sly.AnyGeometry) for c in CLASSES])
    )
    project.mkdir(parents=True)
    (project / "meta.json").write_text(json.dumps(meta.to_json()))
    placeholder = cv2.imencode(".png", np.zeros((2, 2, 3), np.uint8))[1].tobytes()
    templates = []
    for size in (40, 90, 160, 260):
        mask = np.zeros((size, size), np.uint8)
        cv2.ellipse(mask, (size // 2, size // 2), (size // 2 - 1, size // 3), 30, 0, 360, 1, -1)
        templates.append((size, sly.Bitmap.data_2_base64(mask.astype(bool))))
    n_val = images // 5
    for split, count in (("train", images - n_val), ("val", n_val)):
        ann_dir, img_dir = project / split / "ann", project / split / "img"
        ann_dir.mkdir(parents=True)
        img_dir.mkdir(parents=True)
        for i in range(count):
            objs = []
            for k in range(objects):
                cls = CLASSES[int(rng.integers(0, 3))]
                kind = k % 3
                x, y = int(rng.integers(0, WIDTH - 300)), int(rng.integers(0, HEIGHT - 300))
                if kind == 0:
                    w, h = int(rng.integers(10, 300)), int(rng.integers(10, 300))
                    objs.append(
                        {
                            "classTitle": cls,
                            "tags": [],
                            "geometryType": "rectangle",
                            "points": {"exterior": [[x, y], [x + w, y + h]], "interior": []},
                        }
                    )
                elif kind == 1:
                    n = int(rng.integers(3, 12))
                    t = np.sort(rng.uniform(0, 2 * np.pi, n))
                    r = rng.uniform(20, 140)
                    pts = np.stack([x + 150 + r * np.cos(t), y + 150 + r * np.sin(t)], 1).round()
                    objs.append(
                        {
                            "classTitle": cls,
                            "tags": [],
                            "geometryType": "polygon",
                            "points": {"exterior": pts.astype(int).tolist(), "interior": []},
                        }
                    )
                else:
                    size, data = templates[int(rng.integers(0, len(templates)))]
                    objs.append(
                        {
                            "classTitle": cls,
                            "tags": [],
                            "geometryType": "bitmap",
                            "bitmap": {"data": data, "origin": [x, y]},
                        }
                    )
            name = f"img_{i:06d}.png"
            ann = {
                "description": "",
                "tags": [],
                "size": {"height": HEIGHT, "width": WIDTH},
                "objects": objs,
            }
            (ann_dir / f"{name}.json").write_text(json.dumps(ann))
            (img_dir / name).write_bytes(placeholder)


def reference_prepare(project: Path, ann_files: list[Path], task: str) -> int:
    """The older app's way: SDK objects, full-size masks, RLE per object.

    For instance segmentation, rectangles are skipped as ours skips them, so both do the same
    objects.
    """
    import supervisely as sly
    from pycocotools import mask as mask_utils

    meta = sly.ProjectMeta.from_json(json.loads((project / "meta.json").read_text()))
    n = 0
    for path in ann_files:
        ann = sly.Annotation.load_json_file(str(path), meta)
        h, w = ann.img_size
        for label in ann.labels:
            if task == "instance-segmentation" and label.geometry.name() == "rectangle":
                continue
            bbox = label.geometry.to_bbox()
            _ = [bbox.left, bbox.top, bbox.right, bbox.bottom]
            mask = np.zeros((h, w), dtype=bool)
            label.geometry.draw(mask, True)
            mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            n += 1
    return n


def child(args: argparse.Namespace) -> None:
    """Runs one measurement in this (fresh) process; prints JSON."""
    from src.data.reader import load_split, read_instances

    project = Path(args.project)
    started = time.perf_counter()
    if args.child in ("cold", "warm"):
        objects = 0
        for split in ("train", "val"):
            _, stats = load_split(
                project, CLASSES, args.task, datasets=[split], cache_dir=args.cache
            )
            objects += stats.objects
    elif args.child == "ours-sample":
        _, stats = read_instances(project, CLASSES, args.task, datasets=["sample"])
        objects = stats.objects
    else:
        files = sorted((project / "sample" / "ann").glob("*.json"))
        objects = reference_prepare(project, files, args.task)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "objects": objects}))


def measure(mode: str, project: Path, task: str, cache: Path) -> dict:
    return run_child(
        __file__, "--child", mode, "--project", str(project), "--task", task, "--cache", str(cache)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--objects", type=int, default=10)
    parser.add_argument("--ref-images", type=int, default=300)
    parser.add_argument(
        "--task",
        default="instance-segmentation",
        choices=["object-detection", "instance-segmentation"],
    )
    parser.add_argument("--workdir", help="keep the generated project here (default: a temp dir)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--project", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_dataset_"))
    project = workdir / "project"
    cache = workdir / "cache"
    if not project.exists():
        started = time.perf_counter()
        generate(project, args.images, args.objects)
        print(
            f"generated {args.images} annotations x {args.objects} objects "
            f"({WIDTH}x{HEIGHT}) in {time.perf_counter() - started:.1f} s"
        )
    # the sample dataset: the first --ref-images annotations of train, for the side-by-side ratio
    sample = project / "sample"
    if not sample.exists():
        (sample / "ann").mkdir(parents=True)
        (sample / "img").mkdir()
        for ann in sorted((project / "train" / "ann").glob("*.json"))[: args.ref_images]:
            shutil.copy(ann, sample / "ann" / ann.name)
            shutil.copy(project / "train" / "img" / ann.name[:-5], sample / "img" / ann.name[:-5])
    shutil.rmtree(cache, ignore_errors=True)

    # the full project: cold (no cache), then warm; "sample" is not among the datasets read
    cold = measure("cold", project, args.task, cache)
    warm = measure("warm", project, args.task, cache)
    ours = measure("ours-sample", project, args.task, cache)
    ref = measure("reference", project, args.task, cache)
    ratio = ref["seconds"] / ours["seconds"]
    print(f"task: {args.task}; {cold['objects']} objects in train + val")
    print(
        f"ours cold (train + val, {args.images} annotations): {cold['seconds']:.2f} s, "
        f"peak {cold['peak_mb']:.0f} MB"
    )
    print(
        f"ours warm (cache):                        {warm['seconds']:.2f} s, "
        f"peak {warm['peak_mb']:.0f} MB   goal < 3 s"
    )
    print(f"sample of {args.ref_images} annotations ({ours['objects']} objects), side by side:")
    print(
        f"  reference (SDK parse + full-size masks + RLE): {ref['seconds']:.2f} s, "
        f"peak {ref['peak_mb']:.0f} MB"
    )
    print(
        f"  ours (cold):                                   {ours['seconds']:.2f} s, "
        f"peak {ours['peak_mb']:.0f} MB"
    )
    print(f"  speed-up cold vs reference: {ratio:.1f}x   goal >= 5x")
    print(
        f"  reference extrapolated to the whole project: "
        f"{ref['seconds'] / max(ref['objects'], 1) * cold['objects']:.0f} s"
    )
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    os.sys.stdout.flush()


if __name__ == "__main__":
    main()
