"""The app's sliced merge against SAHI's, on one checkpoint, scored by one pycocotools (issue 36).

A sliced run's checkpoint predicts every tile of its validation images (the run's tile size and
overlap, ``src.data.tiles.windows``) and each whole image once, at the model's own ``test_cfg``
(what the validation does); those raw detections are saved, and every merge below is computed
from the same ones, so that a difference in the table is the merge's, never the model's:

- the app's merge (``src.engine.tile_merge.merge_tiles``: greedy merging by intersection over
  the smaller box, 1000 kept per image) as it was (every absorbed box widens the kept one: the
  union) and as it is (given the tiles' windows, only a box that agrees with the kept one where
  both tiles see the image widens it), and each with one factor changed at a time: the
  whole-image pass, a score threshold before the merge, 100 kept per image, no union at all;
- SAHI's postprocess classes (sahi 0.12.8, ``GreedyNMMPostprocess`` IOS 0.5 — its default — and
  ``NMSPostprocess`` IOU 0.5, per class) on the detections above SAHI's confidence threshold
  (its default 0.3, and 0.001), with and without the whole-image pass;
- SAHI end to end (``AutoDetectionModel`` + ``get_sliced_prediction`` with its defaults, on the
  run's files; ``--no-sahi-e2e`` skips it): it should equal the replay of its postprocess.

Each is scored against the run's COCO ground truth (``coco_gt_val.json``, the whole images) by
pycocotools' COCOeval: AP, AP50, AR with COCO's maxDets 100, and AP, AP50 with maxDets 1000
(what the app's validation and evaluation read).

    .venv/bin/python bench/sliced_vs_sahi.py RUN_DIR [--out table.json] [--no-sahi-e2e]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# the run's own checkpoints hold the trainer's state (mmengine objects): a local, trusted file
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from src.data.tiles import windows  # noqa: E402
from src.engine.tile_merge import merge_tiles, shift_boxes  # noqa: E402

FULL = -1  # the source id of the whole-image pass


def _run_files(run: Path) -> tuple[Path, Path, dict, Any]:
    """The run's config, checkpoint, COCO ground truth and slicing settings."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(run / "config.py"))
    [ckpt] = sorted(run.glob("best_*.pth"))[-1:] or sorted(run.glob("epoch_*.pth"))[-1:]
    gt = json.loads((run / "coco_gt_val.json").read_text())
    return run / "config.py", ckpt, gt, cfg


def raw_detections(run: Path, cache: Path) -> dict[int, dict[str, np.ndarray]]:
    """Every tile's and each whole image's detections, in the image's pixels, by image id
    (computed once, then read from ``cache``)."""
    if cache.is_file():
        data = np.load(cache)
        ids = sorted({int(k.split("_")[0]) for k in data.files})
        keys = ("boxes", "scores", "labels", "src")
        return {i: {k: data[f"{i}_{k}"] for k in keys} for i in ids}
    import cv2
    from mmdet.apis import inference_detector, init_detector

    config, ckpt, gt, cfg = _run_files(run)
    slicing = cfg.val_dataloader.dataset.slicing
    project = Path(cfg.val_dataloader.dataset.project_dir)
    model = init_detector(str(config), str(ckpt), device="cpu")
    out: dict[int, dict[str, np.ndarray]] = {}
    for image in gt["images"]:
        dataset, name = image["file_name"].rsplit("/", 1)
        pixels = cv2.imread(str(project / dataset / "img" / name))
        h, w = pixels.shape[:2]
        parts = [
            (t, pixels[t[1] : t[3], t[0] : t[2]])
            for t in windows(w, h, slicing.size, slicing.overlap)
        ]
        parts.append(((0, 0, w, h), pixels))
        found: dict[str, list] = {"boxes": [], "scores": [], "labels": [], "src": []}
        for start in range(0, len(parts), 8):
            chunk = parts[start : start + 8]
            for n, ((x1, y1, _, _), _), sample in zip(
                range(start, start + len(chunk)),
                chunk,
                inference_detector(model, [c for _, c in chunk]),
                strict=True,
            ):
                p = sample.pred_instances.cpu().numpy()
                found["boxes"].append(shift_boxes(p.bboxes, x1, y1))
                found["scores"].append(p.scores)
                found["labels"].append(p.labels)
                found["src"].append(np.full(len(p.scores), FULL if n == len(parts) - 1 else n))
        out[image["id"]] = {k: np.concatenate(v) for k, v in found.items()}
    np.savez(cache, **{f"{i}_{k}": v for i, d in out.items() for k, v in d.items()})
    return out


def _select(raw: dict[str, np.ndarray], full: bool, conf: float) -> dict[str, np.ndarray]:
    keep = raw["scores"] >= conf
    if not full:
        keep &= raw["src"] != FULL
    return {k: v[keep] for k, v in raw.items()}


def with_windows(raw: dict[int, dict], gt: dict, size: int, overlap: float) -> None:
    """Each detection's tile (x1, y1, x2, y2 in its image; the whole image for its pass)."""
    for image in gt["images"]:
        w, h = image["width"], image["height"]
        tiles = np.asarray([*windows(w, h, size, overlap), (0, 0, w, h)], np.float64)
        src = raw[image["id"]]["src"]
        raw[image["id"]]["win"] = tiles[np.where(src == FULL, len(tiles) - 1, src)]


def app_merge(
    raw: dict,
    full: bool = True,
    conf: float = 0.0,
    union: bool = True,
    cap: int = 1000,
    agree: bool = False,
) -> list[tuple]:
    """The app's merge of one image's detections: (box xyxy, score, label) each. ``agree``:
    pass the tiles' windows (an absorbed box widens the kept one only where both tiles agree)."""
    d = _select(raw, full, conf)
    m = merge_tiles(
        d["boxes"], d["scores"], d["labels"], d["src"], thr=0.5, max_dets=cap,
        windows=d["win"] if agree else None,
    )  # fmt: skip
    boxes = m.boxes if union else d["boxes"][m.index]
    return list(zip(boxes.tolist(), m.scores.tolist(), m.labels.tolist(), strict=True))


def sahi_merge(raw: dict, kind: str, full: bool = True, conf: float = 0.3) -> list[tuple]:
    """SAHI's own postprocess (per class, threshold 0.5) on the same detections."""
    from sahi.postprocess.combine import GreedyNMMPostprocess, NMSPostprocess
    from sahi.prediction import ObjectPrediction

    d = _select(raw, full, conf)
    preds = [
        ObjectPrediction(bbox=list(b), category_id=int(c), category_name=str(c), score=float(s))
        for b, s, c in zip(d["boxes"].tolist(), d["scores"], d["labels"], strict=True)
        if b[0] < b[2] and b[1] < b[3]
    ]
    post = (
        GreedyNMMPostprocess(0.5, "IOS", False)
        if kind == "GREEDYNMM"
        else NMSPostprocess(0.5, "IOU", False)
    )
    kept = post(preds) if len(preds) > 1 else preds
    return [(p.bbox.to_xyxy(), p.score.value, p.category.id) for p in kept]


def sahi_end_to_end(run: Path, kind: str = "GREEDYNMM") -> dict[int, list[tuple]]:
    """``get_sliced_prediction`` with SAHI's defaults (confidence 0.3, the whole image too) at
    the run's tile size and overlap."""
    from sahi import AutoDetectionModel
    from sahi.predict import get_sliced_prediction

    config, ckpt, gt, cfg = _run_files(run)
    slicing = cfg.val_dataloader.dataset.slicing
    project = Path(cfg.val_dataloader.dataset.project_dir)
    model = AutoDetectionModel.from_pretrained(
        model_type="mmdet", model_path=str(ckpt), config_path=str(config), device="cpu"
    )
    out = {}
    for image in gt["images"]:
        dataset, name = image["file_name"].rsplit("/", 1)
        result = get_sliced_prediction(
            str(project / dataset / "img" / name), model, slice_height=slicing.size,
            slice_width=slicing.size, overlap_height_ratio=slicing.overlap,
            overlap_width_ratio=slicing.overlap, postprocess_type=kind,
            postprocess_match_metric="IOS" if kind == "GREEDYNMM" else "IOU", verbose=0,
        )  # fmt: skip
        out[image["id"]] = [
            (p.bbox.to_xyxy(), p.score.value, p.category.id) for p in result.object_prediction_list
        ]
    return out


def to_coco(found: dict[int, list[tuple]]) -> list[dict]:
    """(box xyxy, score, 0-based label) per image as COCO results (category ids 1-based)."""
    return [
        {"image_id": i, "category_id": int(c) + 1, "score": float(s),
         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
        for i, dets in found.items() for b, s, c in dets
    ]  # fmt: skip


def score(gt: dict, results: list[dict]) -> dict[str, float]:
    """pycocotools' COCOeval, bbox, at maxDets 100 (COCO's) and 1000 (the app's). AP is read
    from the accumulated precision at maxDets[-1]: pycocotools' ``summarize`` reads its AP
    (``stats[0]``) at 100 detections an image whatever ``maxDets`` says."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def mean(values: np.ndarray) -> float:
        return float(np.mean(values[values > -1])) if np.any(values > -1) else 0.0

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {k: gt[k] for k in ("images", "annotations", "categories")}
        truth.createIndex()
        found = truth.loadRes(results) if results else COCO()
        out = {"detections": len(results)}
        for cap in (100, 1000):
            ev = COCOeval(truth, found, "bbox")
            ev.params.maxDets = [1, 10, cap]
            ev.evaluate()
            ev.accumulate()
            precision, recall = ev.eval["precision"][..., 0, -1], ev.eval["recall"][..., 0, -1]
            out |= {f"AP@{cap}": mean(precision), f"AP50@{cap}": mean(precision[0]),
                    f"AR@{cap}": mean(recall)}  # fmt: skip
    return out


def variants(raw: dict[int, dict], app_only: bool = False) -> dict[str, dict[int, list[tuple]]]:
    """Every merge of the table, from the same raw detections."""
    each = {
        "app before: union of every absorbed box (all scores, whole image, 1000 kept)": dict(),
        "app before, no whole-image pass": dict(full=False),
        "app before, scores >= 0.3 before merging": dict(conf=0.3),
        "app before, 100 kept per image": dict(cap=100),
        "app, kept box only (no union at all)": dict(union=False),
        "app now: widened only when cut, by boxes that agree (the validation's merge)": dict(
            agree=True
        ),
        "app now, no whole-image pass": dict(agree=True, full=False),
        "app now, scores >= 0.3 before merging": dict(agree=True, conf=0.3),
        "app now, 100 kept per image": dict(agree=True, cap=100),
    }
    table = {name: {i: app_merge(r, **kw) for i, r in raw.items()} for name, kw in each.items()}
    if app_only:
        return table
    for kind in ("GREEDYNMM", "NMS"):
        for conf in (0.3, 0.001):
            for full in (True, False):
                name = f"SAHI {kind} conf {conf}{'' if full else ', no whole-image pass'}"
                table[name] = {i: sahi_merge(r, kind, full, conf) for i, r in raw.items()}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-sahi-e2e", action="store_true")
    parser.add_argument("--app-only", action="store_true", help="only the app's merges")
    args = parser.parse_args()
    started = time.monotonic()
    _, ckpt, gt, cfg = _run_files(args.run)
    raw = raw_detections(args.run, args.run / f"bench_raw_{ckpt.stem}.npz")
    with_windows(raw, gt, cfg.val_dataloader.dataset.slicing.size,
                 cfg.val_dataloader.dataset.slicing.overlap)  # fmt: skip
    table = variants(raw, args.app_only)
    if not (args.no_sahi_e2e or args.app_only):
        table["SAHI end to end (get_sliced_prediction, its defaults)"] = sahi_end_to_end(args.run)
    rows = {name: score(gt, to_coco(found)) for name, found in table.items()}
    slicing = cfg.val_dataloader.dataset.slicing
    sizes = sorted({(i["width"], i["height"]) for i in gt["images"]})
    print(f"checkpoint {ckpt.name}; tiles {slicing.size} px, overlap {slicing.overlap}; "
          f"images {sizes}; "
          f"{sum(not a['iscrowd'] for a in gt['annotations'])} objects; raw detections "
          f"{sum(len(r['scores']) for r in raw.values())}")  # fmt: skip
    print("| merge | detections | AP@100 | AP50@100 | AR@100 | AP@1000 | AP50@1000 | AR@1000 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, m in rows.items():
        cells = " | ".join(
            f"{m[k]:.3f}"
            for k in ("AP@100", "AP50@100", "AR@100", "AP@1000", "AP50@1000", "AR@1000")
        )
        print(f"| {name} | {m['detections']} | {cells} |")
    print(f"{time.monotonic() - started:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
