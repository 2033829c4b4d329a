"""``SlicedCocoMetric``: mmdet's ``CocoMetric`` on whole images for a split cut into tiles.

The validation dataset of a sliced run yields tiles (``src.data.tiles``); its COCO ground truth
is the whole images', with a ``tiles`` table naming each tile's image and offset. Each tile's
predictions are moved into its image's pixels (masks re-encoded at the image's size from the
tile's crop), an image's predictions from all its tiles (and the whole image, when kept) are
merged (``src.engine.tile_merge``), and ``CocoMetric`` scores them against the whole images: the
mAP is the whole images', and the predictions it writes (``outfile_prefix``) are too — what the
evaluation after training hands to the platform's evaluators, on the original project.

Its mAP is read at ``max_per_img`` detections an image, as its AP50 and AP75 already are and as
the SDK's evaluators read theirs (``max_detections``): pycocotools' ``summarize`` reads AP
(``stats[0]``) at 100 detections an image and class whatever ``maxDets`` says, so mmdet's
``bbox_mAP`` of an image with more than 100 objects of a class was lower than the evaluation's
(issue 36: 0.107 vs 0.113; 0.0024 vs 0.0026 on the bench's run).

Without a ``tiles`` table it is ``CocoMetric``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from mmdet.evaluation.metrics import CocoMetric
from mmdet.evaluation.metrics import coco_metric as mmdet_coco_metric
from mmdet.registry import METRICS

from src.engine.tile_merge import MERGED_MAX_PER_IMG, merge_tiles, shift_boxes, tile_rle_to_image


class CappedCOCOeval(mmdet_coco_metric.COCOeval):
    """COCOeval whose AP (``stats[0]``) is read at ``maxDets[-1]``, as its AP50, AP75 and
    per-size APs are: pycocotools reads it at 100 detections an image and class whatever
    ``maxDets`` says (its ``_summarize`` default), which caps an image of hundreds of objects."""

    def summarize(self) -> None:
        super().summarize()
        if self.params.iouType in ("bbox", "segm"):
            precision = self.eval["precision"][:, :, :, 0, -1]  # all areas, maxDets[-1]
            valid = precision[precision > -1]
            self.stats[0] = float(np.mean(valid)) if valid.size else -1.0


@METRICS.register_module(name="SlicedCocoMetric", force=True)
class SlicedCocoMetric(CocoMetric):
    """Args:
    merge_thr: the intersection over the smaller box at which detections of one class from
        two tiles are one object.
    max_per_img: detections kept per whole image after the merge: a large image holds many
        more objects than a tile (the default is the most COCO's evaluation reads per image
        with mmdet's ``proposal_nums``).
    **kwargs: ``CocoMetric``'s.
    """

    def __init__(
        self, merge_thr: float = 0.5, max_per_img: int = MERGED_MAX_PER_IMG, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.merge_thr = float(merge_thr)
        self.max_per_img = int(max_per_img)
        dataset = self._coco_api.dataset if self._coco_api is not None else {}
        self.tiles = {int(k): v for k, v in (dataset.get("tiles") or {}).items()}

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        start = len(self.results)
        super().process(data_batch, data_samples)
        if not self.tiles:
            return
        for gt, result in self.results[start:]:
            tile_id = int(result["img_id"])
            image_id, dx, dy = self.tiles.get(tile_id, (tile_id, 0, 0))
            info = self._coco_api.imgs[image_id]
            result["tile"] = tile_id
            # the tile's window in its image (gt holds the tile's size until set to the image's)
            result["window"] = (dx, dy, dx + gt["width"], dy + gt["height"])
            result["img_id"] = gt["img_id"] = image_id
            gt["width"], gt["height"] = info["width"], info["height"]
            if dx or dy:
                result["bboxes"] = shift_boxes(result["bboxes"], dx, dy).astype(np.float32)
            if "masks" in result:
                result["masks"] = [
                    tile_rle_to_image(rle, dx, dy, info["height"], info["width"])
                    for rle in result["masks"]
                ]

    def compute_metrics(self, results: list) -> dict[str, float]:
        if self.tiles:
            by_image: dict[int, list] = defaultdict(list)
            for gt, result in results:
                by_image[int(result["img_id"])].append((gt, result))
            results = [self._merged(parts) for parts in by_image.values()]
        # mmdet's CocoMetric builds the module's COCOeval: ours for this call (one thread)
        original = mmdet_coco_metric.COCOeval
        mmdet_coco_metric.COCOeval = CappedCOCOeval
        try:
            return super().compute_metrics(results)
        finally:
            mmdet_coco_metric.COCOeval = original

    def _merged(self, parts: list) -> tuple[dict, dict]:
        gt = parts[0][0]
        results = [r for _, r in parts]
        tiles = np.concatenate([np.full(len(r["scores"]), r["tile"]) for r in results])
        with_masks = "masks" in results[0]
        merged = merge_tiles(
            np.concatenate([np.asarray(r["bboxes"]).reshape(-1, 4) for r in results]),
            np.concatenate([r["scores"] for r in results]),
            np.concatenate([r["labels"] for r in results]),
            tiles,
            thr=self.merge_thr,
            max_dets=self.max_per_img,
            masks=[m for r in results for m in r["masks"]] if with_masks else None,
            windows=np.concatenate(
                [
                    np.tile(np.asarray(r["window"], np.float64), (len(r["scores"]), 1))
                    for r in results
                ]
            ),
        )
        out = {
            "img_id": results[0]["img_id"],
            "bboxes": merged.boxes.astype(np.float32),
            "scores": merged.scores.astype(np.float32),
            "labels": merged.labels.astype(np.int64),
        }
        if with_masks:
            out["masks"] = merged.masks
        if "mask_scores" in results[0]:
            mask_scores = np.concatenate([r["mask_scores"] for r in results])
            out["mask_scores"] = mask_scores[merged.index].astype(np.float32)
        return gt, out
