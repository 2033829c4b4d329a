"""What TensorRT's TopK limit (K <= 3840) does to an RTMDet export's detections (issue 34).

Exports a run's checkpoint to ONNX as it is (TopK K = the run's ``nms_pre``, 30000 for RTMDet)
and the copy TensorRT builds from (``src.export.tensorrt_build.clamp_topk``: K = 3840), runs both
in onnxruntime on the CPU on the run's project images, at several input sizes and score
thresholds, and counts the detections (score > 0, up to ``max_per_img``) of the unclamped graph
that have no identical partner (same label, box and score) in the clamped one. Also prints each
size's largest level's candidates (its locations x classes): the clamp can only matter where
that exceeds 3840 and more than 3840 of them score above the threshold.

    .venv/bin/python bench/topk_clamp.py RUN_DIR [--sizes 320,640,1024] [--thresholds 0.001,0.05]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _lost(wide, narrow) -> int:
    """Detections of ``wide`` with no identical (label, box, score) detection in ``narrow``."""

    def rows(found) -> list[tuple]:
        items = zip(found.boxes, found.scores, found.labels, strict=True)
        return [(int(lab), *np.round(box, 3), round(float(s), 6)) for box, s, lab in items]

    keys = set(rows(narrow))
    return sum(row not in keys for row in rows(wide))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--sizes", default="320,640,1024")
    parser.add_argument("--thresholds", default="0.001,0.05")
    args = parser.parse_args()
    from src.config.metadata import RunMetadata
    from src.config.text import load_config_file
    from src.export.onnx_export import export_onnx
    from src.export.onnx_runtime import OnnxDetector
    from src.export.tensorrt_build import TENSORRT_MAX_TOPK, clamp_topk
    from src.runs.checkpoints import best_checkpoint, last_checkpoint

    work = Path(args.run_dir)
    cfg = load_config_file(work / "config.py")
    checkpoint = last_checkpoint(work) or best_checkpoint(work)
    project = Path(cfg.train_dataloader.dataset.get("project_dir") or RunMetadata.of(cfg).project)
    images = [cv2.imread(str(p)) for p in sorted(project.rglob("img/*")) if p.is_file()]
    classes = int(cfg.model.bbox_head.num_classes)
    print(f"{checkpoint.name}, {len(images)} images, {classes} classes, nms_pre "
          f"{cfg.model.test_cfg.nms_pre}, K clamped to {TENSORRT_MAX_TOPK}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for thr in (float(t) for t in args.thresholds.split(",")):
            cfg.model.test_cfg.score_thr = thr
            for size in (int(s) for s in args.sizes.split(",")):
                wide = export_onnx(cfg, checkpoint, Path(tmp) / f"w{size}.onnx", input_size=size)
                clamp_topk(wide, Path(tmp) / f"n{size}.onnx")
                a, b = OnnxDetector(str(wide)), OnnxDetector(str(Path(tmp) / f"n{size}.onnx"))
                lost = kept = changed = 0
                for image in images:
                    got_a, got_b = a.predict([image])[0], b.predict([image])[0]
                    n = _lost(got_a, got_b)
                    lost, kept, changed = lost + n, kept + len(got_a.scores), changed + (n > 0)
                level0 = (-(-size // 8)) ** 2 * classes  # stride 8, a square canvas
                print(f"score_thr {thr}, {size} px (largest level {level0} candidates): "
                      f"{lost} of {kept} detections differ, in {changed} of "
                      f"{len(images)} images")  # fmt: skip


if __name__ == "__main__":
    main()
