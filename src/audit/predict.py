"""A fold's held-out images predicted by the fold's own run: its best checkpoint (else its
newest) through the evaluation's predict path (``src.engine.predict``: mmengine's test loop on the
run's validation split, which is the fold), the score threshold lowered to near 0 so that every
box the model considers is there for the rules (``src.audit.scoring``) to weigh.

A sliced run predicts as it validated: tiles merged on the whole image (``SlicedCocoMetric``).
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

from src.config.compose_data import val_split_args
from src.config.compose_model import set_test_limits
from src.config.text import load_config_file
from src.core.errors import RequestError
from src.core.layout import RUN_CONFIG
from src.data.reader import load_split
from src.runs.atomic_files import write_json_atomic
from src.runs.checkpoints import best_checkpoint, last_checkpoint

# every box down to this score (mmdet's own default for one-stage detectors' test_cfg)
AUDIT_SCORE_THR = 0.001


def predict_fold(work_dir: str | Path, into: str | Path) -> dict[str, Any]:
    """Predict run ``work_dir``'s validation split (the held-out fold) and write the result to
    ``into`` (JSON): the checkpoint, the classes, and per item (``dataset/name``) its boxes
    ``[x1, y1, x2, y2]`` in image pixels, scores and class indices. Returns what it wrote."""
    from src.engine.predict import predict_split

    work_dir = Path(work_dir)
    cfg = load_config_file(work_dir / RUN_CONFIG)
    checkpoint = best_checkpoint(work_dir) or last_checkpoint(work_dir)
    if checkpoint is None:
        raise RequestError(f"run {work_dir.name} has no checkpoint to predict with")
    set_test_limits(cfg.model, None, AUDIT_SCORE_THR)
    data = val_split_args(cfg)
    if not data["keep_empty_images"]:
        raise RequestError(f"run {work_dir.name} drops images without objects: cannot audit them")
    data_list, _ = load_split(
        data["project_dir"], data["classes"], data["task"], data["datasets"], data["items"],
        True, data["cache_dir"], ignore=data["ignore"],
    )  # fmt: skip
    scratch_root = Path(into).parent
    scratch_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch_root, prefix=".predict_") as scratch:
        prefix = Path(scratch) / "predictions"
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' table: not news here
            predict_split(cfg, checkpoint, str(prefix), Path(scratch) / "runner")
        detections = json.loads(Path(f"{prefix}.bbox.json").read_text(encoding="utf-8"))
    result = {
        "run": work_dir.name,
        "checkpoint": checkpoint.name,
        "classes": list(data["classes"]),
        "ignore": list(data["ignore"]),
        "score_thr": AUDIT_SCORE_THR,
        "items": _by_item(data_list, detections),
    }
    write_json_atomic(result, into)
    return result


def _by_item(data_list: list[dict], detections: list[dict]) -> dict[str, dict[str, list]]:
    """mmdet's COCO results (``image_id`` the data list's ``img_id``, ``bbox`` [x, y, w, h],
    ``category_id`` 1-based) → per item its boxes as corners, scores and 0-based classes; every
    image of the split is there, those without a detection too."""
    items = {info["item_name"]: {"boxes": [], "scores": [], "labels": []} for info in data_list}
    name_of = {info["img_id"]: info["item_name"] for info in data_list}
    for det in detections:
        x, y, w, h = (float(v) for v in det["bbox"])
        item = items[name_of[det["image_id"]]]
        item["boxes"].append([round(x, 2), round(y, 2), round(x + w, 2), round(y + h, 2)])
        item["scores"].append(round(float(det["score"]), 5))
        item["labels"].append(int(det["category_id"]) - 1)
    return items
