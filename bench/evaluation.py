"""What does the evaluation after training cost? Its time ÷ one validation pass of the same model
on the same split, and the peak memory of each (issue 13: goal ≤ 1.3).

Three phases, each in its own process (so each peak RSS is its own), on one trained run:
- ``validate``: one validation pass of the best checkpoint (mmengine's test loop over the
  validation split with CocoMetric: what the training's validation does);
- ``evaluate``: the evaluation as a finished run gets it (the best epoch's validation predictions
  reused; the SDK's evaluator; the report);
- ``evaluate, predicting``: the same for a checkpoint whose predictions were not kept.

    .venv/bin/python bench/evaluation.py [--run RUN_DIR] [--images 96] [--epochs 8] [--size 256]

Without ``--run`` a demo project is generated and RTMDet-tiny trained on it first (minutes).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _phase(name: str, run_dir: Path) -> None:
    """One phase in this process; prints its seconds and peak RSS as JSON."""
    from src.config.text import load_config_file
    from src.core.layout import RUN_CONFIG
    from src.runs.checkpoints import best_checkpoint

    best = best_checkpoint(run_dir)
    started = time.perf_counter()
    if name == "validate":
        from src.engine.predict import predict_split

        with tempfile.TemporaryDirectory() as scratch:
            cfg = load_config_file(run_dir / RUN_CONFIG)
            predict_split(cfg, best, f"{scratch}/p", Path(scratch) / "runner")
    else:
        from src.evaluation.evaluate import evaluate_run

        evaluation = evaluate_run(run_dir)
        assert evaluation.reused_predictions == (name == "evaluate"), evaluation
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mib": peak}))


def _run_phase(name: str, run_dir: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--phase", name, "--run", str(run_dir)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def _train(root: Path, images: int, epochs: int, size: int) -> Path:
    from src.data.demo import DemoOptions, make_demo_project

    project = make_demo_project(root / "project", DemoOptions(images=images, seed=0))
    subprocess.run(
        [sys.executable, "-m", "src.cli", "train", "--project", str(project),
         "--model", "rtmdet_tiny_8xb32-300e_coco", "--from-scratch", "--epochs", str(epochs),
         "--batch-size", "8", "--val-batch-size", "4", "--input-size", str(size), "--lr", "0.01",
         "--workers", "0", "--no-evaluate", "--app-data", str(root / "app"),
         "--team-files", str(root / "team"), "--run-id", "bench"],
        check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return root / "app" / "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, help="a trained run's folder (default: train one)")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        _phase(args.phase, args.run)
        return
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run or _train(Path(tmp), args.images, args.epochs, args.size)
        if not (run_dir / "predictions" / "best.json").is_file():
            sys.exit(f"{run_dir} kept no validation predictions (trained before issue 13?)")
        unkept = Path(tmp) / "unkept"
        shutil.copytree(run_dir, unkept, ignore=shutil.ignore_patterns("predictions"))
        validate = _run_phase("validate", run_dir)
        evaluate = _run_phase("evaluate", run_dir)
        predicting = _run_phase("evaluate-predicting", unkept)
    print(f"{'phase':<24}{'seconds':>9}{'peak RSS MiB':>14}{'÷ validation':>14}")
    for name, result in (("validation pass", validate), ("evaluation", evaluate),
                         ("evaluation, predicting", predicting)):  # fmt: skip
        ratio = result["seconds"] / validate["seconds"]
        print(f"{name:<24}{result['seconds']:>9.2f}{result['peak_mib']:>14.0f}{ratio:>14.2f}")
    print(f"goal: evaluation ÷ validation ≤ 1.3 -> {evaluate['seconds'] / validate['seconds']:.2f}")


if __name__ == "__main__":
    main()
