"""Sliced training in the config: the settings write the datasets' ``slicing`` and the metric that
merges tiles (the Editor shows both), an edit of them in the Editor is kept, a settings change
reaches an edited text, and what cannot work is refused with the reason (API and CLI alike)."""

from __future__ import annotations

from src.config.editor import ConfigDraft
from src.config.params import TrainParams
from src.config.text import config_to_text, parse_config_text
from src.data.project import open_local_project
from src.runs.storage import LocalArtifactStore
from src.setup.prepare import RequestError, prepare
from src.setup.requests import request_from_json
from src.training.controller import TrainingController
from tests.helpers import api_client, small_cfg
from tests.test_cli import run_cli

SLICED = dict(slice_size=128, slice_overlap=0.3, slice_empty=0.5)


def test_the_settings_write_slicing_and_the_merging_metric_as_the_config_spells_them(
    demo_project, tmp_path
):
    cfg = small_cfg(demo_project, tmp_path / "run", **SLICED)
    expected = dict(size=128, overlap=0.3, full_image=True, empty=0.5, min_visible=0.5,
                    partial="ignore", max_tiles=200_000, max_gb=50.0)  # fmt: skip
    assert cfg.train_dataloader.dataset.slicing == expected
    assert cfg.val_dataloader.dataset.slicing == expected
    assert cfg.val_evaluator.type == cfg.test_evaluator.type == "SlicedCocoMetric"
    assert cfg.val_evaluator.outfile_prefix.endswith("predictions/val")  # kept for the evaluation
    text = config_to_text(cfg)
    assert "slicing=dict(" in text and "type='SlicedCocoMetric'" in text
    plain = small_cfg(demo_project, tmp_path / "off")
    assert "slicing" not in plain.train_dataloader.dataset
    assert plain.val_evaluator.type == "CocoMetric" and "merge_thr" not in plain.val_evaluator


def _request(project, tmp_path, **body):
    hyper = {"epochs": 1, "weights": "scratch", "input_size": 128, **body.pop("hyper", {})}
    payload = {"model": "rtmdet_tiny_8xb32-300e_coco", "hyperparameters": hyper, **body}
    return request_from_json(payload, str(tmp_path / "app"), default_project=project)


def test_an_editor_edit_of_slicing_is_kept_and_a_settings_change_reaches_the_text(
    demo_project, tmp_path
):
    project = open_local_project(demo_project)
    composed = prepare(_request(project, tmp_path, hyper={"slice_size": 128}))
    text = config_to_text(composed.cfg)
    edited = text.replace("overlap=0.2", "overlap=0.4")
    assert edited != text
    trained = prepare(_request(project, tmp_path, hyper={"slice_size": 128}, config=edited))
    assert trained.cfg.train_dataloader.dataset.slicing.overlap == 0.4  # the edit, not the settings
    assert trained.cfg.val_evaluator.type == "SlicedCocoMetric"

    draft = ConfigDraft(text)
    draft.edit(edited.replace("max_keep_ckpts=2", "max_keep_ckpts=5"))
    other = config_to_text(prepare(_request(project, tmp_path, hyper={"slice_size": 192})).cfg)
    pending = draft.settings_changed(other)
    assert "train_dataloader.dataset.slicing.size" in pending.changes
    merged = parse_config_text(draft.apply_pending())
    assert merged.train_dataloader.dataset.slicing.size == 192  # the settings' change
    assert merged.train_dataloader.dataset.slicing.overlap == 0.4  # the user's edit kept


def test_what_cannot_work_is_refused_with_the_reason(demo_project, tmp_path):
    problems = TrainParams(classes=("a",), slice_size=16, slice_overlap=0.95,
                           slice_partial="blur").validate()  # fmt: skip
    assert any("tile size (slice_size) must be from 32 to 16384" in p for p in problems)
    assert any("tile overlap (slice_overlap) must be from 0 to 0.9" in p for p in problems)
    assert any("slice_partial" in p and "ignore, drop" in p for p in problems)

    project = open_local_project(demo_project)
    text = config_to_text(prepare(_request(project, tmp_path, hyper={"slice_size": 128})).cfg)
    other_metric = text.replace("type='SlicedCocoMetric'", "type='VOCMetric'")
    try:
        prepare(_request(project, tmp_path, hyper={"slice_size": 128}, config=other_metric))
        raise AssertionError("a sliced validation scored per tile was accepted")
    except RequestError as exc:
        assert "sliced validation needs SlicedCocoMetric" in exc.problems[0]
        assert "VOCMetric" in exc.problems[0]
    bad = text.replace("overlap=0.2", "overlap=2.0")
    try:
        prepare(_request(project, tmp_path, hyper={"slice_size": 128}, config=bad))
        raise AssertionError("an overlap of 2 was accepted")
    except RequestError as exc:
        assert "slicing" in exc.problems[0] and "overlap" in exc.problems[0]

    controller = TrainingController(tmp_path / "data", LocalArtifactStore(tmp_path / "team"))
    with api_client(controller, default_project=project) as client:
        answer = client.post("/api/train", json={
            "model": "rtmdet_tiny_8xb32-300e_coco",
            "hyperparameters": {"slice_size": 128, "slice_overlap": -1},
        })  # fmt: skip
    assert answer.status_code == 400 and "slice_overlap" in answer.text
    result = run_cli("train", "--project", str(demo_project), "--from-scratch",
                     "--slice-size", "128", "--slice-partial", "blur", "--dry-run")  # fmt: skip
    assert result.returncode != 0 and "blur" in result.stderr
