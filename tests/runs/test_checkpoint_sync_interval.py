"""Checkpoint sync by time (``CHECKPOINT_SYNC_MINUTES``, ``SyncPolicy.every_minutes``): while a
run trains, its newest checkpoint goes to Team Files' ``resume/`` at the end of the first epoch
after the interval has passed since the last sync, not at every epoch; with the app's policy
the upload happens during the run, so a new app session could resume the run from there."""

from __future__ import annotations

import time

import pytest

from src.config.params import TrainParams
from src.data.project import Split
from src.hooks.sync import CheckpointSyncHook
from src.runs.checkpoints import last_checkpoint
from src.runs.remote import find_remote_runs
from src.runs.storage import LocalArtifactStore
from src.setup.prepare import TrainRequest
from src.training.controller import SyncPolicy, TrainingController
from tests.helpers import CLASSES, RTMDET, run, small_cfg

ITERS_PER_EPOCH = 6  # the demo project's 12 training images, batch 2


class TrainingClock:
    """Time that passes only as the run trains: ``seconds`` at every training iteration (a
    metrics sink, called in the training thread before the epoch's hooks end it)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def on_train_iter(self, progress) -> None:
        self.now += self.seconds

    def on_val(self, result) -> None:
        pass


class Submitted:
    """A syncer that keeps the name of the checkpoint each submission would upload."""

    def __init__(self) -> None:
        self.checkpoints: list[str] = []

    def submit(self, work_dir: str) -> bool:
        self.checkpoints.append(last_checkpoint(work_dir).name)
        return True


@pytest.mark.slow  # trains 3 epochs: 90 to 140 s here (2 loaded cores)
def test_the_interval_is_time_since_the_last_sync_not_every_epoch(demo_project, tmp_path):
    """An epoch takes 150 s of the run's clock and the interval is 4 minutes: epoch 1's
    checkpoint (150 s) is not synced, epoch 2's (300 s) is, and epoch 3's is not (150 s after
    that sync, though 450 s after the start)."""
    clock, syncer = TrainingClock(150 / ITERS_PER_EPOCH), Submitted()
    hook = CheckpointSyncHook(syncer, every_epochs=None, every_minutes=4, clock=clock)
    cfg = small_cfg(demo_project, tmp_path / "run", epochs=3)
    _, status = run(cfg, "by_time", sinks=[clock], extra_hooks=[hook])
    assert status.state == "finished", status.error
    assert clock.now == 3 * 150  # the clock ran with the training
    assert syncer.checkpoints == ["epoch_2.pth"]


class WaitForTheSync:
    """At epoch 2's first iteration, waits (up to a deadline) for Team Files to list the run as
    resumable: what a new app session would offer if the agent died now."""

    def __init__(self, store: LocalArtifactStore, timeout: float = 120) -> None:
        self.store = store
        self.timeout = timeout
        self.listed: list | None = None  # the runs listed then

    def on_train_iter(self, progress) -> None:
        if progress.epoch != 2 or self.listed is not None:
            return
        deadline = time.monotonic() + self.timeout
        while not (runs := find_remote_runs(self.store)) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.listed = runs

    def on_val(self, result) -> None:
        pass


@pytest.mark.slow  # trains 2 epochs: 40 to 65 s here
def test_a_sync_by_minutes_uploads_to_team_files_while_the_run_trains(demo_project, tmp_path):
    """The app's policy with minutes only, at a real interval far shorter than an epoch here
    (60 ms): epoch 1's checkpoint is in Team Files before epoch 2 trains."""
    store = LocalArtifactStore(tmp_path / "team")
    waiter = WaitForTheSync(store)
    controller = TrainingController(
        tmp_path / "app", store, sinks=[waiter],
        sync=SyncPolicy(every_epochs=None, every_minutes=0.001),
    )  # fmt: skip
    params = TrainParams(
        classes=CLASSES, weights="scratch", epochs=2, train_batch_size=2, val_batch_size=2,
        num_workers=0, input_size=(128, 128), lr=0.002, seed=3, evaluate=False,
    )  # fmt: skip
    controller.start(
        TrainRequest(
            project_dir=str(demo_project), app_data_dir=str(tmp_path / "app"), model=RTMDET,
            params=params, split=Split(train_datasets=["train"], val_datasets=["val"]),
            run_id="minutes",
        )
    )  # fmt: skip
    outcome = controller.wait(600).outcome
    assert outcome.state == "finished", outcome
    assert waiter.listed, "Team Files listed no resumable run while epoch 2 trained"
    [listed] = waiter.listed
    assert (listed.run_id, listed.where) == ("minutes", "Team Files")
    assert (listed.epoch, listed.iteration) == (1, ITERS_PER_EPOCH)
