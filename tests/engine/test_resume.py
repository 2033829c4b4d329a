"""Stop anywhere, resume exactly: bit-identical weights to an uninterrupted run."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from src.config.schedule import replan_epochs
from src.runs.checkpoints import find_resumable_runs, last_checkpoint
from src.training.session import SessionState
from tests.helpers import (
    FASTER_RCNN,
    RTMDET,
    assert_same_state,
    assert_same_weights,
    run,
    run_with_stop_at,
    small_cfg,
    stop_during_validation,
)

ROOT = Path(__file__).resolve().parents[2]


def _stop_and_resume(project, tmp_path, model, k=None, epochs=2, **values) -> int:
    """An uninterrupted run without data-loader workers, and the same run with 2 workers
    stopped after iteration ``k`` (None: the middle of the last epoch) and resumed: the same
    final state (model, EMA, optimizer, schedulers, message hub, RNG states, loop position:
    ``assert_same_state``). Each sample's augmentations are drawn from (seed, epoch, index)
    (``src.data.sample_rng``), so neither the workers nor the resume change them. ``k`` must be
    mid-epoch (a stop at an epoch's end tests no sampler); returns the iterations an epoch."""
    app = tmp_path / "app"
    straight_cfg = small_cfg(project, app / "straight", model, epochs=epochs, **values)
    _, straight = run(straight_cfg, "straight")
    assert straight.state == SessionState.FINISHED, straight.traceback
    per_epoch = straight.max_iterations // epochs
    k = (epochs - 1) * per_epoch + per_epoch // 2 if k is None else k
    assert 0 < k < straight.max_iterations and k % per_epoch, (k, per_epoch)  # mid-epoch
    cfg = small_cfg(project, app / "split", model, epochs=epochs, **{**values, "num_workers": 2})
    assert straight_cfg.train_dataloader.num_workers == 0
    assert cfg.train_dataloader.persistent_workers
    _, stopped = run_with_stop_at(cfg, "split", k)
    assert stopped.state == SessionState.STOPPED
    assert stopped.stopped_checkpoint.endswith(f"iter_{k}.pth")
    _, resumed = run(cfg, "split", resume_from=stopped.stopped_checkpoint)
    assert resumed.state == SessionState.FINISHED, resumed.traceback
    last = f"epoch_{epochs}.pth"
    assert_same_state(app / "straight" / last, app / "split" / last)
    return per_epoch


def test_rtmdet_with_two_workers_resumed_mid_epoch_equals_a_run_without_workers(
    mixed_project, tmp_path
):
    # 6 iterations per epoch: iteration 9 is the 3rd batch of epoch 2; "medium" draws flips,
    # resize ratios, crops and colour changes for every sample, on 16:9, 4:3 and portrait images
    _stop_and_resume(mixed_project, tmp_path, RTMDET, k=9, augmentation="medium")


@pytest.mark.slow
def test_faster_rcnn_with_two_workers_resumed_mid_epoch_equals_a_run_without_workers(
    demo_project, tmp_path
):
    # a two-stage model draws proposals with torch's RNG: the saved torch state matters, and
    # the data loaders' own worker seeds must not draw from it (src.engine.runner); one epoch
    # (6 iterations), stopped after its 4th
    _stop_and_resume(demo_project, tmp_path, FASTER_RCNN, k=4, epochs=1)


def test_stop_during_validation_then_resume_is_bit_identical(demo_project, tmp_path):
    app = tmp_path / "app"
    _, _straight = run(small_cfg(demo_project, app / "straight", epochs=2), "straight")
    cfg = small_cfg(demo_project, app / "split", epochs=2)
    _, stopped = stop_during_validation(cfg, "split")
    assert stopped.state == SessionState.STOPPED
    # validation was abandoned; the epoch's checkpoint, saved before it, is the resume point
    assert stopped.stopped_checkpoint.endswith("epoch_1.pth")
    assert last_checkpoint(app / "split").name == "epoch_1.pth"
    _, resumed = run(cfg, "split", resume_from=stopped.stopped_checkpoint)
    assert resumed.state == SessionState.FINISHED, resumed.traceback
    assert_same_state(app / "straight" / "epoch_2.pth", app / "split" / "epoch_2.pth")


def test_resume_with_more_epochs_replans_the_lr_schedule(demo_project, tmp_path):
    """A 2-epoch run continued to 3 follows the LR of a run planned for 3 from the start."""
    app = tmp_path / "app"
    three, status = run(small_cfg(demo_project, app / "three", epochs=3), "three")
    assert status.state == SessionState.FINISHED
    two, status = run(small_cfg(demo_project, app / "two", epochs=2), "two")
    cfg = replan_epochs(small_cfg(demo_project, app / "two", epochs=2), 3)
    more, status = run(cfg, "two", resume_from=app / "two" / "epoch_2.pth")
    assert status.state == SessionState.FINISHED, status.traceback
    assert status.epoch == 3
    planned = {h["iter"]: h["lr"] for h in three.history["train"]}
    continued = {h["iter"]: h["lr"] for h in more.history["train"]}
    assert sorted(continued) == list(range(13, 19))
    for it, lr in continued.items():
        assert lr == pytest.approx(planned[it], rel=1e-6), it
    # the unchanged-length run would have ended at a lower LR: the plan really changed
    assert two.history["train"][-1]["lr"] < planned[12]


def test_a_checkpoint_of_another_geometry_continues_at_its_sample_on_the_new_schedule(
    mixed_project, tmp_path
):
    """A run stopped with batch 2 and resumed with batch 1 (what a resume on another number of
    processes amounts to: other samples per iteration) goes on after the samples it trained,
    re-counted in its own iterations, on the LR schedule of a batch-1 run; it says it is not
    exact."""
    app = tmp_path / "app"
    # a warm-up across the resume point, then a cosine decay: the LR changes every iteration;
    # auto-scaled: the batch-1 LR is half the batch-2 one, and the resumed run must take it
    values = dict(epochs=2, warmup_iters=20, scheduler="cosine", auto_scale_lr=True)
    ones, status = run(small_cfg(mixed_project, app / "ones", train_batch_size=1, **values), "1")
    assert status.state == SessionState.FINISHED
    # 12 images: batch 2 has 6 iterations per epoch; 9 is the 3rd batch of epoch 2
    _, stopped = run_with_stop_at(small_cfg(mixed_project, app / "split", **values), "split", 9)
    assert stopped.state == SessionState.STOPPED
    cfg = small_cfg(mixed_project, app / "split", train_batch_size=1, **values)
    more, status = run(cfg, "split", resume_from=stopped.stopped_checkpoint)
    assert status.state == SessionState.FINISHED, status.traceback
    # 6 samples of epoch 2 done: batch 1 goes on at iteration 12 + 6, to 24
    planned = {h["iter"]: h["lr"] for h in ones.history["train"]}
    continued = {h["iter"]: h["lr"] for h in more.history["train"]}
    assert sorted(continued) == list(range(19, 25))
    for it, lr in continued.items():
        assert lr == pytest.approx(planned[it], rel=1e-6), it
    note = more.geometry_note
    assert "after 6 of its samples" in note and "not bit-identical" in note, note
    assert (app / "split" / "epoch_2.pth").is_file()


def test_runs_lists_resumable_runs(demo_project, tmp_path):
    app = tmp_path / "app"
    run_with_stop_at(small_cfg(demo_project, app / "r1"), "r1", k=3)
    runs = find_resumable_runs(app)
    assert [r.run_id for r in runs] == ["r1"]
    info = runs[0]
    assert info.checkpoint_name == "iter_3.pth" and info.mid_epoch
    assert info.iteration == 3 and info.epoch == 0 and info.max_epochs == 2
    assert info.model_name == RTMDET


def _cli(*args, cwd=ROOT, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "src.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _cli_train_args(
    project, app, team, run_id, epochs=2, workers=2, augmentation="medium", old_code=False
):
    """The app's default of 2 data-loader workers, and random augmentations; no evaluation
    after training (``--no-evaluate``, which the oldest code tested here does not know)."""
    return [
        "train", "--project", str(project), "--model", RTMDET, "--from-scratch",
        "--epochs", str(epochs), "--batch-size", "2", "--val-batch-size", "2",
        "--input-size", "128", "--lr", "0.002", "--workers", str(workers), "--seed", "3",
        "--augmentation", augmentation, "--app-data", str(app), "--team-files", str(team),
        "--run-id", run_id, "--no-cache", *([] if old_code else ["--no-evaluate"]),
    ]  # fmt: skip


def _in_process(*argv: str) -> tuple[str, str]:
    """The CLI's ``main`` in this worker (``tests.test_cli.run_cli``: no process start, about
    8 s of CPU importing torch, mmdet and the SDK) where a test sends no signal; it must
    succeed. Its stdout and stderr."""
    from tests.test_cli import run_cli

    result = run_cli(*argv)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, result.stderr


def _cli_resume(run_id: str | None, app: Path, team: Path) -> str:
    """``train --resume [RUN_ID]`` with today's code, which must succeed; its stdout."""
    resume = ["--resume", run_id] if run_id else ["--resume"]
    return _in_process(
        "train", *resume, "--app-data", str(app), "--team-files", str(team), "--no-evaluate"
    )[0]


@pytest.fixture(scope="module")
def straight_cli_run(demo_project, tmp_path_factory) -> Path:
    """The final weights of an uninterrupted 2-epoch CLI run (what every resumed run must equal)."""
    root = tmp_path_factory.mktemp("straight")
    _in_process(*_cli_train_args(demo_project, root / "app", root / "team", "straight"))
    return root / "app" / "straight" / "epoch_2.pth"


# 12 train images at batch 2: 6 iterations an epoch, 12 in all; epoch 2 is iterations 7 to 12
IN_EPOCH_2 = re.compile(r"\b(7|8|9|10)/12\b")


def _signal_in_epoch_2(proc: subprocess.Popen, sig: int) -> str:
    """Send ``sig`` as soon as the CLI's progress bar (stderr) shows a batch of epoch 2 done and
    at least one still to come; the CLI's stderr up to then and after."""
    seen, chunks = threading.Event(), []

    def read() -> None:
        fd = proc.stderr.fileno()
        while chunk := os.read(fd, 4096):
            chunks.append(chunk.decode(errors="replace"))
            if IN_EPOCH_2.search("".join(chunks[-4:])):
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert seen.wait(600), "epoch 2 never started:\n" + "".join(chunks)[-3000:]
    proc.send_signal(sig)
    proc.wait(300)
    reader.join(30)
    return "".join(chunks)


def _interrupt_in_epoch_2(proc: subprocess.Popen, work_dir: Path) -> str:
    """Ctrl-C in the middle of epoch 2; the CLI's stdout. The stop must land mid-epoch: the
    checkpoint of an iteration of epoch 2, not an epoch's."""
    err = _signal_in_epoch_2(proc, signal.SIGINT)
    out = proc.stdout.read()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    stopped = re.search(r"stopped at epoch 2, iteration (\d+)", out)
    assert stopped, out
    assert 6 < int(stopped.group(1)) < 12, out  # mid-epoch
    assert (work_dir / f"iter_{stopped.group(1)}.pth").is_file()
    return out


# Runs written by older code must resume bit-identically with today's (registry names, run folder,
# checkpoint format and run description unchanged):
# - 7a2bf8c, the last commit before the source tree was regrouped into packages (issue 12). That
#   code drew augmentations from the generators' running state (before per-sample seeding), so
#   only a run without random augmentations and workers is the same run under both.
# - 6378124, the last commit before the run description, the run folder's names and checkpoint
#   I/O got a module each (issue 24): the app's defaults (2 workers, random augmentations).
OLD_COMMITS = {"7a2bf8c": dict(workers=0, augmentation="none"), "6378124": {}}


def _old_code(commit: str, into: Path) -> Path:
    """``src`` and ``configs`` as they were at ``commit`` (skips without the history)."""
    has_commit = subprocess.run(
        ["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=ROOT, check=False
    )
    if has_commit.returncode != 0:
        pytest.skip(f"needs the repository's history (commit {commit})")
    into.mkdir()
    archive = subprocess.run(
        ["git", "archive", commit, "src", "configs"], cwd=ROOT, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


@pytest.mark.slow
@pytest.mark.parametrize("commit", OLD_COMMITS)
def test_a_run_saved_by_older_code_resumes_bit_exactly(
    demo_project, tmp_path, straight_cli_run, commit
):
    old = _old_code(commit, tmp_path / "old_code")
    app, team = tmp_path / "app", tmp_path / "team"
    settings = OLD_COMMITS[commit]
    if settings:  # not the app's defaults: an uninterrupted run of its own to compare with
        straight = _cli(*_cli_train_args(demo_project, app, team, "today", **settings))
        assert straight.wait(600) == 0, straight.stderr.read()
        expected = app / "today" / "epoch_2.pth"
    else:
        expected = straight_cli_run
    args = _cli_train_args(demo_project, app, team, "old", **settings, old_code=True)
    proc = _cli(*args, cwd=old)  # interrupted before it ends: nothing to evaluate
    _interrupt_in_epoch_2(proc, app / "old")

    resumed = _cli_resume("old", app, team)
    assert "resuming run old" in resumed
    assert_same_weights(expected, app / "old" / "epoch_2.pth")


@pytest.mark.slow
def test_ctrl_c_stops_gracefully_and_the_cli_resumes_bit_exactly(
    demo_project, tmp_path, straight_cli_run
):
    app, team = tmp_path / "app", tmp_path / "team"
    proc = _cli(*_cli_train_args(demo_project, app, team, "split"))
    out = _interrupt_in_epoch_2(proc, app / "split")
    assert "--resume split" in out

    listing, _ = _in_process("runs", "--app-data", str(app))
    assert "split" in listing
    # the stopped run's state was uploaded with its artifacts: with the app data gone (another
    # machine), `runs --team-files` lists it and `--resume` fetches it from there
    remote, _ = _in_process("runs", "--team-files", str(team))
    assert "split" in remote and "/mmdetection-3/split_" in remote
    shutil.rmtree(app / "split")

    resumed = _cli_resume("split", app, team)
    assert "downloading run split" in resumed and "resuming run split" in resumed
    assert_same_state(straight_cli_run, app / "split" / "epoch_2.pth")


@pytest.mark.slow
def test_sigkill_during_training_resumes_from_the_newest_complete_checkpoint(
    demo_project, tmp_path, straight_cli_run
):
    """Killed with 2 workers in the middle of epoch 2: the newest complete checkpoint (epoch 1's)
    resumes, bit-identical to the uninterrupted run."""
    app, team = tmp_path / "app", tmp_path / "team"
    proc = _cli(*_cli_train_args(demo_project, app, team, "killed"))
    _signal_in_epoch_2(proc, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    runs = find_resumable_runs(app)
    assert runs and runs[0].run_id == "killed"
    assert not (app / "killed" / "epoch_2.pth").exists()
    _cli_resume(None, app, team)  # the newest
    assert_same_state(straight_cli_run, app / "killed" / "epoch_2.pth")


def test_class_balance_resumed_mid_epoch_equals_a_run_without_workers(mixed_project, tmp_path):
    """With mmdet's ClassBalancedDataset around the train set, a run stopped in the middle of
    its 2nd epoch and resumed with 2 workers ends in the same state: the sampler's index
    reaches each repeat through the wrapper. The threshold repeats some images and not others
    (squares in 2/3 of the train images, circles 3/4, triangles 7/12: at 0.6 the 7 images with a
    triangle are doubled, 19 samples, 10 iterations an epoch); at 0.5, as this test had, nothing
    was repeated and its stop at iteration 12 was the run's last, which tested no sampler."""
    per_epoch = _stop_and_resume(mixed_project, tmp_path, RTMDET, class_balance=0.6)
    assert 6 < per_epoch < 12  # 12 images at batch 2: some of them repeated, not all
