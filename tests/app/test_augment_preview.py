"""The augmentation preview (issue 14): a real project image with its annotations beside the
same image after the chosen training pipeline; a custom pipeline that cannot train is refused
before a run starts, with what is wrong; a custom pipeline is what trains."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest
import torch

from src.config.augmentations import preset_text
from src.config.params import ConfigError, TrainParams
from src.data.demo import DemoOptions, make_demo_project
from src.runs.storage import LocalArtifactStore
from src.setup.augment_preview import AugmentationPreviewer, NothingLeft
from src.setup.prepare import RequestError, TrainRequest
from src.training.controller import TrainingController
from src.training.session import SessionState
from tests.helpers import CLASSES, RTMDET, run, small_cfg


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Landscape 16:9, 4:3, portrait and square images, as users' projects have."""
    path = tmp_path_factory.mktemp("photos") / "project"
    return make_demo_project(path, DemoOptions(images=8, seed=4, mixed_sizes=True))


def _image(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/jpeg;base64,")
    data = np.frombuffer(base64.b64decode(data_url.split(",", 1)[1]), np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def _params(**values) -> TrainParams:
    return TrainParams(classes=CLASSES, input_size=(320, 240), **values)


def test_the_preview_shows_every_image_shape_before_and_after_the_pipeline(photos):
    previewer = AugmentationPreviewer()
    seen = set()
    for sample in range(8):
        shown = previewer.preview(str(photos), _params(augmentation="light"), sample)
        before, after = _image(shown.before), _image(shown.after)
        seen.add(shown.item)
        # the original's aspect ratio, drawn small (the page's data stays small)
        assert max(before.shape[:2]) <= 360 and max(after.shape[:2]) <= 360
        assert len(shown.before) < 60_000 and len(shown.after) < 60_000
        # light: flip only, so the model gets the original with its longer edge at most 320
        # and its shorter at most 240, keeping its ratio (mmdet's keep-ratio resize)
        w, h = shown.size_after
        long, short = max(w, h), min(w, h)
        assert long <= 320 and short <= 240 and (long == 320 or short == 240)
        assert shown.objects_after == shown.objects_before > 0
        assert f"{w}x{h}" in shown.caption()
    assert len(seen) >= 6  # the samples walk through the project


def test_the_same_sample_draws_the_same_picture_and_another_one_differs(photos):
    previewer = AugmentationPreviewer()
    params = _params(augmentation="heavy")
    first = previewer.preview(str(photos), params, 11)
    assert previewer.preview(str(photos), params, 11).after == first.after
    others = {previewer.preview(str(photos), params, 11 + 8 * k).after for k in range(1, 4)}
    assert first.after not in others  # the same image, other random draws


def test_the_preview_leaves_the_random_generators_as_they_were(photos):
    import random

    state = (random.getstate(), np.random.get_state()[1].copy(), torch.random.get_rng_state())
    AugmentationPreviewer().preview(str(photos), _params(augmentation="heavy"), 5)
    assert random.getstate() == state[0]
    assert np.array_equal(np.random.get_state()[1], state[1])
    assert torch.equal(torch.random.get_rng_state(), state[2])


def test_masks_are_transformed_with_their_image(demo_project):
    params = TrainParams(
        task="instance-segmentation", classes=("circle", "triangle"), input_size=(256, 256),
        augmentation="custom",
        augmentation_pipeline="- {type: RandomFlip, prob: 1.0, direction: vertical}",
    )  # fmt: skip
    shown = AugmentationPreviewer().preview(str(demo_project), params, 2)
    before, after = _image(shown.before), _image(shown.after)
    # a vertical flip: the drawing of the flipped image is the drawing of the original, flipped
    # (JPEG and the label text differ a little; the filled masks and boxes dominate)
    diff = np.abs(cv2.flip(before, 0).astype(int) - after.astype(int)).mean()
    unflipped = np.abs(before.astype(int) - after.astype(int)).mean()
    assert diff < unflipped / 2, (diff, unflipped)


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        ("- {type: RandomFlipp, prob: 0.5}", "not an mmdet or mmcv transform"),
        ("- {type: RandomCrop, crop_size: [64, 64], bogus: 1}", "unexpected keyword argument"),
        ("- {type: Pad, size_divisor: 0}", "the training pipeline fails on"),  # at run time
    ],
)
def test_a_pipeline_that_cannot_train_is_refused_before_the_run(
    pipeline, message, demo_project, tmp_path
):
    params = _params(augmentation="custom", augmentation_pipeline=pipeline)
    with pytest.raises(ConfigError, match=message):
        AugmentationPreviewer().preview(str(demo_project), params, 0)
    controller = TrainingController(tmp_path / "app_data", LocalArtifactStore(tmp_path / "tf"))
    request = TrainRequest(
        project_dir=str(demo_project), app_data_dir=str(tmp_path / "app_data"), model=RTMDET,
        params=_params(augmentation="custom", augmentation_pipeline=pipeline, weights="scratch",
                       epochs=1, num_workers=0),
    )  # fmt: skip
    with pytest.raises(RequestError, match=message):
        controller.start(request)
    assert not controller.busy and not list((tmp_path / "app_data").glob("*/config.py"))


def test_a_pipeline_that_drops_the_sample_says_so_and_one_that_empties_it_shows_it(demo_project):
    drop = "- {type: FilterAnnotations, min_gt_bbox_wh: [10000, 10000], keep_empty: true}"
    params = _params(augmentation="custom", augmentation_pipeline=drop)
    with pytest.raises(NothingLeft, match="no object is left"):  # mmdet skips such a sample
        AugmentationPreviewer().preview(str(demo_project), params, 0)
    crop = "- {type: RandomCrop, crop_size: [1, 1], allow_negative_crop: true}"
    params = _params(augmentation="custom", augmentation_pipeline=crop)
    shown = AugmentationPreviewer().preview(str(demo_project), params, 0)
    assert shown.size_after == (1, 1) and shown.objects_after == 0  # trains as a negative


def _trained(project, work_dir, **values):
    cfg = small_cfg(project, work_dir, epochs=1, **values)
    _, status = run(cfg, work_dir.name)
    assert status.state == SessionState.FINISHED, status.error
    return torch.load(work_dir / "epoch_1.pth", weights_only=False)["state_dict"]


def test_a_custom_pipeline_is_what_trains(demo_project, tmp_path):
    light = _trained(demo_project, tmp_path / "light", augmentation="light")
    # the light preset written out as custom transforms trains bit-identically
    same = _trained(demo_project, tmp_path / "same", augmentation="custom",
                    augmentation_pipeline=preset_text("light"))  # fmt: skip
    assert all(torch.equal(light[k], same[k]) for k in light)
    # an always-vertical flip is another training
    always = "[{type: RandomFlip, prob: 1.0, direction: vertical}]"
    flipped = _trained(demo_project, tmp_path / "flip", augmentation="custom",
                       augmentation_pipeline=always)  # fmt: skip
    assert any(not torch.equal(light[k], flipped[k]) for k in light)
