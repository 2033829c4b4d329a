"""GPU benchmark (issues 15, 22): what a training iteration is made of, on a CUDA machine.

For RTMDet-s (object detection) and Mask R-CNN R50 (instance segmentation) at 640 px with AMP,
on a generated project of photo-shaped images (16:9, 4:3, portrait), at ``--batch-size`` and at
the batch the app chooses on the card (``src.engine.autosize``), each in fresh processes:
- *limit*: the model's forward + backward + optimizer step on batches already on the GPU (no
  loader, no hooks; the run's own shapes and AMP), images/s;
- *loader*: the train data loader alone, with the workers the app chooses, images/s;
- bare mmengine Runner vs our session (every app hook), alternately, iterations and images per
  second and their ratio (goal >= 0.99; session >= 0.9 x the limit's images/s); the true peak of
  *reserved* memory (what the sizing budgets: ``torch.cuda.max_memory_reserved``, read after every
  iteration before mmengine's log processor resets it) and the utilisation sampled meanwhile;
- the time from ``start()`` to the first iteration and the evaluation after training;
- a ``torch.profiler`` summary of a few limit iterations (top ops by CUDA and by CPU time),
  written to ``--out`` (default ``bench/out``);
- with 2+ GPUs the session's scaling on all of them (samples/s on N / (N x on one)).
Every timed run lasts ``--iters`` iterations whatever the batch (issue 34: 192 images x 3 epochs at
batch 96 had fewer than the 7 a rate needs after its 5 warm-up ones); the epochs follow from the
train images and the batch (:func:`epochs_for`). Each figure is printed as soon as it is measured
(a run cut short keeps what it had), then one table. ``--smoke`` runs all of it on the CPU, tiny,
with 2 CPU processes for the scaling: it checks the script, its numbers mean nothing. Without a
CUDA GPU (and no ``--smoke``) it says so and exits 0.

    .venv/bin/python bench/gpu.py [--pairs 3] [--iters 40] [--images 256]   (make bench-gpu)
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


def train_images(project: str | Path) -> int:
    """The project's train images (its ``train`` dataset, nested ones included)."""
    return sum(1 for p in Path(project, "train").rglob("img/*") if p.is_file())


def epochs_for(iterations: int, batch: int, images: int) -> int:
    """Epochs that make at least ``iterations`` iterations of ``batch`` from ``images`` (an
    epoch counted as its full batches only: a sampler may drop the last, a pipeline an image)."""
    per_epoch = max(1, images // max(1, batch))
    return max(1, -(-iterations // per_epoch))


def rate_of(times: list[float], warmup: int = WARMUP) -> float:
    """Iterations per second between the ends of the iterations after ``warmup``; an error that
    says how many there were when too few to measure (not an IndexError or a division by 0)."""
    timed = times[warmup:]
    if len(timed) < 2:
        raise ValueError(f"{len(times)} iterations: a rate needs at least {warmup + 2} "
                         f"({warmup} warm-up); raise --iters")  # fmt: skip
    return (len(timed) - 1) / (timed[-1] - timed[0])


def make_cfg(args, model: str, task: str, work_dir: Path, batch: int, gpus=(), nproc=1):
    import os

    from src.config import zoo
    from src.config.compose import compose_from_zoo
    from src.config.params import DatasetSpec, RunSpec, TrainParams
    from src.engine.autosize import choose_workers

    # rectangles have no mask: instance segmentation trains on the other two classes
    classes = ("circle", "triangle") if task == "instance-segmentation" else (
        "square", "circle", "triangle")  # fmt: skip
    # score_thr 0: a model trained for minutes from scratch still predicts, so the evaluation
    # has every detection to evaluate (its slowest case) instead of failing on none.
    # Workers: what the app chooses here, set explicitly so that bare and session load alike.
    workers = choose_workers(os.cpu_count(), max(1, len(gpus), nproc), cuda=not args.smoke)
    # the iterations, not the epochs, are what a rate needs (a sizing run trains none)
    epochs = epochs_for(args.iters, batch * max(1, len(gpus), nproc),
                        train_images(args.project)) if batch else 1  # fmt: skip
    params = TrainParams(
        task=task, classes=classes, weights="scratch", epochs=epochs, score_thr=0.0,
        input_size=(args.size, args.size), train_batch_size=batch, num_workers=workers,
        val_interval=epochs + 1 if getattr(args, "no_eval", False) else epochs, lr=0.001,
        amp=not args.smoke, gpus=tuple(gpus), nproc=nproc,
        device="cpu" if args.smoke else "cuda:0",
    )  # fmt: skip
    data = DatasetSpec(project_dir=args.project, train_datasets=["train"], val_datasets=["val"])
    return compose_from_zoo(zoo.get_model(model, task), params, data, RunSpec(str(work_dir)))


def _reserved_peak(index: int) -> int:
    import torch

    return int(torch.cuda.max_memory_reserved(index))


def _gpu_stats(args):
    """The app's GPU watcher (utilisation) reading the *reserved* peak, which the sizing
    budgets (the allocated one hides the cache's blocks and fragmentation); None on the CPU."""
    if args.smoke:
        return None
    from src.engine.gpu_stats import GpuStats

    return GpuStats("cuda:0", every_s=0.5, peak=_reserved_peak)


def _memory(stats) -> dict:
    """``reserved_peak_gib`` and the utilisation (CUDA), or the process's peak RSS (smoke)."""
    if stats is None:
        return {"cpu_rss_peak_gib": round(_cpu_peak_mib() / 1024, 3)}
    values = stats.snapshot()
    return {"reserved_peak_gib": values.pop("peak_gib"), **values}


def _cpu_peak_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def size(args, model: str, task: str, work: Path) -> dict:
    """The batch the app chooses on this card (CPU: its default)."""
    from src.engine.autosize import size_the_run

    cfg = make_cfg(args, model, task, work, batch=None)
    sized = size_the_run(cfg, "cpu" if args.smoke else "cuda:0")
    return {"batch": sized.batch_size, "notes": sized.notes}


def _device_batches(cfg, device: str, count: int) -> list:
    """``count`` real batches of the run's train loader, moved to ``device`` beforehand."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    import src.data.mmdet_dataset
    import src.engine.loops  # noqa: F401  (registers the app's sampler)

    init_default_scope("mmdet")
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    batches = []
    while len(batches) < count:
        for batch in loader:
            batch["inputs"] = [t.to(device, non_blocking=True) for t in batch["inputs"]]
            batch["data_samples"] = [s.to(device) for s in batch["data_samples"]]
            batches.append(batch)
            if len(batches) == count:
                break
    return batches


def limit(args, model: str, task: str, work: Path, batch: int) -> dict:
    """Forward + backward + step on batches already on the device: the model's own limit; and a
    profile of a few of those steps."""
    import copy

    import torch
    from mmdet.registry import MODELS
    from mmengine.optim import build_optim_wrapper

    device = "cpu" if args.smoke else "cuda:0"
    cfg = make_cfg(args, model, task, work, batch)
    batches = _device_batches(cfg, device, 4)
    net = MODELS.build(copy.deepcopy(cfg.model)).to(device)
    net.train()
    optim = build_optim_wrapper(net, copy.deepcopy(cfg.optim_wrapper))

    def sync() -> None:
        if device != "cpu":
            torch.cuda.synchronize()

    def step(i: int) -> None:
        net.train_step(copy.copy(batches[i % len(batches)]), optim)

    for i in range(WARMUP):
        step(i)
    sync()
    steps = 4 if args.smoke else 30
    started = time.perf_counter()
    for i in range(steps):
        step(i)
    sync()
    rate = steps * batch / (time.perf_counter() - started)
    if getattr(args, "no_profile", False):
        return {"images_per_s": rate, "profile": None}
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device != "cpu":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for i in range(3):
            step(i)
        sync()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = out / f"profile_{model}_b{batch}.txt"
    tables = []
    for key in (["cuda_time_total"] if device != "cpu" else []) + ["cpu_time_total"]:
        table = prof.key_averages().table(sort_by=key, row_limit=20)
        tables.append(f"top ops by {key} (3 steps, batch {batch})\n{table}")
    report.write_text("\n\n".join(tables), encoding="utf-8")
    return {"images_per_s": rate, "profile": str(report)}


def loader(args, model: str, task: str, work: Path, batch: int) -> dict:
    """The train data loader alone (the app's workers, pinned memory on CUDA): images/s over
    ``--iters`` batches. The clock starts once the batches the workers prefetched while the
    first was awaited (``workers x prefetch_factor``) are consumed: those came for free and
    would inflate the rate (issue 34)."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    import src.data.mmdet_dataset
    import src.engine.loops  # noqa: F401

    cfg = make_cfg(args, model, task, work, batch)
    init_default_scope("mmdet")
    data = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    workers = cfg.train_dataloader.num_workers
    skip = 1 + workers * (getattr(data, "prefetch_factor", None) or 2)
    images, seen, started = 0, 0, None
    while seen < skip + args.iters:
        for item in data:
            seen += 1
            if seen == skip:  # the prefetched batches are consumed: time from here
                started = time.perf_counter()
            elif seen > skip:
                images += len(item["inputs"])
            if seen == skip + args.iters:
                break
    return {"images_per_s": images / (time.perf_counter() - started), "workers": workers,
            "batches_timed": args.iters, "prefetched_skipped": skip}  # fmt: skip


def bare(args, model: str, task: str, work: Path, batch: int) -> dict:
    stats = _gpu_stats(args)
    hooks = []
    if stats is not None:
        from src.hooks.gpu_memory import GpuMemoryHook

        hooks.append(GpuMemoryHook(stats))
    rate = train_bare(make_cfg(args, model, task, work, batch), WARMUP, hooks)
    return {"rate": rate, "memory": _memory(stats)}


class _Relayed:
    """When each training iteration's report reached this process."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_iter(self, progress) -> None:
        self.times.append(time.perf_counter())

    def on_val(self, result) -> None:
        pass


def _measured_session(timer: IterTimes, stats) -> type:
    """TrainingSession whose runner also records its iteration times in ``timer`` and, on CUDA,
    the reserved peak in ``stats`` (the app's own reading is the allocated one)."""
    base = timed_session(timer)
    if stats is None:
        return base

    class Measured(base):
        def _build_runner(self):
            from src.hooks.gpu_memory import GpuMemoryHook

            runner = super()._build_runner()
            runner.register_hook(GpuMemoryHook(stats))
            return runner

    return Measured


def session(args, model: str, task: str, work: Path, batch: int, gpus=(), nproc=1) -> dict:
    from src.evaluation.evaluate import EvaluationError, evaluate_run
    from src.training.session import TrainingSession

    timer = IterTimes()
    cfg = make_cfg(args, model, task, work, batch, gpus, nproc)
    several = bool(gpus) or nproc > 1
    relayed = _Relayed()
    stats = None if several else _gpu_stats(args)
    run = (TrainingSession if several else _measured_session(timer, stats))(
        cfg, work.name, sinks=[relayed], console_log_level="WARNING"
    )
    started = time.perf_counter()
    run.start()
    while run.status().iteration < 1 and not run.status().state.is_final:
        time.sleep(0.01)
    first = time.perf_counter() - started
    status = run.wait()
    assert status.state.value == "finished", status.traceback
    # several: the ranks train elsewhere; the app's own reading (allocated) is all there is
    memory = status.gpu if several and status.gpu else _memory(stats)
    result = {"first": first, "memory": memory}
    if several:  # the rate from the iterations rank 0 relays
        result["rate"] = rate_of(relayed.times)
        return result
    result["rate"] = rate_of(timer.times)
    if getattr(args, "no_eval", False):
        return result
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
    batch = args.batch_size
    if args.child == "size":
        result = size(args, model, task, work)
    elif args.child == "limit":
        result = limit(args, model, task, work, batch)
    elif args.child == "loader":
        result = loader(args, model, task, work, batch)
    elif args.child == "bare":
        result = bare(args, model, task, work, batch)
    else:
        several = args.child == "all_gpus"
        gpus = tuple(range(args.gpus)) if several and not args.smoke else ()
        nproc = args.gpus if several and args.smoke else 1  # smoke: CPU processes
        result = session(args, model, task, work, batch, gpus, nproc)
    print(json.dumps(result))


def _say(text: str) -> None:
    print(text, flush=True)


def _measure_model(name: str, args, root: Path, base: list[str], gpu_count: int) -> list[dict]:
    """Every figure of one model, at --batch-size and at the batch the app chooses; each
    printed as soon as it is measured."""

    def child_run(mode: str, batch: int | None, tag: str, *extra: str) -> dict:
        batch_args = ["--batch-size", str(batch)] if batch else []
        return run_child(__file__, "--child", mode, "--model", name, "--work",
                         str(root / f"{name}_{tag}"), *base, *batch_args, *extra)  # fmt: skip

    chosen = child_run("size", None, "size")
    _say(f"{name}: the app chooses batch {chosen['batch']} ({'; '.join(chosen['notes'])})")
    rows = []
    for batch in sorted({args.batch_size, chosen["batch"]}):
        row: dict = {"model": name, "batch": batch}
        limit_ = child_run("limit", batch, f"limit{batch}")
        row["limit img/s"] = limit_["images_per_s"]
        _say(f"{name} b{batch}: limit {row['limit img/s']:.1f} img/s (profile {limit_['profile']})")
        feed = child_run("loader", batch, f"loader{batch}")
        row["loader img/s"] = feed["images_per_s"]
        _say(f"{name} b{batch}: loader {row['loader img/s']:.1f} img/s ({feed['workers']} workers)")
        bares, sessions = [], []
        for i in range(args.pairs):
            for mode, results in (("bare", bares), ("session", sessions)):
                result = child_run(mode, batch, f"{mode}{batch}_{i}")
                results.append(result)
                _say(f"{name} b{batch}: {mode} {result['rate']:.3f} it/s, memory "
                     f"{json.dumps(result['memory'])}")  # fmt: skip
        row["bare it/s"] = statistics.median(r["rate"] for r in bares)
        row["session it/s"] = statistics.median(r["rate"] for r in sessions)
        row["ratio"] = row["session it/s"] / row["bare it/s"]
        row["session img/s"] = row["session it/s"] * batch
        row["of limit"] = row["session img/s"] / row["limit img/s"]
        # the CPU (smoke) and several GPUs have no reserved peak: the process's or the app's peak
        row["reserved peak GiB"] = max(next(iter(r["memory"].values()), 0.0) for r in sessions)
        utils = [r["memory"]["mean_util"] for r in sessions if "mean_util" in r["memory"]]
        if utils:
            row["util %"] = statistics.median(utils)
        row["start s"] = statistics.median(r["first"] for r in sessions)
        evaluations = [r["evaluation"] for r in sessions if "evaluation" in r]
        if evaluations:
            row["evaluation s"] = statistics.median(evaluations)
        else:
            row["evaluation error"] = sessions[-1].get("evaluation_error")
        if gpu_count > 1 or args.smoke:  # smoke: 2 CPU processes
            many = child_run("all_gpus", batch, f"all{batch}", "--gpus", str(max(gpu_count, 2)))
            # an iteration on N devices takes N batches: samples/s on N over N x on one
            row["scaling"] = many["rate"] / row["session it/s"]
        _say(f"{name} b{batch}: session/bare {row['ratio']:.3f}, session "
             f"{row['session img/s']:.1f} img/s = {row['of limit']:.2f} x the limit")  # fmt: skip
        rows.append(row)
    return rows


HEADER = ("model", "batch", "limit img/s", "loader img/s", "bare it/s", "session it/s",
          "ratio", "session img/s", "of limit", "reserved peak GiB", "util %", "start s",
          "evaluation s", "scaling")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--iters", type=int, default=40, help="per timed run, warm-up included")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"), help="profiles go here")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny: checks the script")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--project", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--gpus", type=int, default=1, help=argparse.SUPPRESS)
    # bench/gpu_check.py's children: training speed only (no validation, evaluation, profile)
    parser.add_argument("--no-eval", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-profile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    import torch

    gpu_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not gpu_count and not args.smoke:
        _say("bench/gpu.py: no CUDA GPU here; it measures on a GPU machine (skipped)")
        return
    if args.smoke:
        args.pairs, args.iters, args.images, args.size, args.batch_size = 1, WARMUP + 3, 24, 128, 2
    from src.data.demo import DemoOptions, make_demo_project

    root = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    project = make_demo_project(
        root / "project", DemoOptions(images=args.images, seed=0, mixed_sizes=True)
    )
    base = ["--project", str(project), "--iters", str(args.iters), "--images",
            str(args.images), "--size", str(args.size), "--out", args.out,
            *(["--smoke"] if args.smoke else [])]  # fmt: skip
    device = "CPU (smoke)" if args.smoke else torch.cuda.get_device_name(0)
    _say(f"device: {device}; {args.size} px, AMP {not args.smoke}, {args.pairs} alternating "
         f"pair(s); {args.images} images, {args.iters} iterations a run")  # fmt: skip
    rows = []
    try:
        for name in args.models.split(","):
            rows += _measure_model(name, args, root, base, gpu_count)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        _say(" | ".join(HEADER))
        for row in rows:
            cells = [str(row.get(k, "-")) if k in ("model", "batch") else
                     f"{row[k]:.3f}" if k in row else "-" for k in HEADER]  # fmt: skip
            _say(" | ".join(cells))
        _say("goals: ratio >= 0.99 over >= 3 pairs; of limit >= 0.9")
        for row in rows:
            if row.get("evaluation error"):
                _say(f"no evaluation time for {row['model']}: {row['evaluation error']}")


if __name__ == "__main__":
    main()
