"""The exported model's speed: PyTorch (mmdet) vs ONNX Runtime, batch 1 and 8, side by side in one
run on this machine's CPU (src.engine.speed: the whole job each, pre-processing to boxes in the
original image; the runtimes alternate, median of the repeats). TensorRT fp16 is measured where
the machine has a GPU with TensorRT, else the line says why not.

    .venv/bin/python bench/export.py [RUN_ID] [--app-data DIR] [--repeats 5]

RUN_ID: a run in app data (default: the newest with a checkpoint, e.g. `make train`'s). The
export itself is timed too. Prints one line per batch size with the speed ratio; absolute times
are this machine's only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_id", nargs="?")
    parser.add_argument("--app-data", default=str(ROOT / "artifacts" / "app_data"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from src.config.text import load_config_file
    from src.engine.speed import describe, measure
    from src.export.formats import speed_runners, validation_images
    from src.export.onnx_export import export_model, load_model
    from src.export.onnx_runtime import OnnxDetector
    from src.export.tensorrt_build import tensorrt_blocker
    from src.runs.checkpoints import best_checkpoint, last_checkpoint

    runs = sorted(
        (p for p in Path(args.app_data).iterdir() if (p / "config.py").is_file()),
        key=lambda p: p.stat().st_mtime,
    )
    runs = [p for p in runs if best_checkpoint(p) or last_checkpoint(p)]
    work = Path(args.app_data) / args.run_id if args.run_id else (runs[-1] if runs else None)
    if work is None:
        print(f"no run with a checkpoint in {args.app_data}: run `make train` first")
        return 2
    cfg = load_config_file(work / "config.py")
    checkpoint = best_checkpoint(work) or last_checkpoint(work)
    images = validation_images(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        model = load_model(cfg, checkpoint)
        onnx_path = export_model(cfg, model, Path(tmp) / "model.onnx")
        exported = time.perf_counter() - started
        size_mb = onnx_path.stat().st_size / 2**20
        detector = OnnxDetector(str(onnx_path))
        rows = measure(speed_runners(model, detector), images, repeats=args.repeats)
        blocker = tensorrt_blocker()
        if not blocker:  # the engine is built from the ONNX file, in this temporary folder
            rows += _tensorrt_rows(onnx_path, detector, images, args.repeats)
    print(f"run {work.name}: {checkpoint.name}, {len(images)} validation images "
          f"({', '.join(sorted({f'{i.shape[1]}x{i.shape[0]}' for i in images}))})")  # fmt: skip
    print(f"export: {exported:.1f} s, {size_mb:.1f} MiB")
    for line in describe(rows):
        print(line)
    if blocker:
        print(f"tensorrt fp16: not measured: {blocker}")
    print(json.dumps({"rows": rows, "export_s": round(exported, 2)}))
    return 0


def _tensorrt_rows(onnx_path: Path, detector, images, repeats: int) -> list[dict]:
    """TensorRT fp16 (an engine built here from the ONNX file) beside ONNX Runtime, on the same
    canvases (the pre-processing is ONNX Runtime's helper for both)."""
    import numpy as np

    from src.engine.speed import measure
    from src.export.tensorrt_build import TensorRTDetector, build_engine

    engine_path = onnx_path.with_suffix(".engine")
    started = time.perf_counter()
    build_engine(onnx_path, engine_path, max_side=detector.scale[0], divisor=detector.divisor)
    print(f"tensorrt fp16 engine built in {time.perf_counter() - started:.0f} s")
    engine = TensorRTDetector(engine_path)

    def trt_run(batch):
        sizes = np.array([image.shape[:2] for image in batch], np.float32)
        return engine.run(detector.batch(batch), sizes)

    rows = measure({"tensorrt_fp16": trt_run}, images, repeats=repeats)
    return rows


if __name__ == "__main__":
    sys.exit(main())
