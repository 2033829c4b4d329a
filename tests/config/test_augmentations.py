"""Custom augmentation pipelines (issue 14): what a user may write, and what they are told when
it is wrong; the presets are the starting point of a custom pipeline."""

from __future__ import annotations

import pytest

from src.config.augmentations import augmentation_steps, parse_pipeline, preset_text
from src.config.compose_pipelines import train_pipeline
from src.config.params import AUGMENTATIONS, ConfigError, TrainParams


@pytest.mark.parametrize("preset", [a for a in AUGMENTATIONS if a != "custom"])
def test_a_preset_shown_as_text_is_the_same_pipeline_as_custom(preset):
    assert parse_pipeline(preset_text(preset)) == augmentation_steps(preset)
    custom = TrainParams(
        classes=("a",), augmentation="custom", augmentation_pipeline=preset_text(preset),
        input_size=(320, 240),
    )  # fmt: skip
    assert custom.validate() == []
    preset_params = TrainParams(classes=("a",), augmentation=preset, input_size=(320, 240))
    assert train_pipeline(custom) == train_pipeline(preset_params)


def test_yaml_and_json_both_parse_and_number_lists_become_tuples():
    yaml_text = "- {type: CachedMosaic, img_scale: [320, 320]}\n- type: RandomFlip\n  prob: 0.5\n"
    json_text = (
        '[{"type": "CachedMosaic", "img_scale": [320, 320]}, {"type": "RandomFlip", "prob": 0.5}]'
    )
    assert parse_pipeline(yaml_text) == parse_pipeline(json_text)
    mosaic, _ = parse_pipeline(yaml_text)
    assert mosaic["img_scale"] == (320, 320)  # mmdet asserts a tuple
    flip = parse_pipeline("[{type: RandomFlip, prob: 0.5, direction: [horizontal, vertical]}]")
    assert flip[0]["direction"] == ["horizontal", "vertical"]  # not numbers: stays a list


def test_the_custom_transforms_sit_after_the_resize_with_the_input_size_filled_in():
    text = "- {type: RandomCrop, crop_size: $input_size}\n- {type: PhotoMetricDistortion}\n"
    params = TrainParams(classes=("a",), augmentation="custom", augmentation_pipeline=text,
                         input_size=(320, 240))  # fmt: skip
    types = [t["type"] for t in train_pipeline(params)]
    assert types == ["LoadImageFromFile", "LoadAnnotations", "Resize", "RandomCrop",
                     "PhotoMetricDistortion", "FilterAnnotations", "PackDetInputs"]  # fmt: skip
    assert train_pipeline(params)[3]["crop_size"] == (320, 240)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- {type: RandomFlip\n- prob: 1", "line 2"),  # YAML syntax: where
        ("{type: RandomFlip}", "must be a list of transforms"),
        ("- {prob: 0.5}", "transform 1 must be a mapping with a type"),
        ("- RandomFlip", "transform 1 must be a mapping with a type"),
        ("- {type: LoadImageFromFile}", "the app adds image loading"),
        ("- {type: Mosaic, img_scale: [320, 320]}", "use CachedMosaic"),
        ("- {type: CopyPaste}", "not available here"),
    ],
)
def test_a_malformed_pipeline_is_refused_with_what_is_wrong(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_pipeline(text)
    params = TrainParams(classes=("a",), augmentation="custom", augmentation_pipeline=text)
    assert any(message in problem for problem in params.validate())


def test_custom_needs_a_pipeline_and_a_pipeline_needs_custom():
    empty = TrainParams(classes=("a",), augmentation="custom")
    assert ["custom augmentation chosen but its pipeline is empty" in p
            for p in empty.validate()] == [True]  # fmt: skip
    assert TrainParams(classes=("a",), augmentation="custom",
                       augmentation_pipeline="[]").validate() == []  # fmt: skip
    stray = TrainParams(classes=("a",), augmentation="light", augmentation_pipeline="[]")
    assert any("used by the 'custom' augmentation only" in p for p in stray.validate())


@pytest.mark.parametrize(
    "text",
    [
        "- {type: os.system, command: 'touch pwned'}",
        "- {type: RandomChoice, transforms: [[{type: subprocess.run, args: ['touch', 'x']}]]}",
        "- {type: RandomApply, transforms: [{type: [1]}]}",
    ],
)
def test_a_pipeline_names_transforms_never_python_objects(text):
    """mmengine's registry imports any dotted name it does not know and calls it with the step's
    arguments: a pipeline (data, not code) may name plain identifiers only, nested ones too."""
    with pytest.raises(ConfigError, match="is not a transform's name"):
        parse_pipeline(text)


def test_an_unregistered_plain_name_is_neither_imported_nor_called(monkeypatch):
    import sys

    from src.data.mmdet_dataset import transform_problems

    monkeypatch.delitem(sys.modules, "antigravity", raising=False)  # importing it opens a browser
    steps = [
        {"type": "antigravity"},
        {"type": "RandomChoice", "transforms": [[{"type": "antigravity"}]]},
        {"type": "RandomChoice", "transforms": [[{"type": "RandomFlip", "prob": 0.5}]]},
    ]
    problems = transform_problems(steps)
    assert problems == [
        "transform 1 (antigravity) is not an mmdet or mmcv transform: check the name (case "
        "matters), e.g. RandomFlip, RandomResize, PhotoMetricDistortion",
        "transform 2 (RandomChoice): its 'antigravity' is not an mmdet or mmcv transform: check "
        "the name (case matters), e.g. RandomFlip, RandomResize, PhotoMetricDistortion",
    ]
    assert "antigravity" not in sys.modules
