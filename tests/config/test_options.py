"""Training options users of the older app and of mmdet expect (issue 14): each reaches the
composed config the way mmengine/mmdet spell it, and bad values are refused with the field's
name and its allowed range."""

from __future__ import annotations

import pytest

from src.config import zoo
from src.config.compose import compose_from_zoo
from src.config.params import DatasetSpec, RunSpec, TrainParams
from src.config.schedule import effective_lr, lr_curve
from tests.helpers import CLASSES, FASTER_RCNN, RTMDET, small_cfg


def test_defaults_keep_todays_config(demo_project, tmp_path):
    cfg = small_cfg(demo_project, tmp_path / "w")
    assert not any(h["type"] == "EarlyStoppingHook" for h in cfg.custom_hooks)
    assert cfg.auto_scale_lr.enable is False
    assert "frozen_stages" not in cfg.model.backbone  # RTMDet's CSPNeXt keeps its default
    assert cfg.model.test_cfg.max_per_img == 300 and cfg.model.test_cfg.score_thr == 0.001


def test_early_stopping_is_mmengines_hook_on_the_primary_metric(demo_project, tmp_path):
    cfg = small_cfg(
        demo_project, tmp_path / "w", early_stopping_patience=3, early_stopping_min_delta=0.01
    )
    [hook] = [h for h in cfg.custom_hooks if h["type"] == "EarlyStoppingHook"]
    assert hook == dict(type="EarlyStoppingHook", monitor="coco/bbox_mAP", rule="greater",
                        patience=3, min_delta=0.01)  # fmt: skip


def test_test_time_limits_go_where_each_head_reads_them(demo_project, tmp_path):
    one_stage = small_cfg(demo_project, tmp_path / "a", max_per_img=7, score_thr=0.2)
    assert one_stage.model.test_cfg.max_per_img == 7 and one_stage.model.test_cfg.score_thr == 0.2
    two_stage = small_cfg(demo_project, tmp_path / "b", FASTER_RCNN, max_per_img=7, score_thr=0.2)
    assert two_stage.model.test_cfg.rcnn.max_per_img == 7
    assert two_stage.model.test_cfg.rcnn.score_thr == 0.2
    assert "max_per_img" not in two_stage.model.test_cfg.rpn or (
        two_stage.model.test_cfg.rpn.get("max_per_img") != 7
    )
    cascade = compose_from_zoo(
        zoo.get_model("cascade-rcnn_r50_fpn_1x_coco"),
        TrainParams(classes=CLASSES, weights="scratch", max_per_img=5),
        DatasetSpec(project_dir=str(demo_project)),
        RunSpec(work_dir=str(tmp_path / "c")),
    )
    assert cascade.model.test_cfg.rcnn.max_per_img == 5


def test_frozen_stages_reach_the_backbone(demo_project, tmp_path):
    cfg = small_cfg(demo_project, tmp_path / "w", frozen_stages=2)
    assert cfg.model.backbone.frozen_stages == 2


def test_sgd_nesterov_and_momentum(demo_project, tmp_path):
    cfg = small_cfg(demo_project, tmp_path / "w", optimizer="SGD", momentum=0.8, nesterov=True)
    assert cfg.optim_wrapper.optimizer == dict(
        type="SGD", lr=0.002, weight_decay=1e-4, momentum=0.8, nesterov=True
    )


def test_auto_scale_lr_uses_the_batch_the_zoo_models_lr_was_tuned_for(demo_project, tmp_path):
    """RTMDet's lr 0.004 is for 8 GPUs x 32 images (its name, 8xb32); its config inherits
    ``auto_scale_lr.base_batch_size=16`` from schedule_1x, which would scale the lr 16x too high."""
    from src.config.compose import load_base_config

    cfg = small_cfg(demo_project, tmp_path / "w", auto_scale_lr=True, train_batch_size=4)
    base = cfg.auto_scale_lr.base_batch_size
    zoo_base = load_base_config(zoo.get_model(RTMDET)).auto_scale_lr.base_batch_size
    assert cfg.auto_scale_lr.enable is True and base == 8 * 32 and zoo_base == 16
    params = TrainParams(classes=CLASSES, lr=0.004, train_batch_size=4, auto_scale_lr=True)
    assert effective_lr(params, base) == pytest.approx(0.004 * 4 / 256)
    assert effective_lr(TrainParams(classes=CLASSES, lr=0.004), base) == 0.004  # off: as set


@pytest.mark.parametrize("scheduler", ["poly", "onecycle", "cosine_restarts"])
def test_new_schedulers_have_a_preview(scheduler):
    params = TrainParams(classes=CLASSES, epochs=6, lr=0.01, scheduler=scheduler)
    lrs = [lr for _, lr in lr_curve(params, iters_per_epoch=10)]
    assert len(lrs) == 60 and max(lrs) <= 0.01 + 1e-12 and min(lrs) > 0
    if scheduler == "onecycle":  # up, then down
        peak = lrs.index(max(lrs))
        assert 10 < peak < 30 and lrs[0] < 0.001 and lrs[-1] < 0.001
    if scheduler == "cosine_restarts":  # back to the top at each of the 3 cycles
        assert lrs[0] == lrs[20] == lrs[40] == pytest.approx(0.01)
    if scheduler == "poly":
        assert lrs == sorted(lrs, reverse=True)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (dict(frozen_stages=9), "frozen_stages must be from -1 to 4"),
        (dict(max_per_img=0), "max_per_img must be from 1 to 10000"),
        (dict(score_thr=1.5), "score_thr must be from 0 to 1"),
        (dict(early_stopping_patience=-1), "early_stopping_patience must be from 0 to 1000"),
        (dict(early_stopping_min_delta=2.0), "early_stopping_min_delta must be from 0 to 1"),
        (dict(nesterov=True), "nesterov applies to the SGD optimizer only"),
        (dict(scheduler="exp"), "scheduler 'exp' is unknown"),
    ],
)
def test_bad_values_name_the_field_and_the_range(values, message):
    problems = TrainParams(classes=CLASSES, **values).validate()
    assert any(message in p for p in problems), problems


def test_frozen_stages_are_refused_where_the_backbone_has_none(demo_project, tmp_path):
    from src.setup.prepare import RequestError, TrainRequest, prepare

    request = TrainRequest(
        project_dir=str(demo_project), app_data_dir=str(tmp_path),
        model="retinanet_pvt-t_fpn_1x_coco", params=TrainParams(weights="scratch",
        frozen_stages=1),
    )  # fmt: skip
    with pytest.raises(RequestError, match="backbone PyramidVisionTransformer has no frozen"):
        prepare(request)
    ok = TrainRequest(
        project_dir=str(demo_project), app_data_dir=str(tmp_path), model=RTMDET,
        params=TrainParams(weights="scratch", frozen_stages=1, input_size=(128, 128)),
    )  # fmt: skip
    assert prepare(ok).cfg.model.backbone.frozen_stages == 1


def test_a_gpu_that_does_not_exist_is_refused_by_name():
    from src.engine.devices import device_problem, list_devices

    assert device_problem("cpu") is None
    problem = device_problem("cuda:7")
    assert problem is not None and "cuda:7 does not exist here" in problem
    assert "unknown" in (device_problem("tpu") or "")
    names = [d.name for d in list_devices()]
    assert names == ["cpu"] or all(n.startswith("cuda:") for n in names)


def test_input_size_as_mmdet_means_it_longer_by_shorter_edge_keeping_the_ratio(
    demo_project, tmp_path
):
    from src.cli.arguments import input_size

    assert input_size("1333x800") == input_size("800x1333") == (1333, 800)
    assert input_size("640") == (640, 640)
    cfg = small_cfg(demo_project, tmp_path / "w", input_size=(320, 256))
    for pipeline in (cfg.train_pipeline, cfg.test_pipeline, cfg.val_dataloader.dataset.pipeline):
        [resize] = [t for t in pipeline if t["type"] == "Resize"]
        assert tuple(resize["scale"]) == (320, 256) and resize["keep_ratio"] is True


@pytest.mark.parametrize(
    ("name", "batch"),
    [("rtmdet_s_8xb32-300e_coco", 256), ("detr_r50_8xb2-150e_coco", 16),
     ("yolov3_mobilenetv2_8xb24-320-300e_coco", 192), ("faster-rcnn_r50_fpn_1x_coco", None),
     ("yolox_tiny_8x8_300e_coco", None), ("ssd300_coco", None), ("", None)],
)  # fmt: skip
def test_the_recipe_batch_is_read_from_mmdets_config_name(name, batch):
    from src.config.schedule import recipe_batch

    assert recipe_batch(name) == batch
