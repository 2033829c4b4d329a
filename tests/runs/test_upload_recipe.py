"""The recipe "add a file to the uploaded run" (docs/architecture.md): a file's name in
``src.core.layout.UPLOADED_AS_IS`` and the code that writes it into the run's folder are all it
takes; ``src/runs/artifacts.py`` is not touched."""

from __future__ import annotations

import json

import torch

import src.core.layout as layout
from src.core.layout import (
    APP_STATE,
    EVALUATION_DIR,
    EVALUATION_METRICS,
    LAST_CHECKPOINT_POINTER,
)
from src.runs.artifacts import RunSummary, pack_run

NEW = "notes/label_errors.json"


def _a_run(tmp_path):
    """A run's folder with one checkpoint (plain state_dict and meta) and a file of its own."""
    work = tmp_path / "run"
    work.mkdir()
    torch.save({"state_dict": {"w": torch.zeros(1)}, "meta": {"epoch": 1}}, work / "epoch_1.pth")
    (work / LAST_CHECKPOINT_POINTER).write_text(str(work / "epoch_1.pth"))
    (work / "notes").mkdir()
    (work / NEW).write_text('{"suspects": 3}', encoding="utf-8")
    (work / APP_STATE).write_text('{"project": {"version_id": 7}}', encoding="utf-8")
    (work / EVALUATION_DIR).mkdir()
    (work / EVALUATION_DIR / EVALUATION_METRICS).write_text('{"metrics": {"mAP": 0.5}}')
    return work


def _pack(work, tmp_path):
    summary = RunSummary(run_id="r", model_name="m", task="object-detection", project_name="p",
                         classes=["a"], epochs_done=1, state="finished")  # fmt: skip
    return pack_run(work, "model = dict()\n", tmp_path / "up", summary)


def test_a_file_named_in_the_layout_reaches_the_packed_upload(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "UPLOADED_AS_IS", (*layout.UPLOADED_AS_IS, NEW))
    out = _pack(_a_run(tmp_path), tmp_path)
    assert (out / NEW).read_text(encoding="utf-8") == '{"suspects": 3}'


def test_a_file_not_named_there_stays_behind_and_the_named_ones_are_read(tmp_path):
    out = _pack(_a_run(tmp_path), tmp_path)
    assert not (out / NEW).exists()
    info = json.loads((out / layout.EXPERIMENT_INFO).read_text())
    assert (info["app_state"], info["project_version"]) == (APP_STATE, 7)
    assert info["evaluation_metrics"] == {"mAP": 0.5}
