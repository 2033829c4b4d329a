"""Per-class score thresholds (issue 38, item 1): each class's F1-optimal score on the validation
split, chosen with the SDK's own matches and score profile, kept with the run (metrics.json, the
report, the checkpoint's meta, the ONNX file, experiment_info.json, the README) and applied by
``predict`` and the ONNX runtime helper.

No training: a real SDK evaluator run on hand-made predictions (the ground truth with noise), and
an untrained RTMDet-tiny saved as the run's best checkpoint, whose "validation predictions" are
those hand-made ones (the evaluation reuses them, as after a real run)."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from src.data.eval_projects import write_eval_projects
from src.evaluation.class_thresholds import (
    class_thresholds,
    fallback_notes,
    of_metric_provider,
    score_profile,
)
from src.evaluation.evaluate import _sdk_evaluation, evaluate_run
from src.runs.checkpoint_io import checkpoint_meta, load_checkpoint_file, set_checkpoint_meta
from tests.app.test_evaluate import CLASSES, _predictions, _split
from tests.helpers import RTMDET, untrained_run

BEST = "best_coco_bbox_mAP_epoch_1.pth"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """About 40 validation objects of the three classes (as tests/app/test_evaluate.py's)."""
    from src.data.demo import DemoOptions, make_demo_project

    return make_demo_project(tmp_path_factory.mktemp("thr") / "p", DemoOptions(images=64, seed=5))


@pytest.mark.parametrize("task", ["object-detection", "instance-segmentation"])
def test_over_all_matches_it_is_the_sdks_own_global_threshold(task, project, tmp_path):
    """The consumer replayed: the same profile over every match is the SDK evaluator's own (its
    F1-optimal confidence and best F1, bit for bit), and a class's numbers at the SDK's threshold
    are the SDK's per-class precision and recall there."""
    segmentation = task == "instance-segmentation"
    data_list = _split(project, task)
    predictions = _predictions(data_list, segmentation)
    gt, pred = write_eval_projects(data_list, CLASSES, predictions, tmp_path / "p", segmentation)
    mp = _sdk_evaluation(gt, pred, tmp_path / "sdk", segmentation)

    profile = score_profile(mp.matches, mp.iouThrs)
    sdk = mp.m_full.score_profile
    for key in ("scores", "precision", "recall", "f1"):
        assert np.array_equal(getattr(profile, key), sdk[key], equal_nan=True), key
    assert profile.optimum() == (mp.f1_optimal_conf, mp.best_f1)

    chosen = of_metric_provider(mp, order=CLASSES)
    assert list(chosen["classes"]) == CLASSES and chosen["global_threshold"] == mp.f1_optimal_conf
    table = mp.per_class_metrics().set_index("category")
    for name, entry in chosen["classes"].items():
        assert entry["source"] == "class"
        assert entry["at_global"]["precision"] == pytest.approx(table.loc[name, "precision"])
        assert entry["at_global"]["recall"] == pytest.approx(table.loc[name, "recall"])
        assert entry["f1"] >= entry["at_global"]["f1"]  # its own optimum, never worse
    own = np.array(list(chosen["thresholds"].values()))
    assert np.abs(own - mp.f1_optimal_conf).max() > 0.01  # the classes do want their own


def _match(kind: str, cat: int, score: float | None = None, iou: float | None = None) -> dict:
    return {"type": kind, "category_id": cat, "score": score, "iou": iou}


def test_a_class_without_a_true_positive_keeps_the_global_threshold_and_says_so():
    """Class 1 is found once (IoU 0.8: a hit at 7 of the 10 IoU thresholds); class 2 only has a
    false alarm and a miss; class 3 only a miss."""
    matches = [_match("TP", 1, 0.9, 0.8), _match("FP", 1, 0.5), _match("FP", 2, 0.7),
               _match("FN", 2), _match("FN", 3)]  # fmt: skip
    iou_thresholds = np.linspace(0.5, 0.95, 10)
    chosen = class_thresholds(matches, iou_thresholds, {1: "a", 2: "b", 3: "c"}, 0.6)
    a, b, c = (chosen["classes"][k] for k in "abc")
    assert (a["threshold"], a["source"], a["ground_truth"]) == (0.9, "class", 1)
    # precision and recall averaged over the IoU thresholds; F1 the SDK's nanmean of them
    assert (a["precision"], a["recall"], a["f1"]) == pytest.approx((0.7, 0.7, 1.0))
    at_global = a["at_global"]  # the false alarm at 0.5 is below 0.6 too: the same numbers
    assert (at_global["precision"], at_global["recall"], at_global["f1"]) == pytest.approx(
        (0.7, 0.7, 1.0)
    )
    assert (b["threshold"], b["source"]) == (0.6, "global")
    assert b["at_global"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert (c["threshold"], c["source"]) == (0.6, "global")
    assert c["at_global"] == {"precision": None, "recall": 0.0, "f1": 0.0}  # nothing predicted
    assert chosen["thresholds"] == {"a": 0.9, "b": 0.6, "c": 0.6}
    notes = fallback_notes(chosen)
    assert len(notes) == 2 and notes[0].startswith("class b: no prediction of it matched")


def _history_checkpoint(path: Path) -> None:
    """A resumable checkpoint as mmengine writes it: a message hub (HistoryBuffer) and numpy
    scalars, which only the allowlist loads."""
    from mmengine.logging.history_buffer import HistoryBuffer

    torch.save({"state_dict": {"w": torch.ones(2)}, "optimizer": {"state": {}},
                "meta": {"epoch": 3, "seed": np.int64(7)},
                "message_hub": {"log_scalars": {"loss": HistoryBuffer([1.0, 0.5], [1, 1])}}},
               path)  # fmt: skip


def test_thresholds_written_into_a_checkpoint_keep_it_loadable_and_its_time(tmp_path):
    import src.runs.checkpoint_io as checkpoint_io

    path = tmp_path / "epoch_3.pth"
    _history_checkpoint(path)
    os.utime(path, (1_000_000, 1_000_000))
    set_checkpoint_meta(path, "class_thresholds", {"a": np.float64(0.25), "b": 0.5})
    assert path.stat().st_mtime == 1_000_000  # resume's and export's order by time unchanged
    for restricted in (False, True):  # torch's safe_globals, and the torch 2.1 unpickler
        checkpoint_io._FORCE_RESTRICTED_UNPICKLER = restricted
        try:
            checkpoint = load_checkpoint_file(path)
        finally:
            checkpoint_io._FORCE_RESTRICTED_UNPICKLER = False
        assert checkpoint["meta"] == {
            "epoch": 3,
            "seed": 7,
            "class_thresholds": {"a": 0.25, "b": 0.5},
        }
        assert checkpoint["message_hub"]["log_scalars"]["loss"].current() == 0.5  # resumable
    assert checkpoint_meta(path)["class_thresholds"] == {"a": 0.25, "b": 0.5}
    with pytest.raises(pickle.UnpicklingError):  # the allowlist is still what loads it
        torch.load(path, weights_only=True)
    assert not list(tmp_path.glob(".*tmp*"))


# ------------------------------------------------------------------ a run, evaluated and exported


def _untrained_run(project: Path, work: Path) -> list[dict]:
    """A run folder: config.py, an untrained RTMDet-tiny as its best checkpoint, and the best
    epoch's validation predictions made by hand (every triangle found in the wrong place: no
    true positive, so that class falls back to the global threshold). Returns the val split."""
    from src.config.compose_data import val_split_args
    from src.data.reader import load_split

    cfg = untrained_run(project, work, BEST)
    data = val_split_args(cfg)
    data_list, _ = load_split(
        data["project_dir"], data["classes"], data["task"], data["datasets"], data["items"],
        data["keep_empty_images"], data["cache_dir"], ignore=data["ignore"],
    )  # fmt: skip
    predictions = _predictions(data_list, segmentation=False)
    for det in predictions:
        if det["category_id"] == 3:
            det["bbox"] = [0.0, 0.0, 6.0, 6.0]
    (work / "predictions").mkdir()
    (work / "predictions" / "best.bbox.json").write_text(json.dumps(predictions))
    (work / "predictions" / "best.json").write_text(json.dumps({"checkpoint": BEST}))
    return data_list


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, project) -> dict:
    """The run evaluated (the thresholds chosen), then exported to ONNX: end_of_run's order."""
    from src.export.formats import export_run

    work = tmp_path_factory.mktemp("thr_run") / "app" / "r"
    _untrained_run(project, work)
    evaluation = evaluate_run(work)
    onnx = Path(export_run(work).files["onnx"])
    return {"work": work, "evaluation": evaluation, "onnx": onnx}


def test_the_evaluation_keeps_them_in_its_metrics_report_and_checkpoint(evaluated):
    work, evaluation = evaluated["work"], evaluated["evaluation"]
    saved = json.loads((work / "evaluation" / "metrics.json").read_text())
    chosen = saved["class_thresholds"]
    assert chosen == json.loads(json.dumps(evaluation.class_thresholds))
    assert list(chosen["thresholds"]) == CLASSES
    assert chosen["global_threshold"] == pytest.approx(saved["metrics"]["f1_optimal_conf"])
    assert chosen["classes"]["triangle"]["source"] == "global"
    assert chosen["thresholds"]["triangle"] == chosen["global_threshold"]
    assert {chosen["classes"][n]["source"] for n in ("square", "circle")} == {"class"}
    assert any(n.startswith("class triangle: no prediction of it matched") for n in saved["notes"])
    assert checkpoint_meta(work / BEST)["class_thresholds"] == chosen["thresholds"]
    report = (work / "evaluation" / "report.html").read_text()
    assert 'id="thresholds"' in report and "(global: no match)" in report
    assert f"Precision at {chosen['global_threshold']:.3f}" in report


def test_the_onnx_file_carries_them_and_predict_applies_them(evaluated, tmp_path, capsys):
    """The file's metadata holds the evaluation's thresholds; an export kept from before a new
    evaluation is brought up to date; predict keeps each class's detections at or above its own
    threshold (here: all of one class, none of the others), or ``--score-thr`` for all."""
    from src.cli import main
    from src.export.formats import export_run
    from src.export.onnx_runtime import OnnxDetector

    work, onnx = evaluated["work"], evaluated["onnx"]
    chosen = evaluated["evaluation"].class_thresholds["thresholds"]
    detector = OnnxDetector(str(onnx))
    assert detector.class_thresholds == pytest.approx(chosen)
    image = _an_image(evaluated)
    found = detector.predict([cv2.imread(str(image))])[0]  # every score, every class
    label = int(found.labels.max())  # the untrained model's classes: one of those it predicts
    assert len(set(found.labels.tolist())) >= 2
    only = {c: 0.0 if i == label else 1.0 for i, c in enumerate(CLASSES)}
    set_checkpoint_meta(work / BEST, "class_thresholds", only)
    try:
        result = export_run(work)
        assert result.kept == ["onnx"] and OnnxDetector(str(onnx)).class_thresholds == only
        assert main(["predict", "--onnx", str(onnx), str(image), "--out", str(tmp_path / "a")]) == 0
        out = capsys.readouterr().out
        listed = ", ".join(f"{c} {v:.3f}" for c, v in only.items())
        assert f"--score-thr X sets one for every class): {listed}" in out
        shown = re.findall(rf"^{re.escape(str(image))}: (\w+) \d\.\d\d at ", out, re.M)
        assert shown == [CLASSES[label]] * int((found.labels == label).sum())
        assert f"{len(shown)} objects above their class's threshold" in out
        assert main(["predict", "--onnx", str(onnx), str(image), "--out", str(tmp_path / "b"),
                     "--score-thr", "0.05"]) == 0  # fmt: skip
        out = capsys.readouterr().out
        shown = re.findall(rf"^{re.escape(str(image))}: (\w+) \d\.\d\d at ", out, re.M)
        assert "score thresholds per class" not in out and set(shown) > {CLASSES[label]}
        assert f"{int((found.scores >= 0.05).sum())} objects above 0.05" in out
    finally:
        set_checkpoint_meta(work / BEST, "class_thresholds", chosen)
        export_run(work)


def _an_image(evaluated: dict) -> Path:
    """One of the project's validation images."""
    from src.config.compose_data import val_split_args
    from src.config.text import load_config_file

    cfg = load_config_file(evaluated["work"] / "config.py")
    return next((Path(val_split_args(cfg)["project_dir"]) / "val" / "img").iterdir())


def test_the_upload_carries_them_where_the_sdk_and_a_reader_find_them(evaluated, tmp_path):
    """experiment_info.json (the SDK's ExperimentInfo reads it, skipping the new key), the
    uploaded checkpoint (plain torch.load), and the README (the serving app takes one conf)."""
    from supervisely.nn.experiments import ExperimentInfo

    from src.runs.artifacts import RunSummary, pack_run

    work = evaluated["work"]
    chosen = evaluated["evaluation"].class_thresholds
    summary = RunSummary(run_id="r", model_name=RTMDET, task="object-detection",
                         project_name="p", classes=CLASSES, epochs_done=1, state="finished",
                         remote_dir="/mmdetection-3/r_p")  # fmt: skip
    out = pack_run(work, (work / "config.py").read_text(), tmp_path / "up", summary)
    info = json.loads((out / "experiment_info.json").read_text())
    assert info["class_thresholds"] == chosen["thresholds"]
    experiment = ExperimentInfo(**info)
    assert experiment.best_checkpoint == BEST and "class_thresholds" not in experiment.to_json()
    packed = torch.load(out / BEST, weights_only=True)  # what serving code does
    assert packed["meta"]["class_thresholds"] == chosen["thresholds"]
    readme = (out / "README.md").read_text()
    for name, value in chosen["thresholds"].items():
        assert f"| {name} | {value:.3f}" in readme
    assert "| triangle | " in readme and "(the global one: no prediction matched)" in readme
    assert "takes one confidence threshold (`conf`) for every class" in readme
    assert f"give it {chosen['global_threshold']:.3f}" in readme
