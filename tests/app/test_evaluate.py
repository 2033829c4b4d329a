"""The evaluation after training: the SDK's Model Benchmark numbers on known truth, the report in a
real browser with no network, and a run that is never lost to a failing evaluation."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from src.data.eval_projects import write_eval_projects
from src.data.reader import load_split, to_coco
from src.evaluation.evaluate import _sdk_evaluation, evaluate_run
from src.runs.report import write_report

CLASSES = ["square", "circle", "triangle"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Enough validation objects (about 40) for mAP to tell models apart."""
    from src.data.demo import DemoOptions, make_demo_project

    return make_demo_project(tmp_path_factory.mktemp("eval") / "p", DemoOptions(images=64, seed=5))


def _split(project: Path, task: str) -> list[dict]:
    data_list, _ = load_split(project, CLASSES, task, ["val"], None, True, None)
    return data_list


def _shifted(rle: dict, dx: int) -> dict:
    mask = np.roll(mask_utils.decode(rle), dx, axis=1)
    out = mask_utils.encode(np.asfortranarray(mask))
    return {"size": out["size"], "counts": out["counts"].decode()}


def _predictions(data_list: list[dict], segmentation: bool, seed: int = 0) -> list[dict]:
    """Known truth, imperfect model: boxes off by a few pixels, one object in five missed, one
    in ten with the wrong class, a false alarm on every third image; scores from 0.3 to 1."""
    rng = np.random.default_rng(seed)
    predictions = []
    for n, info in enumerate(data_list):
        for inst in info["instances"]:
            if rng.random() < 0.2:
                continue
            x1, y1, x2, y2 = (float(v) for v in np.asarray(inst["bbox"]) + rng.normal(0, 2, 4))
            label = inst["bbox_label"] if rng.random() > 0.1 else (inst["bbox_label"] + 1) % 3
            score = float(rng.uniform(0.3, 1.0))
            det = {"image_id": info["img_id"], "category_id": label + 1,
                   "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}  # fmt: skip
            if segmentation:
                det["segmentation"] = _shifted(inst["mask"], int(rng.integers(-2, 3)))
            predictions.append(det)
        if n % 3 == 0:
            box = [10.0, 10.0, 30.0, 25.0]
            det = {"image_id": info["img_id"], "category_id": 1, "bbox": box, "score": 0.35}
            if segmentation:
                mask = np.zeros((info["height"], info["width"]), np.uint8)
                mask[10:35, 10:40] = 1
                rle = mask_utils.encode(np.asfortranarray(mask))
                det["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
            predictions.append(det)
    return predictions


def _pycocotools_map(data_list: list[dict], predictions: list[dict], iou_type: str) -> float:
    truth = COCO()
    truth.dataset = to_coco(data_list, CLASSES)
    for ann in truth.dataset["annotations"]:  # pycocotools wants bytes RLE to compute areas
        if isinstance(ann.get("segmentation", {}).get("counts"), str):
            ann["segmentation"] = dict(ann["segmentation"])
    with contextlib.redirect_stdout(io.StringIO()):
        truth.createIndex()
        found = truth.loadRes([dict(p) for p in predictions])
        evaluation = COCOeval(truth, found, iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[0])


@pytest.mark.parametrize("task", ["object-detection", "instance-segmentation"])
def test_the_sdk_evaluator_agrees_with_pycocotools_on_the_same_predictions(task, project, tmp_path):
    segmentation = task == "instance-segmentation"
    data_list = _split(project, task)
    assert sum(len(i["instances"]) for i in data_list) > 20
    predictions = _predictions(data_list, segmentation)
    gt, pred = write_eval_projects(data_list, CLASSES, predictions, tmp_path / "p", segmentation)
    mp = _sdk_evaluation(gt, pred, tmp_path / "sdk", segmentation)
    expected = _pycocotools_map(data_list, predictions, "segm" if segmentation else "bbox")
    assert 0.2 < expected < 0.95  # an imperfect model, not a degenerate case
    assert mp.key_metrics()["mAP"] == pytest.approx(expected, abs=1e-9)

    perfect = [
        {"image_id": i["img_id"], "category_id": inst["bbox_label"] + 1, "score": 0.9,
         "bbox": [x1, y1, x2 - x1, y2 - y1]} | ({"segmentation": inst["mask"]} if segmentation
                                              else {})
        for i in data_list for inst in i["instances"] for x1, y1, x2, y2 in [inst["bbox"]]
    ]  # fmt: skip
    gt, pred = write_eval_projects(data_list, CLASSES, perfect, tmp_path / "q", segmentation)
    assert _sdk_evaluation(gt, pred, tmp_path / "sdk2", segmentation).key_metrics()[
        "mAP"
    ] == pytest.approx(1.0)


def _browser() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Debian's chromium is needed to check the report (make setup installs it)")


def test_the_report_opens_offline_in_a_browser_with_every_section(project, tmp_path):
    data_list = _split(project, "instance-segmentation")
    predictions = _predictions(data_list, segmentation=True)
    gt, pred = write_eval_projects(data_list, CLASSES, predictions, tmp_path / "p", True)
    mp = _sdk_evaluation(gt, pred, tmp_path / "sdk", True)
    summary = {"checkpoint": "best.pth", "split": "val", "metrics": mp.key_metrics(),
               "per_class_ap": dict(zip(mp.cat_names, mp.AP_per_class(), strict=True)),
               "notes": ["a note"]}  # fmt: skip
    page = write_report(summary, mp, data_list, predictions, CLASSES, "Evaluation of a test")
    assert "http://" not in page and "https://" not in page  # nothing to fetch: offline
    report = tmp_path / "report.html"
    report.write_text(page, encoding="utf-8")

    offline = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]  # fmt: skip
    dom = subprocess.run(
        [_browser(), *offline, "--dump-dom", report.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    for section in ("metrics", "per-class", "pr", "confusion", "calibration", "gallery"):
        assert f'id="{section}"' in dom, section
    assert dom.count('alt="ground truth"') == dom.count('alt="predictions"') >= 5

    shot = tmp_path / "report.png"
    subprocess.run(
        [_browser(), *offline, "--window-size=1200,9000", f"--screenshot={shot}", report.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    import cv2

    image = cv2.imread(str(shot))
    assert image is not None and image.shape[0] == 9000
    # the plots and the gallery are drawn: a large part of the page is neither white nor text
    colourful = (image.max(axis=2).astype(int) - image.min(axis=2)) > 60
    rows = np.flatnonzero(colourful.mean(axis=1) > 0.05)
    assert rows.size > 2000, f"only {rows.size} rows of the page show pictures"


def test_evaluating_a_run_twice_reuses_nothing_stale(demo_project, tmp_path):
    """The kept predictions belong to a named checkpoint: another checkpoint is predicted."""
    from tests.helpers import run, small_cfg

    cfg = small_cfg(demo_project, tmp_path / "app" / "r", epochs=2)
    run(cfg, "r")
    work_dir = tmp_path / "app" / "r"
    kept = json.loads((work_dir / "predictions" / "best.json").read_text())
    best = evaluate_run(work_dir)
    assert best.reused_predictions and best.checkpoint == kept["checkpoint"]
    assert best.metrics["mAP"] == pytest.approx(best.validation_map, abs=1e-3)
    first = evaluate_run(work_dir, work_dir / "epoch_1.pth")
    assert not first.reused_predictions and first.checkpoint == "epoch_1.pth"
    saved = json.loads((work_dir / "evaluation" / "metrics.json").read_text())
    assert saved["checkpoint"] == "epoch_1.pth" and saved["report"] == "report.html"
    assert (work_dir / "evaluation" / "report.html").stat().st_size > 10_000


def _controller_run(demo_project, tmp_path, **params):
    from src.config.params import TrainParams
    from src.data.project import Split
    from src.runs.storage import LocalArtifactStore
    from src.setup.prepare import TrainRequest
    from src.training.controller import TrainingController

    controller = TrainingController(tmp_path / "app", LocalArtifactStore(tmp_path / "team"))
    values = dict(
        classes=tuple(CLASSES), weights="scratch", epochs=2, train_batch_size=2,
        val_batch_size=2, num_workers=0, input_size=(128, 128), lr=0.002, seed=3,
    )  # fmt: skip
    request = TrainRequest(
        project_dir=str(demo_project), app_data_dir=str(tmp_path / "app"),
        model="rtmdet_tiny_8xb32-300e_coco", params=TrainParams(**values | params),
        split=Split(train_datasets=["train"], val_datasets=["val"]), run_id="ev",
    )  # fmt: skip
    controller.start(request)
    status = controller.wait(600)
    return status, tmp_path / "team" / "mmdetection-3" / "ev_project"


def test_a_finished_run_is_evaluated_and_uploaded_with_its_report(demo_project, tmp_path):
    status, artifacts = _controller_run(demo_project, tmp_path, speed_test=True)
    outcome = status.outcome
    assert outcome.state == "finished" and outcome.evaluation_error is None
    evaluation = outcome.evaluation
    assert evaluation["reused_predictions"] and evaluation["primary_metric"] == "mAP"
    assert (artifacts / "evaluation" / "report.html").is_file()
    info = json.loads((artifacts / "experiment_info.json").read_text())
    assert info["primary_metric"] == "mAP"
    assert info["evaluation_metrics"]["mAP"] == pytest.approx(evaluation["metrics"]["mAP"])
    assert status.to_json()["outcome"]["evaluation"]["metrics"] == evaluation["metrics"]
    # the speed test asked for: the SDK's form, what the platform's report shows
    speedtest = json.loads((artifacts / "evaluation" / "speedtest.json").read_text())
    assert [t["batch_size"] for t in speedtest["speedtest"]] == [1, 8, 16]
    assert all(t["benchmark"]["total"] > 0 and t["num_iterations"] == 10
               for t in speedtest["speedtest"])  # fmt: skip
    assert speedtest["model_info"]["runtime"] == "PyTorch" and outcome.warning is None
    # and its TensorBoard event files, one run per session, with the losses and the mAP
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [events] = list((artifacts / "logs" / "tensorboard").glob("*/events.out.tfevents.*"))
    accumulator = EventAccumulator(str(events.parent))
    accumulator.Reload()
    assert {"loss", "lr", "coco/bbox_mAP"} <= set(accumulator.Tags()["scalars"])


def test_a_failed_evaluation_never_loses_the_run(demo_project, tmp_path, monkeypatch):
    import src.evaluation.evaluate

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(src.evaluation.evaluate, "_sdk_evaluation", broken)
    status, artifacts = _controller_run(demo_project, tmp_path)
    outcome = status.outcome
    assert outcome.state == "finished" and "disk full" in outcome.evaluation_error
    assert outcome.artifacts and outcome.upload_error is None
    assert any(artifacts.glob("best_*.pth")) and not (artifacts / "evaluation").exists()
    assert json.loads((artifacts / "experiment_info.json").read_text())["evaluation_metrics"] == {}


def test_a_model_that_predicts_nothing_gets_zeros_and_a_report_that_says_so(demo_project, tmp_path):
    """One epoch from scratch, keeping only scores of 0.99 or more, predicts nothing: the
    evaluation is COCO zeros, a note with what to try, and a report — not the SDK evaluator's
    'Not found any predictions'."""
    from tests.helpers import run, small_cfg

    cfg = small_cfg(demo_project, tmp_path / "run", epochs=1, score_thr=0.99)
    _, status = run(cfg, "nothing")
    assert status.state == "finished", status.error
    result = evaluate_run(tmp_path / "run")
    assert result.metrics["mAP"] == 0 and result.metrics["recall"] == 0
    note = next(n for n in result.notes if "predicted nothing" in n)
    assert "score of at least 0.99" in note and "train longer" in note
    page = Path(result.report).read_text(encoding="utf-8")
    assert "predicted nothing" in page
