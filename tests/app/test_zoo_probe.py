"""Models of every padding family train, validate and predict on real-world-shaped images.

The whole zoo (every architecture's default model, ~15 minutes here) is ``make probe``, with its
table in docs/images.md; the suite runs one model per way a model can fail on odd image shapes:
necks that upsample by a fixed factor (CSPNeXt-PAFPN, YOLOX-PAFPN, YOLOv3), FPN with two stages and
masks (Mask R-CNN; Faster R-CNN, its detection-only half, trains in tests/engine/test_resume.py), a
fixed input size (SSD), the model's own test padding (CenterNet), a transformer that masks its
padding (DETR), and mask heads that read full-size masks (RTMDet-Ins, SOLO).
"""

from __future__ import annotations

import pytest

from src.training.zoo_probe import probe_in_subprocess, probe_model

FAMILIES = [
    ("object-detection", "rtmdet_tiny_8xb32-300e_coco"),
    ("object-detection", "yolox_tiny_8x8_300e_coco"),
    ("object-detection", "yolov3_mobilenetv2_8xb24-320-300e_coco"),
    ("object-detection", "ssd300_coco"),
    ("object-detection", "centernet_r18_8xb16-crop512-140e_coco"),
    ("object-detection", "detr_r50_8xb2-150e_coco"),
    ("instance-segmentation", "rtmdet-ins_tiny_8xb32-300e_coco"),
    ("instance-segmentation", "mask-rcnn_r50_fpn_1x_coco"),
    ("instance-segmentation", "solo_r50_fpn_1x_coco"),
]


@pytest.fixture(scope="module")
def real_project(tmp_path_factory):
    from src.data.demo import make_real_world_project

    # every kind of image once (the probe validates on all of them: a second copy of each
    # doubled the validations' cost and found nothing the first did not)
    return make_real_world_project(tmp_path_factory.mktemp("real") / "project", seed=2, copies=1)


@pytest.mark.slow
@pytest.mark.parametrize(("task", "model"), FAMILIES, ids=[m for _, m in FAMILIES])
def test_model_trains_validates_and_predicts_on_real_world_images(
    real_project, task, model, tmp_path
):
    """The first family through ``make probe``'s own path (a child process per model); the others
    in this worker, which spares a process start (about 8 s of CPU importing torch, mmdet and the
    SDK) per model and shows the model's traceback itself when it fails."""
    if model == FAMILIES[0][1]:
        result = probe_in_subprocess(model, task, real_project, input_size=160)
    else:
        result = probe_model(model, task, real_project, tmp_path / "app_data", input_size=160)
    assert result.passes, result.why_not
