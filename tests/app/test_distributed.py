"""Training in several processes (issue 15): two gloo ranks on the CPU stand in for two GPUs.
The app process relays rank 0's progress and metrics, a stop reaches every rank after the same
iteration and leaves one resumable checkpoint, a resume on the same number of processes is
bit-identical, and a rank that dies ends the run with its error and no process left behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time

import psutil
import pytest

from src.training.session import SessionState, TrainingSession
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


def test_two_ranks_train_stop_together_and_resume_exactly(mixed_project, tmp_path):
    app = tmp_path / "app"
    session, straight = run(_cfg(mixed_project, app / "straight"), "straight")
    assert straight.state == SessionState.FINISHED, straight.traceback
    # rank 0's reports reached the app process: every iteration, both validations
    assert [h["iter"] for h in session.history["train"]] == list(range(1, 13))
    assert len(session.history["val"]) == 2 and "bbox_mAP" in straight.metrics
    # the run's config.py is the single-process one (the serving app and resumes read it)
    text = (app / "straight" / "config.py").read_text()
    assert "launcher = 'none'" in text and "MMDistributedDataParallel" not in text

    cfg = _cfg(mixed_project, app / "split")
    stopper = _StopAfter(8)  # in epoch 2 (iterations 7-12)
    session = TrainingSession(cfg, "split", sinks=[stopper], console_log_level="WARNING")
    stopper.session = session
    session.start()
    stopped = session.wait(600)
    assert stopped.state == SessionState.STOPPED, stopped.traceback
    name = os.path.basename(stopped.stopped_checkpoint)
    assert name.startswith("iter_") and 8 <= int(name[5:-4]) < 12, name  # mid-epoch, one file
    assert _no_children_left()
    # the same checkpoint continued in one process: allowed, from the samples trained
    one = app / "one"
    one.mkdir()
    shutil.copy(stopped.stopped_checkpoint, one / name)
    _, resumed = run(cfg, "split", resume_from=stopped.stopped_checkpoint)
    assert resumed.state == SessionState.FINISHED, resumed.traceback
    assert_same_weights(app / "straight" / "epoch_2.pth", app / "split" / "epoch_2.pth")

    single, status = run(_cfg(mixed_project, one, nproc=1), "one", resume_from=one / name)
    assert status.state == SessionState.FINISHED, status.traceback
    # 2 x (k - 6) samples of epoch 2 were trained; one process has 12 iterations per epoch
    k = int(name[5:-4])
    iters = [h["iter"] for h in single.history["train"]]
    assert iters == list(range(12 + 2 * (k - 6) + 1, 25)), iters
    assert "not bit-identical" in single.geometry_note
    assert (one / "epoch_2.pth").is_file()


def test_a_killed_rank_ends_the_run_with_its_error_and_no_process_left(mixed_project, tmp_path):
    work = tmp_path / "app" / "killed"
    session = TrainingSession(
        _cfg(mixed_project, work, epochs=50), "killed", console_log_level="WARNING"
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


def _listening(processes) -> set[str]:
    found = set()
    for process in processes:
        with contextlib.suppress(psutil.Error):
            found |= {
                c.laddr.ip for c in process.net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN
            }  # fmt: skip
    return found


def test_the_app_stop_signal_reaches_the_ranks_which_listen_on_loopback_only(
    mixed_project, tmp_path
):
    """The platform stopping the app (a stop signal, not the Stop button) stops every rank.
    While they train, nothing of theirs listens beyond this machine (torch's TCP store listened
    on every interface, '::', and what peers send to all_gather_object is unpickled)."""
    flag = threading.Event()
    session = TrainingSession(
        _cfg(mixed_project, tmp_path / "app" / "sig", epochs=50), "sig",
        console_log_level="WARNING", stop_signals=[flag.is_set],
    )  # fmt: skip
    session.start()
    deadline = time.time() + 300
    while time.time() < deadline and session.status().iteration < 2:
        time.sleep(0.1)
    try:
        addresses = _listening(psutil.Process().children(recursive=True))
    finally:
        flag.set()  # the run ends whatever the check found
    assert addresses and addresses <= {"127.0.0.1", "::1"}, addresses
    status = session.wait(300)
    assert status.state == SessionState.STOPPED, status.error
    assert status.stopped_checkpoint and os.path.isfile(status.stopped_checkpoint)
    assert _no_children_left()


def test_the_cli_trains_in_two_processes_and_uploads(mixed_project, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    team = tmp_path / "team"
    result = subprocess.run(
        [sys.executable, "-m", "src.cli", "train", "--project", str(mixed_project),
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
    # continued for a third epoch in one process: allowed, and said not to be exact
    result = subprocess.run(
        [sys.executable, "-m", "src.cli", "train", "--resume", "two", "--epochs", "3",
         "--nproc", "1", "--app-data", str(tmp_path / "app"), "--team-files", str(team),
         "--no-evaluate"],
        cwd=root, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "continues in 1: the same epoch" in result.stdout, result.stdout[-2000:]
    assert "not bit-identical" in result.stdout
    assert (tmp_path / "app" / "two" / "epoch_3.pth").is_file()


def _share_and_restore(rank: int, world: int, port: int, out: str) -> None:
    """One rank of the test below: its own RNG states, handed to rank 0's checkpoint and back."""
    import random
    from types import SimpleNamespace

    import numpy as np
    import torch
    import torch.distributed as torch_dist
    from mmengine.config import Config

    from src.engine.loops import BatchGeometry, ResumableEpochBasedTrainLoop, get_rng_state
    from src.hooks.resume_state import ResumeStateHook

    torch_dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    random.seed(rank), np.random.seed(rank), torch.manual_seed(100 + rank)
    own = get_rng_state()
    hook = ResumeStateHook()
    hook.share_states()  # what StopHook and every epoch's end do on all ranks
    path = os.path.join(out, "checkpoint.pth")
    if rank == 0:
        loader = type("Loader", (list,), {"batch_size": 2})([0, 0, 0])  # 3 batches of 2
        runner = SimpleNamespace(
            max_epochs=1, cfg=Config({}), world_size=world, train_dataloader=loader
        )
        checkpoint = {"meta": {}}
        hook.before_save_checkpoint(runner, checkpoint)
        torch.save(checkpoint, path)
    torch_dist.barrier()
    torch.manual_seed(999), random.seed(999), np.random.seed(999)  # the resumed run's seeding
    loop = ResumableEpochBasedTrainLoop.__new__(ResumableEpochBasedTrainLoop)
    loop.pending_rng_state = None
    checkpoint = torch.load(path, weights_only=False)
    hook.after_load_checkpoint(SimpleNamespace(_train_loop=loop, _resume=True), checkpoint)
    got = loop.pending_rng_state
    same = (
        torch.equal(got["torch"], own["torch"])
        and got["python"] == own["python"]
        and all(np.array_equal(a, b) for a, b in zip(got["numpy"], own["numpy"], strict=True))
    )
    geometry = BatchGeometry.of_meta(checkpoint["meta"])  # for a resume on another geometry
    with open(os.path.join(out, f"rank{rank}.txt"), "w") as f:
        f.write(f"{same} {geometry.world_size} {geometry.samples_per_iteration}")
    torch_dist.destroy_process_group()


def test_each_rank_resumes_its_own_rng_states(tmp_path):
    """Rank 0 writes the checkpoint, yet every rank gets back its own generators (a two-stage
    head draws its proposals on each rank: rank 0's state on rank 1 would change the run)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_share_and_restore, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        assert (tmp_path / f"rank{rank}.txt").read_text() == "True 2 4", rank
