"""The run's description (``sly_metadata``): one reader and writer for every consumer."""

from __future__ import annotations

import pytest
from mmengine.config import Config

from src.config.metadata import KEY, RunMetadata
from src.config.text import config_to_text, parse_config_text


def _cfg(**metadata) -> Config:
    return Config({"model": {"type": "RTMDet"}, KEY: metadata})


def test_a_config_round_trips_through_its_text_with_unknown_keys_kept():
    cfg = _cfg(model_name="rtmdet_tiny", architecture="RTMDet", task_type="instance-segmentation",
               project_id=7, project_name="cats", classes=["cat", "dog"], min_input_size=64,
               train_params={"epochs": 3, "gpus": [1, 2]}, auto_size=["num_workers"],
               from_a_newer_app={"kept": True})  # fmt: skip
    again = RunMetadata.of(parse_config_text(config_to_text(cfg)))
    assert again == RunMetadata.of(cfg)
    assert again.classes == ("cat", "dog") and again.auto_size == ("num_workers",)
    assert again.task_type == "instance-segmentation"  # written instance_segmentation
    assert again.extra == {"from_a_newer_app": {"kept": True}}
    assert again.devices == 2 and again.device == "cuda:1"
    assert again.to_dict()["architecture_name"] == "RTMDet"  # the serving app's key


def test_a_config_or_checkpoint_without_it_reads_as_defaults():
    for holder in (None, {}, Config({"model": {}}), {"meta": 1, KEY: None}):
        metadata = RunMetadata.of(holder)
        assert metadata.model_name == "custom" and metadata.devices == 1
        assert metadata.device == "cpu" and metadata.task_type == "object-detection"


def test_written_last_and_updated_by_field_name_only():
    cfg = Config({KEY: {"model_name": "a"}, "model": {}})
    RunMetadata.of(cfg).updated(project_name="p", classes=["x"]).write(cfg)
    assert list(cfg.keys())[-1] == KEY and cfg[KEY]["classes"] == ["x"]
    with pytest.raises(TypeError):
        RunMetadata.of(cfg).updated(projet_name="typo")


def test_a_checkpoint_carries_what_the_run_listers_read():
    metadata = RunMetadata(model_name="m", project_id=3, project_name="p", classes=("a",))
    carried = metadata.for_checkpoint()
    assert set(carried) == {"model_name", "architecture", "task_type", "project_id", "project_name"}
    assert RunMetadata.of({KEY: carried}).project_id == 3
