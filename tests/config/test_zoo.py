"""The zoo comes from mmdet's installed metafiles, filtered by configs/zoo.yaml."""

from __future__ import annotations

import subprocess
import sys

import pytest

from src.config import zoo


def test_zoo_offers_the_older_apps_architectures():
    detection = zoo.architectures("object-detection")
    segmentation = zoo.architectures("instance-segmentation")
    assert len(detection) >= 38
    assert len(segmentation) >= 15
    for name in ("RTMDet", "Faster R-CNN", "YOLOX", "DINO", "RetinaNet", "Cascade R-CNN"):
        assert name in detection
    for name in ("Mask R-CNN", "RTMDet-Ins", "Mask2Former", "SOLO", "YOLACT"):
        assert name in segmentation


def test_every_architecture_has_exactly_one_default_model():
    for task in zoo.TASKS:
        defaults = zoo.default_models(task)
        assert [d.architecture for d in defaults] == zoo.architectures(task)


def test_entries_carry_metafile_facts():
    entry = zoo.get_model("rtmdet_tiny_8xb32-300e_coco")
    assert entry.task == "object-detection"
    assert entry.config_path.is_file()
    assert "/.mim/configs/rtmdet/" in str(entry.config_path)
    assert entry.weights_url.startswith("https://download.openmmlab.com/")
    assert entry.box_ap == pytest.approx(40.9)
    assert entry.train_memory_gb == pytest.approx(11.7)
    assert entry.year == 2022

    mask_rcnn = zoo.get_model("mask-rcnn_r50_fpn_1x_coco", "instance-segmentation")
    assert mask_rcnn.mask_ap == pytest.approx(34.7)
    assert mask_rcnn.box_ap == pytest.approx(38.2)
    assert mask_rcnn.inference_ms == pytest.approx(62.11)


def test_task_filters_keep_models_apart():
    detection = {e.model for e in zoo.list_models("object-detection")}
    segmentation = {e.model for e in zoo.list_models("instance-segmentation")}
    assert not any(m.startswith("rtmdet-ins") for m in detection)
    assert "rtmdet-ins_tiny_8xb32-300e_coco" in segmentation
    assert not any(m.endswith("-panoptic") for m in segmentation)


def test_unknown_model_suggests_close_names():
    with pytest.raises(zoo.ZooError, match="rtmdet_tiny_8xb32-300e_coco"):
        zoo.get_model("rtmdet_tiny_8xb32-300e_cocoo")
    with pytest.raises(zoo.ZooError, match="unknown task"):
        zoo.list_models("segmentation")


def test_cli_prints_the_table():
    out = subprocess.run(
        [sys.executable, "-m", "src.cli", "zoo", "--task", "instance-segmentation"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "mask-rcnn_r50_fpn_1x_coco" in out
    assert "mask AP" in out
    assert "Mask2Former" in out
