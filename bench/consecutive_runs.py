"""Does a second run in the same process start as fast as the first? Several short runs with
2 data-loader workers, one after another in one process (what the app does for a resume after a
Stop, or the next API request), each timed from start to its first iteration and to its end:
once as the app does it (the ending run stops its persistent workers,
``src.engine.runner.shut_down_loader_workers``) and once leaving them to the garbage collector
(what mmengine does, and the app did before), side by side, each in a fresh process.

    .venv/bin/python bench/consecutive_runs.py [--runs 4]
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

from bench.common import run_child  # noqa: E402


def runs(project: Path, work: Path, count: int, leave_to_gc: bool) -> list[tuple[float, float]]:
    """(start to first iteration, start to end) of ``count`` runs in this process."""
    from src.engine import runner as runner_module
    from src.training.session import TrainingSession
    from tests.helpers import small_cfg

    if leave_to_gc:
        runner_module.shut_down_loader_workers = lambda runner: None

    class FirstIteration:
        """A metrics sink that notes when the first iteration was reported."""

        def __init__(self) -> None:
            self.at: float | None = None

        def on_train_iter(self, progress) -> None:
            self.at = self.at or time.perf_counter()

        def on_val(self, result) -> None:
            pass

    times = []
    for i in range(count):
        first = FirstIteration()
        cfg = small_cfg(project, work / str(i), epochs=1, num_workers=2)
        session = TrainingSession(cfg, f"r{i}", sinks=[first], console_log_level="WARNING")
        started = time.perf_counter()
        session.start()
        status = session.wait(600)
        assert status.state.value == "finished", status.error
        times.append((first.at - started, time.perf_counter() - started))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--child", choices=["app", "gc"], help=argparse.SUPPRESS)
    parser.add_argument("--project", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        found = runs(Path(args.project), Path(args.work), args.runs, args.child == "gc")
        print(json.dumps(found))
        return

    from src.data.demo import DemoOptions, make_demo_project

    workdir = Path(tempfile.mkdtemp(prefix="bench_consecutive_"))
    project = make_demo_project(workdir / "project", DemoOptions(images=48, seed=0))
    try:
        result = {
            mode: run_child(__file__, "--child", mode, "--runs", str(args.runs),
                            "--project", str(project), "--work", str(workdir / mode))
            for mode in ("app", "gc")
        }  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for mode, label in (("app", "workers stopped at the end"), ("gc", "left to the collector")):
        cells = ", ".join(f"{a:.1f}/{b:.1f}" for a, b in result[mode])
        print(f"{label:28s} start->first iteration/end per run (s): {cells}")
    later = {m: statistics.median(a for a, _ in result[m][1:]) for m in result}
    print(
        f"runs after the first, start to first iteration (median): {later['app']:.1f} s vs "
        f"{later['gc']:.1f} s left to the collector: ratio {later['app'] / later['gc']:.2f}"
    )


if __name__ == "__main__":
    main()
