"""Training in several processes (issue 15): two gloo ranks on the CPU stand in for two GPUs.
The app process relays rank 0's progress and metrics, a stop reaches every rank after the same
iteration and leaves one resumable checkpoint, a resume on the same number of processes is
bit-identical, and a rank that dies ends the run with its error and no process left behind."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest

from src.app.session import SessionState, TrainingSession
from tests.helpers import assert_same_weights, run, small_cfg

pytestmark = pytest.mark.slow  # each rank starts its own Python with torch and mmdet


def _cfg(project, work_dir, **values):
    # batch 1 on 12 images and 2 ranks: 6 iterations per epoch
    values = dict(epochs=2, train_batch_size=1, num_workers=0, augmentation="medium",
                  nproc=2) | values  # fmt: skip
    return small_cfg(project, work_dir, **values)


class _StopAfter:
    def __init__(self, k: int) -> None:
        self.k, self.session = k, None

    def on_train_iter(self, progress) -> None:
        if progress.iteration >= self.k:
            self.session.request_stop()

    def on_val(self, result) -> None:
        pass


def _no_children_left() -> bool:
    """No rank (or its data-loader worker) is left; multiprocessing's resource tracker, one
    per app process for its whole life, is not a rank."""
    deadline = time.time() + 30
    while time.time() < deadline:
        alive = [
            p for p in psutil.Process().children(recursive=True)
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
            and "resource_tracker" not in " ".join(p.cmdline())
        ]  # fmt: skip
        if not alive:
            return True
        time.sleep(0.2)
    return False


def test_two_ranks_train_stop_together_and_resume_exactly(demo_project, tmp_path):
    app = tmp_path / "app"
    session, straight = run(_cfg(demo_project, app / "straight"), "straight")
    assert straight.state == SessionState.FINISHED, straight.traceback
    # rank 0's reports reached the app process: every iteration, both validations
    assert [h["iter"] for h in session.history["train"]] == list(range(1, 13))
    assert len(session.history["val"]) == 2 and "bbox_mAP" in straight.metrics
    # the run's config.py is the single-process one (the serving app and resumes read it)
    text = (app / "straight" / "config.py").read_text()
    assert "launcher = 'none'" in text and "MMDistributedDataParallel" not in text

    cfg = _cfg(demo_project, app / "split")
    stopper = _StopAfter(8)  # in epoch 2 (iterations 7-12)
    session = TrainingSession(cfg, "split", sinks=[stopper], console_log_level="WARNING")
    stopper.session = session
    session.start()
    stopped = session.wait(600)
    assert stopped.state == SessionState.STOPPED, stopped.traceback
    name = os.path.basename(stopped.stopped_checkpoint)
    assert name.startswith("iter_") and 8 <= int(name[5:-4]) < 12, name  # mid-epoch, one file
    assert _no_children_left()
    _, resumed = run(cfg, "split", resume_from=stopped.stopped_checkpoint)
    assert resumed.state == SessionState.FINISHED, resumed.traceback
    assert_same_weights(app / "straight" / "epoch_2.pth", app / "split" / "epoch_2.pth")


def test_a_killed_rank_ends_the_run_with_its_error_and_no_process_left(demo_project, tmp_path):
    work = tmp_path / "app" / "killed"
    session = TrainingSession(
        _cfg(demo_project, work, epochs=50), "killed", console_log_level="WARNING"
    )
    session.start()
    deadline = time.time() + 300
    while time.time() < deadline and not (work / "epoch_1.pth").is_file():
        time.sleep(0.1)
    ranks = [p for p in psutil.Process().children() if "spawn" in " ".join(p.cmdline())]
    assert len(ranks) == 2, [p.cmdline() for p in ranks]
    os.kill(ranks[1].pid, signal.SIGKILL)
    status = session.wait(120)
    assert status.state == SessionState.FAILED
    assert (
        "died (signal 9 (SIGKILL))" in status.error and "checkpoints saved so far" in status.error
    )
    assert (work / "epoch_1.pth").is_file()  # kept
    assert _no_children_left()


def test_the_app_stop_signal_reaches_the_ranks(demo_project, tmp_path):
    """The platform stopping the app (a stop signal, not the Stop button) stops every rank."""
    flag = threading.Event()
    session = TrainingSession(
        _cfg(demo_project, tmp_path / "app" / "sig", epochs=50), "sig",
        console_log_level="WARNING", stop_signals=[flag.is_set],
    )  # fmt: skip
    session.start()
    deadline = time.time() + 300
    while time.time() < deadline and session.status().iteration < 2:
        time.sleep(0.1)
    flag.set()
    status = session.wait(300)
    assert status.state == SessionState.STOPPED, status.error
    assert status.stopped_checkpoint and os.path.isfile(status.stopped_checkpoint)
    assert _no_children_left()


def test_the_cli_trains_in_two_processes_and_uploads(demo_project, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    team = tmp_path / "team"
    result = subprocess.run(
        [sys.executable, "-m", "src.cli", "train", "--project", str(demo_project),
         "--model", "rtmdet_tiny_8xb32-300e_coco", "--from-scratch", "--epochs", "2",
         "--batch-size", "2", "--input-size", "128", "--workers", "0", "--nproc", "2",
         "--app-data", str(tmp_path / "app"), "--team-files", str(team), "--run-id", "two",
         "--no-evaluate"],
        cwd=root, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "effective batch 4 (2 per device x 2 devices)" in result.stdout
    assert "validation after epoch 2" in result.stdout  # rank 0's metrics reached the CLI
    uploaded = next((team / "mmdetection-3").glob("two_*"))
    assert (uploaded / "epoch_2.pth").is_file() and (uploaded / "experiment_info.json").is_file()
    assert _no_children_left()
