"""What our session and hooks cost: bare mmengine Runner vs TrainingSession, side by side.

Trains the same config (RTMDet-tiny from scratch, 160 px, batch 2, CPU, a generated project) in
alternating runs: A = mmengine's own Runner with the composed config as it is; B = TrainingSession
with every hook of the app (metrics, stop, RNG state, non-finite guard, work-dir guard, phase).
Both measure training iterations only (after a warm-up), with the same timing hook.

Prints iterations per second of each, their ratio (goal: B/A >= 0.99, i.e. overhead <= 1%),
the stop latency in iterations (goal <= 1) and the time from ``start()`` to the first iteration.
B's sampler hands out ``SampleIndex`` values, so B includes the per-sample seeding of the
augmentations (issue 15); its cost alone is measured too: the training dataset's samples
(the "medium" preset) loaded with and without it, alternating, in one process.

    .venv/bin/python bench/overhead.py [--pairs 5] [--epochs 6]

On a shared 2-core machine single runs vary by several percent: read the median of the pairs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import run_child  # noqa: E402

warnings.filterwarnings("ignore")


class IterTimes:
    """A tiny hook recording when each training iteration ends."""

    def __init__(self) -> None:
        from mmengine.hooks import Hook

        outer = self

        class _Hook(Hook):
            priority = "LOWEST"

            def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
                outer.times.append(time.perf_counter())

        self.times: list[float] = []
        self.hook = _Hook()

    def rate(self, warmup: int) -> float:
        times = self.times[warmup:]
        return (len(times) - 1) / (times[-1] - times[0])


def make_cfg(project: Path, work_dir: Path, epochs: int):
    from src.config import zoo
    from src.config.compose import compose_from_zoo
    from src.config.params import DatasetSpec, RunSpec, TrainParams

    params = TrainParams(
        classes=("square", "circle", "triangle"),
        weights="scratch",
        input_size=(160, 160),
        epochs=epochs,
        train_batch_size=2,
        num_workers=0,
        val_interval=epochs + 1,  # training speed only
        lr=0.002,
        seed=0,
    )
    data = DatasetSpec(project_dir=str(project), train_datasets=["train"], val_datasets=["val"])
    return compose_from_zoo(
        zoo.get_model("rtmdet_tiny_8xb32-300e_coco"), params, data, RunSpec(str(work_dir))
    )


def train_bare(cfg, warmup: int, hooks=()) -> float:
    """Train ``cfg`` on mmengine's own Runner, loop and sampler, with none of the app's hooks
    (but ``hooks``, e.g. a measurement's): iterations per second after ``warmup``."""
    from mmengine.runner import Runner

    import src.data.mmdet_dataset
    import src.engine.loops  # noqa: F401

    cfg.train_cfg.type = "EpochBasedTrainLoop"
    cfg.train_dataloader.sampler.type = "DefaultSampler"
    cfg.default_hooks.checkpoint.pop("backend_args", None)
    cfg.experiment_name = f"bare_{time.time_ns()}"
    cfg.visualizer["name"] = cfg.experiment_name
    cfg.log_level = "WARNING"
    timer = IterTimes()
    runner = Runner.from_cfg(cfg)
    runner.register_hook(timer.hook)
    for hook in hooks:
        runner.register_hook(hook)
    runner.train()
    return timer.rate(warmup)


def timed_session(timer: IterTimes) -> type:
    """TrainingSession whose runner also records its iteration times in ``timer``."""
    from src.training.session import TrainingSession

    class Timed(TrainingSession):
        def _build_runner(self):
            runner = super()._build_runner()
            runner.register_hook(timer.hook)
            return runner

    return Timed


def bare(project: Path, work_dir: Path, epochs: int, warmup: int) -> float:
    return train_bare(make_cfg(project, work_dir, epochs), warmup)


def session(project: Path, work_dir: Path, epochs: int, warmup: int) -> float:
    timer = IterTimes()
    run = timed_session(timer)(
        make_cfg(project, work_dir, epochs), work_dir.name, console_log_level="WARNING"
    )
    run.start()
    status = run.wait()
    assert status.state.value == "finished", status.traceback
    return timer.rate(warmup)


def sample_seeding(project: Path, work_dir: Path, rounds: int = 7) -> tuple[float, float, float]:
    """Median seconds per training sample through the "medium" pipeline: unseeded, seeded as
    in the main process (``num_workers=0``: the generators saved and restored around it), and
    seeded as in a data-loader worker (not restored), measured alternately."""
    from dataclasses import replace

    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    import src.data.mmdet_dataset  # noqa: F401  (registers SuperviselyDataset)
    from src.config.compose_pipelines import train_pipeline
    from src.config.params import TrainParams
    from src.data.sample_rng import SampleIndex, seeded

    cfg = make_cfg(project, work_dir, 1)
    params = replace(TrainParams(classes=("square", "circle", "triangle")),
                     input_size=(160, 160), augmentation="medium")  # fmt: skip
    init_default_scope("mmdet")
    dataset = DATASETS.build({**cfg.train_dataloader.dataset, "pipeline": train_pipeline(params)})
    n = len(dataset)
    plain, main, worker = [], [], []
    for r in range(rounds):
        start = time.perf_counter()
        for i in range(n):
            dataset[i]
        plain.append((time.perf_counter() - start) / n)
        start = time.perf_counter()
        for i in range(n):
            dataset[SampleIndex(i, 0, r)]
        main.append((time.perf_counter() - start) / n)
        start = time.perf_counter()
        for i in range(n):
            with seeded(0, r, i, restore=False):  # what a worker does
                dataset[i]
        worker.append((time.perf_counter() - start) / n)
    return tuple(statistics.median(x[1:]) for x in (plain, main, worker))


def stop_latency(project: Path, work_dir: Path) -> tuple[int, float]:
    """(iterations between the stop request and the end, seconds from start() to iteration 1)."""
    from src.training.session import TrainingSession

    class Seen:
        def __init__(self) -> None:
            self.first_at = None
            self.iteration = 0

        def on_train_iter(self, progress) -> None:
            self.iteration = progress.iteration
            self.first_at = self.first_at or time.perf_counter()

        def on_val(self, result) -> None:
            pass

    seen = Seen()
    run = TrainingSession(
        make_cfg(project, work_dir, 50), "latency", sinks=[seen], console_log_level="WARNING"
    )
    started = time.perf_counter()
    run.start()
    while seen.iteration < 10:
        time.sleep(0.01)
    time.sleep(0.07)  # land somewhere inside an iteration
    at_request = seen.iteration
    threading.Thread(target=run.request_stop).start()
    status = run.wait()
    assert status.state.value == "stopped", status
    return status.iteration - at_request, seen.first_at - started


def child(args: argparse.Namespace) -> None:
    """One measurement in this fresh process (OpenMP thread pools are per process and per
    calling thread: a process that already computed on its main thread would slow a training
    thread started later, which is not what the app does)."""
    project, work = Path(args.project), Path(args.work)
    if args.child == "bare":
        print(json.dumps({"rate": bare(project, work, args.epochs, args.warmup)}))
    elif args.child == "session":
        print(json.dumps({"rate": session(project, work, args.epochs, args.warmup)}))
    elif args.child == "seeding":
        plain, main, worker = sample_seeding(project, work)
        print(json.dumps({"plain": plain, "main": main, "worker": worker}))
    else:
        latency, first = stop_latency(project, work)
        print(json.dumps({"latency": latency, "first": first}))


def measure(mode: str, project: Path, work: Path, args: argparse.Namespace) -> dict:
    return run_child(
        __file__, "--child", mode, "--project", str(project), "--work", str(work),
        "--epochs", str(args.epochs), "--warmup", str(args.warmup),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--project", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    from src.data.demo import DemoOptions, make_demo_project

    workdir = Path(tempfile.mkdtemp(prefix="bench_overhead_"))
    project = make_demo_project(workdir / "project", DemoOptions(images=48, seed=0))
    a_rates, b_rates = [], []
    try:
        for i in range(args.pairs):
            a_rates.append(measure("bare", project, workdir / f"a{i}", args)["rate"])
            b_rates.append(measure("session", project, workdir / f"b{i}", args)["rate"])
            print(f"pair {i + 1}: bare {a_rates[-1]:.3f} it/s, session {b_rates[-1]:.3f} it/s")
        stop = measure("latency", project, workdir / "latency", args)
        seeding = measure("seeding", project, workdir / "seeding", args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ratios = [b / a for a, b in zip(a_rates, b_rates, strict=True)]
    print(f"bare mmengine Runner:           {statistics.median(a_rates):.3f} it/s (median)")
    print(f"TrainingSession + all hooks:    {statistics.median(b_rates):.3f} it/s (median)")
    print(
        f"speed ratio session/bare:       {statistics.median(ratios):.3f} "
        f"(pairs: {', '.join(f'{r:.3f}' for r in ratios)})   goal >= 0.99"
    )
    print(f"stop latency:                   {stop['latency']} iteration(s)   goal <= 1")
    print(f"start() to first iteration:     {stop['first']:.2f} s")
    plain, main, worker = (seeding[k] * 1e3 for k in ("plain", "main", "worker"))
    batch_ms = 1e3 / statistics.median(b_rates)
    print(
        f"per-sample seeding, one sample of the medium preset: unseeded {plain:.3f} ms, seeded "
        f"{main:.3f} ms in the main process (+{main - plain:.3f} ms), {worker:.3f} ms in a "
        f"worker (+{worker - plain:.3f} ms); per training iteration of {batch_ms:.0f} ms "
        f"(batch 2, workers 0): +{100 * 2 * (main - plain) / batch_ms:.2f} %"
    )


if __name__ == "__main__":
    main()
