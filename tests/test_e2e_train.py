"""End to end on CPU: the CLI trains RTMDet-tiny from scratch and the uploaded model detects."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import found_at_iou_50

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_cli_trains_a_model_that_finds_the_demo_objects(tmp_path):
    from src.data.demo import DemoOptions, make_demo_project

    project = make_demo_project(tmp_path / "demo", DemoOptions(images=96, seed=11))
    team_files = tmp_path / "team_files"
    app_data = tmp_path / "app_data"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "src.cli",
            "train",
            "--project",
            str(project),
            "--model",
            "rtmdet_tiny_8xb32-300e_coco",
            "--from-scratch",
            "--epochs",
            "16",
            "--batch-size",
            "4",
            "--val-batch-size",
            "4",
            "--input-size",
            "256",
            "--lr",
            "0.004",
            "--val-interval",
            "8",
            "--workers",
            "1",
            "--seed",
            "0",
            "--team-files",
            str(team_files),
            "--app-data",
            str(app_data),
            "--run-id",
            "e2e",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "final validation: bbox_mAP" in result.stdout

    run_dir = team_files / "mmdetection-3" / "e2e_demo"
    config = run_dir / "config.py"
    assert config.is_file()
    lines = [line for line in config.read_text().splitlines() if line and not line[0].isspace()]
    assert lines[-1].startswith("sly_metadata = dict(")
    best = sorted(run_dir.glob("best_coco_bbox_mAP_epoch_*.pth"))
    assert best, sorted(p.name for p in run_dir.iterdir())
    assert (run_dir / "logs").is_dir() and any((run_dir / "logs").glob("*.log"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["state"] == "finished" and metrics["epochs_done"] == 16
    assert len(metrics["history"]["val"]) == 2
    # resumable checkpoints stay in the synced app-data dir
    assert (app_data / "e2e" / "last_checkpoint").is_file()
    # a local run is an experiment too, as the SDK reads one
    from supervisely.nn.experiments import ExperimentInfo

    experiment = ExperimentInfo(**json.loads((run_dir / "experiment_info.json").read_text()))
    assert experiment.framework_name == "MMDetection 3.0" and experiment.task_id is None
    assert experiment.best_checkpoint == best[-1].name and experiment.train_size == 72
    assert experiment.artifacts_dir == "/mmdetection-3/e2e_demo/"
    split = json.loads((run_dir / experiment.train_val_split).read_text())
    assert len(split["val"]) == experiment.val_size == 24

    # the evaluation after training: the SDK's Model Benchmark numbers on the best epoch's own
    # validation predictions (not predicted again), so its mAP is the validation's
    evaluation = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    assert evaluation["reused_predictions"] and evaluation["checkpoint"] == best[-1].name
    best_val = max(metrics["history"]["val"], key=lambda v: v["bbox_mAP"])
    assert evaluation["metrics"]["mAP"] == pytest.approx(best_val["bbox_mAP"], abs=1e-3)
    assert experiment.evaluation_metrics["mAP"] == evaluation["metrics"]["mAP"]
    info = json.loads((run_dir / "experiment_info.json").read_text())
    assert info["primary_metric"] == "mAP"
    report = (run_dir / "evaluation" / "report.html").read_text()
    assert 'id="gallery"' in report and "data:image/jpeg;base64," in report
    assert "evaluation of " in result.stdout and "report: " in result.stdout

    # the serving side: mmdet's own API on torch's default weights_only=True loading
    from mmdet.apis import init_detector

    # as the run's README says, with mmdet's defaults (its test dataset gives the palette)
    model = init_detector(str(config), str(best[-1]), device="cpu")
    assert list(model.dataset_meta["classes"]) == ["square", "circle", "triangle"]
    matched, total = found_at_iou_50(model, project)
    assert total > 20
    recall = matched / total
    print(f"recall {matched}/{total}")
    assert recall >= 0.8, f"only {matched}/{total} ground-truth boxes found at IoU >= 0.5"
    assert np.isfinite(recall)
