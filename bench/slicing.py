"""Sliced training: what the preparation costs, and an epoch on tiles against one on whole images.

Generates a project of 4000x3000 JPEGs with 20 to 40 objects of 12 to 30 px each
(``demo-project --large``), then, each in a fresh child process:

- preparation, cold: the sliced train split built with an empty cache (the tiled data list) and
  every tile file cut, as the first epoch does: tiles per second;
- preparation, warm: the same with the cache filled (data list from the cache, tiles on disk),
  each tile then read as the loader reads it: tiles per second;
- training, side by side in this run: RTMDet-tiny for two epochs at the same input size, sliced
  (tiles of the input size) and on whole images; the seconds of epoch 1 (the sliced run cuts its
  tiles in it) and of epoch 2, from the run's log, and their ratio. An epoch on tiles trains on
  many more samples (the tiles with objects, and ``--empty`` of the others): the ratio is the
  price of seeing the objects at full resolution.

    .venv/bin/python bench/slicing.py [--images 4] [--size 256] [--overlap 0.25] [--empty 0.1]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import run_child  # noqa: E402

CLASSES = ["square", "circle", "triangle"]


def _dataset(project: str, cache: str, size: int, overlap: float, empty: float):
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    import src.data.mmdet_dataset  # noqa: F401

    init_default_scope("mmdet")
    return DATASETS.build(dict(
        type="SuperviselyDataset", project_dir=project, classes=CLASSES, datasets=["train"],
        cache_dir=cache, pipeline=[], serialize_data=False,
        slicing=dict(size=size, overlap=overlap, empty=empty, full_image=False),
    ))  # fmt: skip


def child(project: str, cache: str, size: int, overlap: float, empty: float) -> dict:
    """One preparation pass (imports done first, not timed): build the split, make sure of
    every tile (cut it when missing), then read each as the loader does."""
    import cv2

    import src.data.mmdet_dataset  # noqa: F401  (mmdet's import: seconds, not the preparation)

    started = time.perf_counter()
    dataset = _dataset(project, cache, size, overlap, empty)
    listed = time.perf_counter()
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    for info in infos:
        dataset.ensure_image(info)
    cut = time.perf_counter()
    for info in infos:
        cv2.imread(info["img_path"])
    done = time.perf_counter()
    return {"tiles": len(infos), "seconds": done - started, "data_list_seconds": listed - started,
            "cut_seconds": cut - listed, "read_seconds": done - cut}  # fmt: skip


def _epoch_seconds(run_dir: Path) -> list[float]:
    """Each epoch's seconds, from the run log's timestamps (training only: validation follows
    the last checkpoint)."""
    [log] = run_dir.glob("*/*.log")
    stamps = []
    for line in log.read_text().splitlines():
        if "Checkpoints will be saved to" in line or re.search(
            r"Saving checkpoint at \d+ epochs", line
        ):
            stamps.append(datetime.strptime(line[:19], "%Y/%m/%d %H:%M:%S"))
    return [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]


def _train(project: Path, work: Path, run_id: str, size: int, *extra: str) -> list[float]:
    subprocess.run(
        [sys.executable, "-m", "src.cli", "train", "--project", str(project), "--model",
         "rtmdet_tiny_8xb32-300e_coco", "--from-scratch", "--epochs", "2", "--val-interval", "2",
         "--batch-size", "4", "--input-size", str(size), "--lr", "0.004", "--no-evaluate",
         "--app-data", str(work / "app_data"), "--team-files", str(work / "team_files"),
         "--run-id", run_id, *extra],
        check=True, capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "XDG_CACHE_HOME": str(work / "xdg")},  # the tiles: not the user's
    )  # fmt: skip
    return _epoch_seconds(work / "app_data" / run_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="in all; a quarter validates")
    parser.add_argument("--size", type=int, default=256, help="tile size = input size (px)")
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--empty", type=float, default=0.1)
    parser.add_argument("--child", nargs=2, metavar=("PROJECT", "CACHE"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.size, args.overlap, args.empty)))
        return

    from src.data.demo import LARGE_OPTIONS, DemoOptions, make_demo_project

    work = Path(tempfile.mkdtemp(prefix="bench_slicing_"))
    try:
        project = make_demo_project(
            work / "project", DemoOptions(images=args.images, **LARGE_OPTIONS)
        )
        cache = work / "cache"
        same = [
            "--size",
            str(args.size),
            "--overlap",
            str(args.overlap),
            "--empty",
            str(args.empty),
        ]
        cold = run_child(__file__, *same, "--child", str(project), str(cache))
        warm = run_child(__file__, *same, "--child", str(project), str(cache))
        print(
            f"project: {args.images} images of 4000x3000 ({args.images - max(1, args.images // 4)} "
            f"to train), tiles of {args.size} px, overlap {args.overlap}, empty kept {args.empty}"
        )
        for name, r in (("cold", cold), ("warm", warm)):
            print(
                f"preparation {name}: {r['tiles']} tiles in {r['seconds']:.1f} s "
                f"({r['tiles'] / r['seconds']:.0f} tiles/s: "
                f"data list {r['data_list_seconds']:.2f} s, "
                f"tile files {r['cut_seconds']:.2f} s, read {r['read_seconds']:.2f} s)"
            )
        sliced = _train(
            project,
            work,
            "sliced",
            args.size,
            "--slice-size",
            str(args.size),
            "--slice-overlap",
            str(args.overlap),
            "--slice-empty",
            str(args.empty),
        )
        whole = _train(project, work, "whole", args.size)
        n_train = args.images - max(1, args.images // 4)
        samples = {"sliced": cold["tiles"] + n_train, "whole": n_train}  # + the whole images
        for epoch, (s, w) in enumerate(zip(sliced, whole, strict=False), start=1):
            print(
                f"training epoch {epoch}: sliced {s:.0f} s ({samples['sliced']} samples, "
                f"{s / samples['sliced']:.2f} s each), whole images {w:.0f} s "
                f"({samples['whole']} samples, {w / samples['whole']:.2f} s each); "
                f"epoch ratio {s / max(w, 1):.0f}x (the log's times are whole seconds)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
