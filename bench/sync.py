"""Does copying checkpoints to Team Files stall training? Sync off vs every epoch, side by side.

Trains the same config (RTMDet-tiny from scratch, 160 px, batch 2, CPU, a generated project,
a checkpoint every epoch) in alternating runs: A = no sync; B = ``CheckpointSync`` every epoch to
a store that takes ``--upload-s`` seconds per file (a slow network: the checkpoint is uploaded
while the next epoch trains). Prints the iterations per second of each, their ratio (goal: B/A
>= 0.99), and the time the training thread spends in the sync hook per epoch (the snapshot: hard
links and a few small files), against the epoch's duration.

    .venv/bin/python bench/sync.py [--pairs 3] [--epochs 6] [--upload-s 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import run_child  # noqa: E402
from overhead import IterTimes, make_cfg  # noqa: E402

warnings.filterwarnings("ignore")


def train(project: Path, work: Path, epochs: int, warmup: int, upload_s: float | None) -> dict:
    from src.hooks.sync import CheckpointSyncHook
    from src.runs.checkpoint_sync import CheckpointSync
    from src.runs.storage import LocalArtifactStore
    from src.training.session import TrainingSession

    class SlowStore(LocalArtifactStore):
        def upload_file(self, local_path, remote_path) -> None:
            time.sleep(upload_s)
            super().upload_file(local_path, remote_path)

    spent: list[float] = []

    class TimedHook(CheckpointSyncHook):
        def after_train_epoch(self, runner) -> None:
            started = time.perf_counter()
            super().after_train_epoch(runner)
            spent.append(time.perf_counter() - started)

    timer = IterTimes()
    hooks, syncer = [], None
    if upload_s is not None:
        syncer = CheckpointSync(
            SlowStore(work / "team"), "/mmdetection-3/bench", work / "_sync", "bench"
        )
        hooks.append(TimedHook(syncer, every_epochs=1))

    class Timed(TrainingSession):
        def _build_runner(self):
            runner = super()._build_runner()
            runner.register_hook(timer.hook)
            return runner

    cfg = make_cfg(project, work / "run", epochs)
    run = Timed(cfg, "run", console_log_level="WARNING", extra_hooks=hooks)
    started = time.perf_counter()
    run.start()
    status = run.wait()
    seconds = time.perf_counter() - started
    assert status.state.value == "finished", status.traceback
    result = {"rate": timer.rate(warmup), "epoch_s": seconds / epochs}
    if syncer is not None:
        syncer.close()
        result["hook_s"] = max(spent)
        result["uploads"] = syncer.status.uploads
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--upload-s", type=float, default=3.0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--project", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        upload = args.upload_s if args.child == "sync" else None
        result = train(Path(args.project), Path(args.work), args.epochs, args.warmup, upload)
        print(json.dumps(result))
        return

    from src.data.demo import DemoOptions, make_demo_project

    workdir = Path(tempfile.mkdtemp(prefix="bench_sync_"))
    project = make_demo_project(workdir / "project", DemoOptions(images=48, seed=0))
    off, on = [], []
    try:
        for i in range(args.pairs):
            for mode, results in (("off", off), ("sync", on)):
                results.append(
                    run_child(
                        __file__,
                        "--child",
                        mode,
                        "--project",
                        str(project),
                        "--work",
                        str(workdir / f"{mode}{i}"),
                        "--epochs",
                        str(args.epochs),
                        "--warmup",
                        str(args.warmup),
                        "--upload-s",
                        str(args.upload_s),
                    )
                )
            print(f"pair {i + 1}: off {off[-1]['rate']:.3f} it/s, sync {on[-1]['rate']:.3f} it/s")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ratios = [b["rate"] / a["rate"] for a, b in zip(off, on, strict=True)]
    hook = max(r["hook_s"] for r in on)
    epoch = statistics.median(r["epoch_s"] for r in on)
    print(f"no sync:                 {statistics.median(r['rate'] for r in off):.3f} it/s (median)")
    print(f"sync every epoch:        {statistics.median(r['rate'] for r in on):.3f} it/s (median), "
          f"{on[-1]['uploads']} uploads of {args.upload_s:.0f} s per file")  # fmt: skip
    print(f"speed ratio sync/no sync: median {statistics.median(ratios):.3f} (goal >= 0.99)")
    print(f"training thread in the sync hook: at most {1000 * hook:.1f} ms per epoch "
          f"({100 * hook / epoch:.2f}% of an epoch of {epoch:.1f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
