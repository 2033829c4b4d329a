"""Training options change training as claimed (issue 14): early stopping ends the run at its
patience, frozen stages do not move, max detections bounds the predictions, every scheduler's
preview is the LR a run trains with, auto-scaled LR is the one used."""

from __future__ import annotations

import json

import pytest
import torch

from src.config.params import TrainParams
from src.config.schedule import lr_curve
from src.training.session import SessionState
from tests.helpers import CLASSES, StopAt, run, small_cfg

# Early stopping counts the validations that report its metric, and mmdet's CocoMetric reports
# nothing when a model kept no box: a model trained from scratch for an epoch or two does that on
# some CPUs and not on others (with AVX2 but not AVX-512 here, even at score threshold 0: its
# scores underflow to 0). These tests are about counting validations across a stop and a resume,
# not about the model: every validation reports mAP 0 (the metric's own computation is replaced;
# everything after it, the hooks, the logs and the replay, is the real code), and min_delta 1.0
# makes none an improvement.
NEVER_IMPROVES = dict(early_stopping_min_delta=1.0)


@pytest.fixture
def every_validation_reports_zero(monkeypatch):
    from mmdet.evaluation import CocoMetric

    monkeypatch.setattr(CocoMetric, "compute_metrics", lambda self, results: {"bbox_mAP": 0.0})


def test_early_stopping_ends_a_finished_run_at_its_patience(
    demo_project, tmp_path, every_validation_reports_zero
):
    # no validation can improve on the first, so the second ends the run
    cfg = small_cfg(demo_project, tmp_path / "w", epochs=5, early_stopping_patience=1,
                    **NEVER_IMPROVES)  # fmt: skip
    _, status = run(cfg, "early")
    assert status.state == SessionState.FINISHED, status.error
    assert status.epoch == 2 and status.max_epochs == 5
    assert status.ended_early.startswith("early stopping at epoch 2 of 5: coco/bbox_mAP")
    assert not (tmp_path / "w" / "epoch_3.pth").exists()


def test_early_stopping_counts_the_validations_before_a_resume(
    demo_project, tmp_path, every_validation_reports_zero
):
    """Patience 2, no validation can improve on the first: an uninterrupted run ends at epoch 3.
    Stopped in epoch 3 and resumed, it must end there too, not count from zero again (it did:
    mmengine keeps the count in memory only, so the resumed run trained to epoch 5)."""
    values = dict(epochs=5, early_stopping_patience=2, **NEVER_IMPROVES)
    _, stopped = run(
        small_cfg(demo_project, tmp_path / "w", **values), "early", sinks=[StopAt(14)]
    )  # 6 iterations per epoch: iteration 14 is in epoch 3
    assert stopped.state == SessionState.STOPPED and stopped.epoch == 3, stopped
    _, resumed = run(
        small_cfg(demo_project, tmp_path / "w", **values), "early",
        resume_from=stopped.stopped_checkpoint,
    )  # fmt: skip
    assert resumed.state == SessionState.FINISHED, resumed.error
    assert resumed.epoch == 3, resumed
    assert resumed.ended_early.startswith("early stopping at epoch 3 of 5: coco/bbox_mAP")


def _weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def test_frozen_stages_stay_put_and_max_detections_bound_the_predictions(demo_project, tmp_path):
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope

    cfg = small_cfg(
        demo_project, tmp_path / "w", frozen_stages=1, max_per_img=2, score_thr=0.0, epochs=2
    )
    _, status = run(cfg, "frozen")
    assert status.state == SessionState.FINISHED, status.error
    first = _weights(tmp_path / "w" / "epoch_1.pth")
    second = _weights(tmp_path / "w" / "epoch_2.pth")
    frozen = [k for k in first if k.startswith(("backbone.stem.", "backbone.stage1."))]
    moving = [k for k in first if k.startswith("backbone.stage4.") and k.endswith(".weight")]
    assert frozen and moving
    for key in frozen:  # weights and BN statistics alike
        assert torch.equal(first[key], second[key]), key
    assert any(not torch.equal(first[k], second[k]) for k in moving)
    with DefaultScope.overwrite_default_scope("mmdet"):
        model = MODELS.build(cfg.model)
    model.train()
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    assert not any(grads[k] for k in frozen if k in grads)
    assert all(grads[k] for k in moving)

    # the validation's own predictions (CocoMetric's file): at most 2 per image
    predictions = json.loads((tmp_path / "w" / "predictions" / "val.bbox.json").read_text())
    per_image: dict[int, int] = {}
    for det in predictions:
        per_image[det["image_id"]] = per_image.get(det["image_id"], 0) + 1
    assert predictions and max(per_image.values()) <= 2


@pytest.mark.parametrize("scheduler", ["poly", "onecycle", "cosine_restarts"])
def test_the_preview_is_the_lr_a_run_trains_with(scheduler, demo_project, tmp_path):
    values = dict(epochs=2, lr=0.002, scheduler=scheduler, restart_epochs=1)
    session, status = run(small_cfg(demo_project, tmp_path / "w", **values), "lr")
    assert status.state == SessionState.FINISHED, status.error
    trained = [h["lr"] for h in session.history["train"]]
    preview = [lr for _, lr in lr_curve(TrainParams(classes=CLASSES, **values), 6)]
    # the sink reports the LR after each step; the preview lists the LR each step trains with
    assert preview[1:] == pytest.approx(trained[:-1], rel=1e-6)


def test_auto_scaled_lr_is_the_lr_used(demo_project, tmp_path):
    cfg = small_cfg(
        demo_project, tmp_path / "w", epochs=1, lr=0.004, scheduler="constant",
        auto_scale_lr=True, train_batch_size=2,
    )  # fmt: skip
    base = cfg.auto_scale_lr.base_batch_size
    session, status = run(cfg, "scaled")
    assert status.state == SessionState.FINISHED, status.error
    lrs = [h["lr"] for h in session.history["train"]]
    assert lrs and all(lr == pytest.approx(0.004 * 2 / base) for lr in lrs)
