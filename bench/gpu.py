"""GPU benchmark (issue 15): our TrainingSession vs the bare mmengine Runner on a CUDA machine.

For RTMDet-s (object detection) and Mask R-CNN R50 (instance segmentation) at 640 px with AMP,
on a generated project of photo-shaped images (16:9, 4:3, portrait): training iterations per
second and peak GPU memory of the bare mmengine Runner and of our session (every app hook),
alternately in fresh processes, and their ratio (goal >= 0.99); the time from ``start()`` to
the first iteration; the evaluation after training (``src.app.evaluate``); with 2+ GPUs the
scaling efficiency of the session on all of them (samples/s on N GPUs / (N x on one), from the
iterations rank 0 relays). ``--smoke`` runs all of it on the CPU, tiny, with 2 CPU processes for
the scaling: it checks the script, its numbers mean nothing.
Prints one table; without a CUDA GPU it says so and exits 0.

    .venv/bin/python bench/gpu.py [--pairs 2] [--epochs 3] [--images 96]   (make bench-gpu)
    .venv/bin/python bench/gpu.py --smoke     # the same code path on the CPU, tiny and fast

On a bare GPU machine (Python 3.12, torch + CUDA, nvcc, no network): ``make gpu-wheels`` here,
carry ``.whl/`` there, then ``bash scripts/gpu_setup.sh && PYTHONPATH=/tmp/site python3
bench/gpu.py`` (rehearsed on the CPU with Python 3.12 and torch 2.11; see the README). Not run on
a GPU: none was lent to this project.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import run_child  # noqa: E402
from overhead import IterTimes, timed_session, train_bare  # noqa: E402

MODELS = {
    "RTMDet-s": ("rtmdet_s_8xb32-300e_coco", "object-detection"),
    "Mask R-CNN R50": ("mask-rcnn_r50_fpn_1x_coco", "instance-segmentation"),
}
WARMUP = 5  # iterations left out of the rate (CUDA kernels chosen, allocator warm)


def make_cfg(args: argparse.Namespace, model: str, task: str, work_dir: Path, gpus=(), nproc=1):
    from src.config import zoo
    from src.config.compose import compose_from_zoo
    from src.config.params import DatasetSpec, RunSpec, TrainParams

    # rectangles have no mask: instance segmentation trains on the other two classes
    classes = ("circle", "triangle") if task == "instance-segmentation" else (
        "square", "circle", "triangle")  # fmt: skip
    # score_thr 0: a model trained for minutes from scratch still predicts, so the evaluation
    # has every detection to evaluate (its slowest case) instead of failing on none
    params = TrainParams(
        task=task, classes=classes, weights="scratch", epochs=args.epochs, score_thr=0.0,
        input_size=(args.size, args.size), train_batch_size=args.batch_size, num_workers=2,
        val_interval=args.epochs, lr=0.001, amp=not args.smoke, gpus=tuple(gpus), nproc=nproc,
        device="cpu" if args.smoke else "cuda:0",
    )  # fmt: skip
    data = DatasetSpec(project_dir=args.project, train_datasets=["train"], val_datasets=["val"])
    return compose_from_zoo(zoo.get_model(model, task), params, data, RunSpec(str(work_dir)))


def _peak_memory_mib() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bare(args: argparse.Namespace, model: str, task: str, work: Path) -> dict:
    rate = train_bare(make_cfg(args, model, task, work), WARMUP)
    return {"rate": rate, "memory": _peak_memory_mib()}


class _Relayed:
    """When each training iteration's report reached this process."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_iter(self, progress) -> None:
        self.times.append(time.perf_counter())

    def on_val(self, result) -> None:
        pass


def session(args: argparse.Namespace, model: str, task: str, work: Path, gpus=(), nproc=1) -> dict:
    from src.app.evaluate import EvaluationError, evaluate_run
    from src.app.session import TrainingSession

    timer = IterTimes()
    cfg = make_cfg(args, model, task, work, gpus, nproc)
    several = bool(gpus) or nproc > 1
    relayed = _Relayed()
    run = (TrainingSession if several else timed_session(timer))(
        cfg, work.name, sinks=[relayed], console_log_level="WARNING"
    )
    started = time.perf_counter()
    run.start()
    while run.status().iteration < 1 and not run.status().state.is_final:
        time.sleep(0.01)
    first = time.perf_counter() - started
    status = run.wait()
    assert status.state.value == "finished", status.traceback
    result = {"first": first, "memory": _peak_memory_mib()}
    if several:  # the ranks train elsewhere: the rate from the iterations rank 0 relays
        times = relayed.times[WARMUP:]
        result["rate"] = (len(times) - 1) / (times[-1] - times[0])
        return result
    result["rate"] = timer.rate(WARMUP)
    started = time.perf_counter()
    try:
        evaluate_run(work)
        result["evaluation"] = time.perf_counter() - started
    except EvaluationError as exc:  # e.g. a model from scratch that predicts nothing yet
        result["evaluation_error"] = str(exc)
    return result


def child(args: argparse.Namespace) -> None:
    model, task = MODELS[args.model]
    work = Path(args.work)
    if args.child == "bare":
        result = bare(args, model, task, work)
    else:
        several = args.child == "all_gpus"
        gpus = tuple(range(args.gpus)) if several and not args.smoke else ()
        nproc = args.gpus if several and args.smoke else 1  # smoke: CPU processes
        result = session(args, model, task, work, gpus, nproc)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny: checks the script")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--project", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--gpus", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    import torch

    gpu_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not gpu_count and not args.smoke:
        print("bench/gpu.py: no CUDA GPU here; it measures on a GPU machine (skipped)")
        return
    if args.smoke:
        args.pairs, args.epochs, args.images, args.size, args.batch_size = 1, 2, 24, 128, 2
    from src.data.demo import DemoOptions, make_demo_project

    root = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    project = make_demo_project(
        root / "project", DemoOptions(images=args.images, seed=0, mixed_sizes=True)
    )
    base = ["--project", str(project), "--epochs", str(args.epochs), "--images",
            str(args.images), "--size", str(args.size), "--batch-size", str(args.batch_size),
            *(["--smoke"] if args.smoke else [])]  # fmt: skip
    device = "CPU (smoke)" if args.smoke else torch.cuda.get_device_name(0)
    rows, errors = [], []
    try:
        for name in MODELS:
            bares, sessions = [], []
            for i in range(args.pairs):
                for mode, results in (("bare", bares), ("session", sessions)):
                    results.append(run_child(__file__, "--child", mode, "--model", name,
                                             "--work", str(root / f"{name}_{mode}{i}"),
                                             *base))  # fmt: skip
            row = {
                "model": name,
                "bare it/s": statistics.median(r["rate"] for r in bares),
                "session it/s": statistics.median(r["rate"] for r in sessions),
                "bare MiB": max(r["memory"] for r in bares),
                "session MiB": max(r["memory"] for r in sessions),
                "start s": statistics.median(r["first"] for r in sessions),
            }
            evaluations = [r["evaluation"] for r in sessions if "evaluation" in r]
            if evaluations:
                row["evaluation s"] = statistics.median(evaluations)
            else:
                errors.append(f"{name}: {sessions[-1].get('evaluation_error')}")
            row["ratio"] = row["session it/s"] / row["bare it/s"]
            if gpu_count > 1 or args.smoke:  # smoke: 2 CPU processes
                many = run_child(
                    __file__, "--child", "all_gpus", "--model", name,
                    "--gpus", str(max(gpu_count, 2)),
                    "--work", str(root / f"{name}_all"), *base,
                )  # fmt: skip
                # an iteration on N devices takes N batches: samples/s on N over N x on one
                row["scaling"] = many["rate"] / row["session it/s"]
            rows.append(row)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"device: {device}; {args.size} px, batch {args.batch_size}, AMP {not args.smoke}, "
          f"{args.pairs} alternating pair(s)")  # fmt: skip
    header = ("model", "bare it/s", "session it/s", "ratio", "bare MiB", "session MiB",
              "start s", "evaluation s", "scaling")  # fmt: skip
    print(" | ".join(header))
    for row in rows:
        cells = [row["model"]] + [f"{row[k]:.3f}" if k in row else "-" for k in header[1:]]
        print(" | ".join(cells))
    print("goal: ratio >= 0.99" + (f"; scaling on {gpu_count} GPUs" if gpu_count > 1 else ""))
    for error in errors:
        print(f"no evaluation time: {error}")


if __name__ == "__main__":
    main()
