"""What `make train` reaches: its val bbox mAP and the uploaded model's recall@0.5 in mmdet's own
``init_detector`` (score >= 0.3), per CPU instruction set (float results differ between CPUs:
``ATEN_CPU_CAPABILITY`` makes this machine compute as one without AVX-512, or AVX2), so a figure
is quoted as a range. Goal (issue 23): mAP >= 0.6 and recall >= 0.9 everywhere, within 6 minutes
on the slowest 2-core machine seen (2.3x this one).

    .venv/bin/python bench/demo.py [--capabilities default,avx2] [-- extra train options]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def demo_train_command() -> list[str]:
    """The Makefile's ``train`` command (DEMO_PROJECT and DEMO_TRAIN), as make prints it."""
    out = subprocess.run(["make", "-n", "--no-print-directory", "train", "DEMO_DIR=DEMO"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout  # fmt: skip
    line = next(line for line in out.replace("\\\n", " ").splitlines() if "src.cli train" in line)
    return line.split()[1:]  # without the interpreter


def recall_at_50(run_dir: Path, project: Path) -> tuple[int, int]:
    """The uploaded run in mmdet's ``init_detector``, counted as the end-to-end test counts."""
    from mmdet.apis import init_detector

    from tests.helpers import found_at_iou_50

    best = sorted(run_dir.glob("best_*.pth")) or sorted(run_dir.glob("epoch_*.pth"))
    model = init_detector(str(run_dir / "config.py"), str(best[-1]), device="cpu",
                          palette="random")  # fmt: skip
    return found_at_iou_50(model, project)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capabilities", default="default,avx2")
    parser.add_argument("extra", nargs="*", help="more train options (after --)")
    args = parser.parse_args()
    command = demo_train_command()
    root = Path(tempfile.mkdtemp(prefix="bench_demo_"))
    project = root / "project"
    subprocess.run([sys.executable, "-m", "src.cli", "demo-project", str(project),
                    "--images", "128", "--seed", "0"], cwd=ROOT, check=True,
                   capture_output=True)  # fmt: skip
    train = [sys.executable, *[str(project) if a == "DEMO" else a for a in command], *args.extra]
    print("train:", " ".join(train[1:]), flush=True)
    for capability in args.capabilities.split(","):
        env = dict(os.environ)
        if capability != "default":
            env["ATEN_CPU_CAPABILITY"] = capability
        work = root / capability
        started = time.perf_counter()
        out = subprocess.run(
            [*train, "--app-data", str(work / "app"), "--team-files", str(work / "team"),
             "--run-id", "demo", "--no-evaluate"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        seconds = time.perf_counter() - started
        found = re.search(r"final validation: bbox_mAP ([0-9.]+)", out)
        run_dir = next((work / "team" / "mmdetection-3").glob("demo_*"))
        matched, total = recall_at_50(run_dir, project)
        mean = found.group(1) if found else "?"
        recall = f"{matched}/{total} = {matched / total:.3f}"
        print(f"{capability}: bbox mAP {mean}, recall@0.5 {recall}, {seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
