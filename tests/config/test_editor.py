"""The Editor never loses edits: a settings change is shown, then applied or declined."""

from __future__ import annotations

import pytest

from src.config import zoo
from src.config.compose import compose_from_zoo
from src.config.editor import ConfigDraft, changed_keys
from src.config.params import ConfigError, DatasetSpec, RunSpec, TrainParams
from src.config.text import config_to_text, parse_config_text


def _text(tmp_path, **params) -> str:
    values = dict(classes=("a", "b"), weights="scratch", input_size=(256, 256))
    values.update(params)
    cfg = compose_from_zoo(
        zoo.get_model("rtmdet_tiny_8xb32-300e_coco"),
        TrainParams(**values),
        DatasetSpec(project_dir=str(tmp_path / "p")),
        RunSpec(work_dir=str(tmp_path / "w")),
    )
    return config_to_text(cfg)


def test_unedited_text_follows_the_settings(tmp_path):
    draft = ConfigDraft(_text(tmp_path))
    assert draft.settings_changed(_text(tmp_path, train_batch_size=4)) is None
    assert parse_config_text(draft.text).train_dataloader.batch_size == 4
    assert not draft.edited


def test_a_settings_change_never_overwrites_edits_silently(tmp_path):
    draft = ConfigDraft(_text(tmp_path, lr=0.001))
    edited = draft.text.replace("optimizer=dict(lr=0.001", "optimizer=dict(lr=0.0123").replace(
        "max_keep_ckpts=2", "max_keep_ckpts=7"
    )
    draft.edit(edited)
    assert draft.edited
    assert set(draft.user_edits()) == {
        "optim_wrapper.optimizer.lr",
        "default_hooks.checkpoint.max_keep_ckpts",
    }

    pending = draft.settings_changed(_text(tmp_path, lr=0.002, train_batch_size=4))
    assert draft.text == edited  # nothing changed until the user chooses
    assert "train_dataloader.batch_size" in pending.changes
    assert pending.conflicts == ["optim_wrapper.optimizer.lr"]
    lines = pending.describe()
    assert "train_dataloader.batch_size: 2 -> 4" in lines
    assert any(
        line.startswith("optim_wrapper.optimizer.lr:") and "you edited" in line for line in lines
    )

    merged = parse_config_text(draft.apply_pending())
    assert merged.train_dataloader.batch_size == 4  # the settings' change
    assert merged.default_hooks.checkpoint.max_keep_ckpts == 7  # the user's other edit, kept
    assert merged.optim_wrapper.optimizer.lr == pytest.approx(0.002)  # conflict: settings win
    top = [line for line in draft.text.splitlines() if line and not line[0].isspace()]
    assert top[-1].startswith("sly_metadata = dict(")
    assert draft.pending is None


def test_keeping_edits_declines_the_change(tmp_path):
    draft = ConfigDraft(_text(tmp_path))
    edited = draft.text.replace("max_keep_ckpts=2", "max_keep_ckpts=9")
    draft.edit(edited)
    draft.settings_changed(_text(tmp_path, train_batch_size=8))
    draft.keep_edits()
    assert draft.text == edited and draft.pending is None
    assert parse_config_text(draft.text).train_dataloader.batch_size == 2


def test_broken_edits_are_reported_not_lost(tmp_path):
    draft = ConfigDraft(_text(tmp_path))
    broken = draft.text + "\noops = dict(\n"
    draft.edit(broken)
    pending = draft.settings_changed(_text(tmp_path, train_batch_size=4))
    assert pending.conflicts == sorted(pending.changes)  # unparsable: everything conflicts
    with pytest.raises(ConfigError, match="does not parse"):
        draft.apply_pending()
    assert draft.text == broken  # still there to fix
    assert parse_config_text(draft.discard_edits()).train_dataloader.batch_size == 4


def test_changed_keys_reports_added_and_removed():
    changes = changed_keys({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "d": 3}})
    assert set(changes) == {"a.c", "a.d"}
