"""mmdet's metric of a sliced run and the SDK's evaluators agree on the same predictions (issue 36).

A large image holds more than 100 objects of a class. pycocotools' ``summarize`` reads its AP
(``stats[0]``, mmdet's ``bbox_mAP``) at 100 detections an image and class whatever ``maxDets``
says, but its AP50 and AP75 at ``maxDets[-1]``; the SDK's evaluator reads all three at its
``max_detections`` (a sliced run's ``max_per_img``, 1000). So on the synthetic sliced test mmdet
said 0.107 and the SDK 0.113: the same predictions, two caps. ``SlicedCocoMetric`` reads its mAP
at ``maxDets[-1]`` too (red before: 0.362 against 0.430). No training: generated objects and
predictions, scored both ways."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

CLASSES = ["square", "circle", "triangle"]


def _image_with_predictions(path: Path) -> tuple[dict, list[dict], list[dict]]:
    """One 2000x1500 image with 360 objects of 12 to 30 px, and a model's predictions of it:
    most objects found, boxes off by a pixel or two, scores not in the objects' order, a few
    false positives; more than 100 predictions of each class (COCOeval's cap is per image and
    class), so the cap decides."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1950, size=(360, 2)) * [1, 0.75]
    wh = rng.uniform(12, 30, size=(360, 2))
    truth = np.concatenate([xy, xy + wh], axis=1).round()
    labels = rng.integers(0, 3, size=360)
    found = rng.random(360) < 0.85
    boxes = truth[found] + rng.normal(0, 1.5, size=(found.sum(), 4))
    corner = (xy[:40] + 300) % 1400
    false = np.concatenate([corner, corner + 20], axis=1)
    instances = [
        {"bbox": b.tolist(), "bbox_label": int(c), "ignore_flag": 0}
        for b, c in zip(truth, labels, strict=True)
    ]
    info = {"img_id": 1, "item_name": "val/large.jpg", "height": 1500, "width": 2000,
            "img_path": str(path), "instances": instances}  # fmt: skip
    predictions = [
        {"image_id": 1, "category_id": int(c) + 1, "score": float(s),
         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
        for b, c, s in zip(
            np.concatenate([boxes, false]), np.concatenate([labels[found], labels[:40]]),
            rng.uniform(0.05, 1.0, size=len(boxes) + 40), strict=True,
        )
    ]  # fmt: skip
    coco_gt = {
        "images": [{"id": 1, "file_name": info["item_name"], "height": 1500, "width": 2000}],
        "annotations": [
            {
                "id": n + 1,
                "image_id": 1,
                "category_id": i["bbox_label"] + 1,
                "iscrowd": 0,
                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                "area": (b[2] - b[0]) * (b[3] - b[1]),
            }
            for n, i in enumerate(instances)
            for b in [i["bbox"]]
        ],
        "categories": [{"id": n + 1, "name": c} for n, c in enumerate(CLASSES)],
    }
    return info, predictions, [coco_gt]


def _mmdet_map(gt_file: Path, predictions: list[dict]) -> float:
    """``SlicedCocoMetric``'s bbox mAP of the predictions, fed as a validation feeds it."""
    import torch
    from mmdet.registry import METRICS

    import src.engine.sliced_metric  # noqa: F401

    metric = METRICS.build(dict(type="SlicedCocoMetric", ann_file=str(gt_file), metric="bbox"))
    metric.dataset_meta = {"classes": CLASSES}
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (p["bbox"] for p in predictions)])
    metric.process({}, [{
        "img_id": 1, "ori_shape": (1500, 2000),
        "pred_instances": {
            "bboxes": boxes, "scores": torch.tensor([p["score"] for p in predictions]),
            "labels": torch.tensor([p["category_id"] - 1 for p in predictions]),
        },
    }])  # fmt: skip
    return metric.evaluate(1)["coco/bbox_mAP"]


def test_the_validations_map_is_the_evaluators_on_an_image_of_many_objects(tmp_path):
    from src.data.eval_projects import write_eval_projects
    from src.evaluation.evaluate import _sdk_evaluation

    image = tmp_path / "large.jpg"
    image.write_bytes(b"")  # linked into the projects, never read
    info, predictions, [coco_gt] = _image_with_predictions(image)
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps(coco_gt))
    assert min(np.bincount([p["category_id"] for p in predictions])[1:]) > 100

    gt_dir, pred_dir = write_eval_projects([info], CLASSES, predictions, tmp_path / "p", False)
    sdk = _sdk_evaluation(gt_dir, pred_dir, tmp_path / "sdk", False, max_dets=1000)
    sdk_map = sdk.coco_metrics["mAP"]
    # read at 100 detections an image, the score would be well below: the cap is what decides
    capped = _sdk_evaluation(gt_dir, pred_dir, tmp_path / "sdk100", False, max_dets=100)
    assert sdk_map - capped.coco_metrics["mAP"] > 0.05
    assert _mmdet_map(gt_file, predictions) == pytest.approx(sdk_map, abs=1e-3)
