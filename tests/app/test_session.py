"""TrainingSession: daemon thread, states, one run at a time, failures reported, hooks at work."""

from __future__ import annotations

import json
import math
import threading

import pytest
import torch

from src.config.compose import apply_owned_settings
from src.config.params import DatasetSpec, RunSpec, TrainParams
from src.config.text import config_to_text, parse_config_text
from src.runs.checkpoints import last_checkpoint
from src.training.session import SessionBusyError, SessionState, TrainingSession
from tests.helpers import CLASSES, Collect, run, run_with_stop_at, small_cfg


def test_run_lifecycle_metrics_and_a_second_run_in_the_same_process(demo_project, tmp_path):
    sink = Collect()
    cfg = small_cfg(demo_project, tmp_path / "app" / "r1")
    session = TrainingSession(cfg, "r1", sinks=[sink], console_log_level="WARNING")
    assert session.status().state == SessionState.IDLE
    assert session.request_stop() is False  # nothing to stop yet
    session.start()
    assert session.status().state in (SessionState.PREPARING, SessionState.TRAINING)
    assert session._thread.daemon
    status = session.wait(600)
    assert status.state == SessionState.FINISHED, status.traceback
    assert not session._thread.is_alive()
    # 12 train images, batch 2: 6 iterations per epoch, every one reported
    assert [p.iteration for p in sink.train] == list(range(1, 13))
    assert status.iteration == 12 and status.epoch == 2 and status.max_epochs == 2
    first = sink.train[0]
    assert {"loss", "loss_cls", "loss_bbox"} <= set(first.losses)
    assert first.lr is not None and first.lr > 0
    assert len(sink.val) == 2
    val = sink.val[-1]
    assert {"bbox_mAP", "bbox_mAP_50", "bbox_mAP_75"} <= set(val.metrics)
    assert set(val.per_class_ap) == set(CLASSES)
    assert len(session.history["train"]) == 12 and len(session.history["val"]) == 2
    # the finished session holds no tensor of the run (on a GPU: its memory, which the next
    # run's batch sizing would find taken)
    assert _tensors_reachable_from(session) == []
    # the exact config of the run is kept beside its checkpoints, for resuming
    assert parse_config_text((tmp_path / "app" / "r1" / "config.py").read_text()).train_cfg
    # a second run in the same process works (mmengine's named instances were released)
    _again, status2 = run(small_cfg(demo_project, tmp_path / "app" / "r2", epochs=1), "r2")
    assert status2.state == SessionState.FINISHED, status2.traceback


def _tensors_reachable_from(root: object) -> list[str]:
    """Types of the tensors an object graph reaches (modules, classes and functions are not
    followed: they lead to every global of the process)."""
    import gc
    import types

    gc.collect()
    seen, stack, found = {id(root)}, [root], []
    stop = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType)
    while stack:
        for ref in gc.get_referents(stack.pop()):
            if id(ref) in seen or isinstance(ref, stop):
                continue
            seen.add(id(ref))
            if isinstance(ref, torch.Tensor) and ref.numel() > 1:
                found.append(type(ref).__name__)
            else:
                stack.append(ref)
    return found


def test_second_start_while_running_is_refused(demo_project, tmp_path):
    first = TrainingSession(
        small_cfg(demo_project, tmp_path / "a"), "a", console_log_level="WARNING"
    )
    first.start()
    try:
        second = TrainingSession(small_cfg(demo_project, tmp_path / "b"), "b")
        with pytest.raises(SessionBusyError, match="already in progress"):
            second.start()
        assert second.status().state == SessionState.IDLE
        with pytest.raises(SessionBusyError, match="already ran"):
            first.start()
    finally:
        first.request_stop()
        first.wait(600)


def test_failure_is_reported_with_traceback_and_frees_the_slot(demo_project, tmp_path):
    cfg = small_cfg(demo_project, tmp_path / "bad")
    cfg.model.bbox_head.type = "NoSuchHead"
    session, status = run(cfg, "bad")
    assert status.state == SessionState.FAILED
    assert "NoSuchHead" in status.error
    assert "Traceback" in status.traceback
    assert not session._thread.is_alive()
    _ok, status = run(small_cfg(demo_project, tmp_path / "ok", epochs=1), "ok")
    assert status.state == SessionState.FINISHED


def test_stop_after_an_iteration_saves_that_iteration(demo_project, tmp_path):
    work = tmp_path / "app" / "s"
    _session, status = run_with_stop_at(small_cfg(demo_project, work), "s", k=4)
    assert status.state == SessionState.STOPPED
    assert status.error is None and status.traceback is None
    assert status.iteration == 4  # latency: the run ended right after the iteration it was asked in
    assert status.stopped_checkpoint == str(work / "iter_4.pth")
    assert last_checkpoint(work) == work / "iter_4.pth"
    log = next(work.glob("*/*.log")).read_text()
    assert "Traceback" not in log


def _poisoned(losses: dict) -> dict:
    nan = float("nan")
    return {k: [x * nan for x in v] if isinstance(v, list) else v * nan for k, v in losses.items()}


def _poison_losses(session: TrainingSession, when) -> None:
    """Make the session's model return NaN losses whenever ``when(runner)`` is true."""
    original_build = session._build_runner

    def build_with_poison():
        runner = original_build()
        model_loss = runner.model.loss

        def loss(*args, **kwargs):
            losses = model_loss(*args, **kwargs)
            return _poisoned(losses) if when(runner) else losses

        runner.model.loss = loss
        return runner

    session._build_runner = build_with_poison


def test_metrics_pass_nan_through_and_nonfinite_steps_are_skipped(demo_project, tmp_path):
    """NaN losses: steps skipped and counted, weights stay finite; too many in a row fail."""
    sink = Collect()
    cfg = small_cfg(demo_project, tmp_path / "nan", epochs=1)
    session = TrainingSession(
        cfg, "nan", sinks=[sink], console_log_level="WARNING", max_nonfinite=3
    )
    _poison_losses(session, lambda runner: runner.iter + 1 in (2, 3))
    session.start()
    status = session.wait(600)
    assert status.state == SessionState.FINISHED, status.traceback
    assert status.skipped_nonfinite_steps == 2
    losses = [p.losses["loss"] for p in sink.train]
    assert math.isnan(losses[1]) and math.isnan(losses[2])  # NaN reported as NaN, never as 0
    assert all(math.isfinite(v) for i, v in enumerate(losses) if i not in (1, 2))
    final = torch.load(tmp_path / "nan" / "epoch_1.pth", weights_only=False)["state_dict"]
    assert all(torch.isfinite(t).all() for t in final.values())

    always = TrainingSession(
        small_cfg(demo_project, tmp_path / "nan2", epochs=2),
        "nan2",
        console_log_level="WARNING",
        max_nonfinite=3,
    )
    _poison_losses(always, lambda runner: runner.epoch >= 1)  # epoch 1 trains, then diverges
    always.start()
    status = always.wait(600)
    assert status.state == SessionState.FAILED
    assert "NaN or Inf for 3 iterations in a row" in status.error
    assert (tmp_path / "nan2" / "epoch_1.pth").is_file()  # the last good checkpoint is kept


def test_every_file_of_the_run_stays_in_app_data(demo_project, tmp_path):
    app_data = tmp_path / "app_data"
    elsewhere = tmp_path / "elsewhere"
    text = config_to_text(small_cfg(demo_project, app_data / "w", epochs=1))
    edited = parse_config_text(text.replace(str(app_data / "w"), str(elsewhere)))
    assert edited.work_dir == str(elsewhere)
    cfg = apply_owned_settings(
        edited,
        TrainParams(classes=CLASSES),
        DatasetSpec(project_dir=str(demo_project), train_datasets=["train"], val_datasets=["val"]),
        RunSpec(work_dir=str(app_data / "w")),
    )
    _session, status = run(cfg, "w", app_data_root=app_data)
    assert status.state == SessionState.FINISHED, status.traceback
    assert not elsewhere.exists()
    assert (app_data / "w" / "epoch_1.pth").is_file()
    assert list((app_data / "w").glob("*/vis_data/scalars.json"))

    guarded = small_cfg(demo_project, elsewhere / "x", epochs=1)
    _, status = run(guarded, "x", app_data_root=app_data)
    assert status.state == SessionState.FAILED
    assert "outside the app-data folder" in status.error
    scalars = next((app_data / "w").glob("*/vis_data/scalars.json")).read_text().splitlines()
    assert any("coco/bbox_mAP" in json.loads(line) for line in scalars)


class _Trained:
    """A metrics sink that says when the run has trained its first iteration."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def on_train_iter(self, progress) -> None:
        self.event.set()

    def on_val(self, result) -> None:
        pass


def test_stop_from_another_thread_while_running(demo_project, tmp_path):
    trained = _Trained()
    session = TrainingSession(
        small_cfg(demo_project, tmp_path / "t", epochs=50), "t", sinks=[trained],
        console_log_level="WARNING",
    )  # fmt: skip
    session.start()
    answers = []

    def stop_once_it_trains() -> None:
        if trained.event.wait(600):
            answers.append(session.request_stop())

    stopper = threading.Thread(target=stop_once_it_trains, name="stopper", daemon=True)
    stopper.start()
    status = session.wait(600)
    trained.event.set()  # (a run that ended without training: the stopper asks now, too late)
    stopper.join(60)
    assert answers == [True], f"Stop was not taken while the run trained: {status}"
    assert status.state == SessionState.STOPPED, status.traceback
    assert 1 <= status.iteration < 50 * 6
    assert status.stopped_checkpoint


def test_lr_preview_matches_the_lr_of_a_real_run(demo_project, tmp_path):
    from src.config.schedule import lr_curve

    params = TrainParams(
        classes=CLASSES, epochs=2, lr=0.002, warmup_iters=3, scheduler="cosine", seed=3
    )
    cfg = small_cfg(demo_project, tmp_path / "lr", epochs=2, lr=0.002, warmup_iters=3)
    session, status = run(cfg, "lr")
    assert status.state == SessionState.FINISHED
    trained = [h["lr"] for h in session.history["train"]]
    preview = [lr for _, lr in lr_curve(params, iters_per_epoch=6)]
    # the sink reports the LR after each step; the preview lists the LR each step trains with
    assert preview[1:] == pytest.approx(trained[:-1], rel=1e-6)
    assert preview[0] == pytest.approx(0.002 * 0.001, rel=1e-6)


def test_a_run_ends_its_data_loader_workers(demo_project, tmp_path):
    """Persistent data-loader workers stop when the run ends. Left to the garbage collector,
    their shutdown stalled the next run of the process for ~21 s (``bench/consecutive_runs.py``)."""
    import psutil

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    _, status = run(small_cfg(demo_project, tmp_path / "w", epochs=1, num_workers=2), "w")
    assert status.state == SessionState.FINISHED, status.error
    left = [
        p for p in psutil.Process().children(recursive=True)
        if p.pid not in before and p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    ]  # fmt: skip
    assert not left, [p.cmdline() for p in left]
