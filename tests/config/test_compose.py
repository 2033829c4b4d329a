"""Config composition: every zoo architecture builds, class counts are set, text round-trips."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from mmengine.config import Config

from src.config import zoo
from src.config.compose import apply_owned_settings, compose_from_zoo
from src.config.metadata import RunMetadata
from src.config.params import ConfigError, DatasetSpec, RunSpec, TrainParams
from src.config.text import config_to_text, parse_config_text
from tests.helpers import ALL_DEFAULTS

CLASSES = ("square", "circle", "triangle")


def _compose(entry, tmp_path: Path, **overrides):
    params = TrainParams(
        task=entry.task, classes=CLASSES, weights="scratch", input_size=(256, 256), **overrides
    )
    data = DatasetSpec(project_dir=str(tmp_path / "project"), project_name="demo", project_id=7)
    run = RunSpec(work_dir=str(tmp_path / "app_data" / "run1"))
    return compose_from_zoo(entry, params, data, run)


def _num_classes_values(node, path=""):
    """(path, value) of every class-count key in a model config, RPN excluded."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}"
            if key in ("num_classes", "num_things_classes") and "rpn_head" not in path:
                found.append((here, value))
            found.extend(_num_classes_values(value, here))
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            found.extend(_num_classes_values(value, f"{path}[{i}]"))
    return found


@pytest.mark.parametrize("entry", ALL_DEFAULTS)
def test_default_model_of_every_architecture_builds_on_cpu(entry, tmp_path):
    """Acceptance: the composed config (3 classes) builds the model with MODELS.build on CPU."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    if entry.gpu_only:
        pytest.skip(f"GPU-only architecture {entry.architecture}: {entry.gpu_only}")
    if entry.missing_packages():
        pytest.skip(
            f"{entry.architecture} needs {entry.missing_packages()} (in the Docker image; "
            "mmpretrain imports torchvision, which has no build for this CPU torch)"
        )
    cfg = _compose(entry, tmp_path)
    counts = _num_classes_values(cfg.model)
    assert counts, "no class count found in the model"
    assert all(value == 3 for _, value in counts), counts
    init_default_scope("mmdet")
    model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0
    # nothing downloads: no pretrained init left anywhere
    assert "Pretrained" not in config_to_text(cfg)
    assert cfg.load_from is None


def test_mask2former_class_weights_follow_the_class_count(tmp_path):
    cfg = _compose(zoo.get_model("mask2former_r50_8xb2-lsj-50e_coco"), tmp_path)
    head = cfg.model.panoptic_head
    assert head.num_things_classes == 3 and head.num_stuff_classes == 0
    assert head.loss_cls.class_weight == [1.0, 1.0, 1.0, 0.1]
    assert cfg.model.panoptic_fusion_head.num_things_classes == 3
    assert not cfg.model.data_preprocessor.get("batch_augments")


def test_batch_augments_and_pipeline_switch_hooks_are_removed(tmp_path):
    cfg = _compose(zoo.get_model("yolox_s_8x8_300e_coco"), tmp_path)
    assert not cfg.model.data_preprocessor.get("batch_augments")
    hook_types = {h["type"] for h in cfg.custom_hooks}
    assert "YOLOXModeSwitchHook" not in hook_types
    rtm = _compose(zoo.get_model("rtmdet_tiny_8xb32-300e_coco"), tmp_path)
    assert "PipelineSwitchHook" not in {h["type"] for h in rtm.custom_hooks}


def test_rpn_stays_class_agnostic(tmp_path):
    cfg = _compose(zoo.get_model("faster-rcnn_r50_fpn_1x_coco"), tmp_path)
    assert cfg.model.rpn_head.get("num_classes", 1) == 1
    assert cfg.model.roi_head.bbox_head.num_classes == 3


def test_composed_config_wires_our_dataset_metric_and_work_dir(tmp_path):
    cfg = _compose(zoo.get_model("mask-rcnn_r50_fpn_1x_coco", "instance-segmentation"), tmp_path)
    train = cfg.train_dataloader.dataset
    assert train.type == "SuperviselyDataset"
    assert train.classes == list(CLASSES)
    assert cfg.val_evaluator.type == "CocoMetric"
    assert cfg.val_evaluator.metric == ["bbox", "segm"]
    assert cfg.val_evaluator.ann_file == cfg.val_dataloader.dataset.coco_gt_file
    assert cfg.work_dir == str(tmp_path / "app_data" / "run1")
    assert any(t["type"] == "LoadAnnotations" and t["with_mask"] for t in train.pipeline)
    assert cfg.default_hooks.checkpoint.save_best == "coco/segm_mAP"


def test_sly_metadata_is_the_last_key_of_the_text(tmp_path):
    cfg = _compose(zoo.get_model("rtmdet_tiny_8xb32-300e_coco"), tmp_path)
    text = config_to_text(cfg)
    top_level = [line for line in text.splitlines() if line and not line[0].isspace()]
    assert top_level[-1].startswith("sly_metadata = dict(")
    meta = parse_config_text(text).sly_metadata
    assert RunMetadata.of({"sly_metadata": meta}).task_type == "object-detection"
    assert meta.model_name == "rtmdet_tiny_8xb32-300e_coco"
    assert meta.architecture == "RTMDet"
    assert meta.project_name == "demo" and meta.project_id == 7
    # where Supervisely's MMDetection 3 artifacts parser looks: the project name between the
    # first quotes of the last line, the task type ("_" read as " ") on the third line from it
    lines = text.rstrip("\n").splitlines()
    assert lines[-1].split("'")[1] == "demo"
    assert lines[-3].split("'")[1].replace("_", " ") == "object detection"
    assert config_to_text(parse_config_text(text)) == text  # stable through the Editor


def test_text_round_trip_builds_the_same_runner(tmp_path):
    """dump → Config.fromstring → the same config, and the same model weights' layout."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    cfg = _compose(zoo.get_model("rtmdet_tiny_8xb32-300e_coco"), tmp_path)
    text = config_to_text(cfg)
    again = Config.fromstring(text, ".py")
    assert again.to_dict() == Config.fromstring(config_to_text(again), ".py").to_dict()
    assert again.to_dict() == parse_config_text(text).to_dict()
    for key in ("model", "train_dataloader", "val_evaluator", "optim_wrapper", "param_scheduler"):
        assert again[key] == cfg[key], key  # what was composed, not the text read twice
    init_default_scope("mmdet")
    a, b = MODELS.build(cfg.model), MODELS.build(again.model)
    assert {k: v.shape for k, v in a.state_dict().items()} == {
        k: v.shape for k, v in b.state_dict().items()
    }


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("a = 1\nb = dict(\nc = 3\n", 2, "syntax error"),
        ("a = 1\nb = undefined_name + 1\n", 2, "NameError"),
        ("x = [1, 2\ny = 3\n", 1, "syntax error"),
    ],
)
def test_invalid_text_reports_the_line(text, line, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_config_text(text)
    assert info.value.line == line
    assert f"line {line}" in str(info.value)


def test_edited_text_is_kept_except_what_the_app_owns(tmp_path):
    cfg = _compose(zoo.get_model("rtmdet_tiny_8xb32-300e_coco"), tmp_path)
    text = config_to_text(cfg)
    text = text.replace("lr=0.0001", "lr=0.0123").replace(
        f"work_dir = '{cfg.work_dir}'", "work_dir = '/somewhere/else'"
    )
    edited = parse_config_text(text)
    params = TrainParams(classes=("a", "b"), weights="scratch")
    data = DatasetSpec(project_dir="/data/p2", project_name="p2")
    run = RunSpec(work_dir=str(tmp_path / "app_data" / "run2"))
    final = apply_owned_settings(edited, params, data, run)
    assert final.optim_wrapper.optimizer.lr == pytest.approx(0.0123)  # the user's edit
    assert final.work_dir == run.work_dir  # owned
    assert final.train_dataloader.dataset.project_dir == "/data/p2"
    assert final.model.bbox_head.num_classes == 2
    assert list(final.keys())[-1] == "sly_metadata"


def test_train_params_report_every_problem():
    params = TrainParams(
        classes=(), train_batch_size=0, lr=-1.0, optimizer="Lion", input_size=(10, 10)
    )
    problems = params.validate()
    assert any("no classes" in p for p in problems)
    assert any("train_batch_size" in p for p in problems)
    assert any("learning rate" in p for p in problems)
    assert any("Lion" in p for p in problems)
    assert any("input size" in p for p in problems)
    assert TrainParams(classes=("a",)).validate() == []


def test_schedule_warmup_clip_amp_and_checkpoints(tmp_path):
    entry = zoo.get_model("rtmdet_tiny_8xb32-300e_coco")
    cfg = _compose(
        entry,
        tmp_path,
        epochs=12,
        scheduler="step",
        warmup_iters=50,
        grad_clip=5.0,
        optimizer="SGD",
        lr=0.02,
        checkpoint_interval=2,
        keep_checkpoints=3,
        save_best=False,
    )
    assert cfg.train_cfg.max_epochs == 12
    assert cfg.param_scheduler[0].type == "LinearLR" and cfg.param_scheduler[0].end == 50
    assert cfg.param_scheduler[1].type == "MultiStepLR"
    assert cfg.param_scheduler[1].milestones == [8, 11]
    assert cfg.optim_wrapper.optimizer.type == "SGD"
    assert cfg.optim_wrapper.optimizer.momentum == 0.9
    assert cfg.optim_wrapper.clip_grad.max_norm == 5.0
    assert cfg.default_hooks.checkpoint.interval == 2
    assert cfg.default_hooks.checkpoint.max_keep_ckpts == 3
    assert cfg.default_hooks.checkpoint.save_best is None
    amp = _compose(entry, tmp_path, amp=True)
    assert amp.optim_wrapper.type == "AmpOptimWrapper"
    pretrained = compose_from_zoo(
        entry,
        replace(TrainParams(classes=CLASSES), weights="pretrained"),
        DatasetSpec(project_dir="/p"),
        RunSpec(work_dir=str(tmp_path / "w")),
    )
    assert pretrained.load_from == entry.weights_url


def test_a_config_that_never_ends_is_stopped_with_a_message(monkeypatch):
    """``while True: pass`` in the Editor must not keep the app "preparing" for good."""
    import time

    import src.config.text
    from src.config.params import ConfigError
    from src.config.text import parse_config_text

    monkeypatch.setattr(src.config.text, "CONFIG_TIMEOUT_S", 1.0)
    started = time.monotonic()
    with pytest.raises(ConfigError, match="did not finish executing in 1 s"):
        parse_config_text("x = 0\nwhile True:\n    x += 1\n")
    assert time.monotonic() - started < 30
    time.sleep(1.5)  # a config that ends in time is never interrupted later
    assert parse_config_text("a = 1\n").a == 1
    time.sleep(1.5)


def test_one_primary_metric_rule():
    """Mask mAP for segmentation everywhere (best checkpoint, summary, the runs tables), box mAP
    for detection; a segmentation run's metrics (which hold both) say which they are."""
    from src.config.primary_metric import headline, primary_metric, primary_value

    segm_run = {"bbox_mAP": 0.5, "segm_mAP": 0.4, "segm_mAP_50": 0.6, "bbox_mAP_s": 0.1}
    assert primary_metric("instance-segmentation") == "segm_mAP"
    assert primary_metric("object-detection") == "bbox_mAP"
    assert primary_value(segm_run) == 0.4
    assert primary_value({"bbox_mAP": 0.5}) == 0.5
    assert primary_value(segm_run, "object-detection") == 0.5
    assert headline(segm_run) == {"bbox_mAP": 0.5, "segm_mAP": 0.4, "segm_mAP_50": 0.6}
