"""``python -m src.cli evaluate``: a run in app data (its best checkpoint, or the one named) on a
split; the key metrics printed, ``metrics.json`` and ``report.html`` written into the run's
``evaluation/`` folder; a run or checkpoint that is not there is one line and a non-zero exit.

The run is trained once for the module, without its own evaluation; each test evaluates its own
copy of it (an evaluation writes into the run's folder)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.test_cli import MODEL, run_cli

RUN = "ev"
# "evaluation of best_coco_bbox_mAP_epoch_2.pth: mAP 0.001  AP50 0.004 ..." (src.cli)
EVALUATION_LINE = re.compile(r"^evaluation of (?P<checkpoint>\S+\.pth): (?P<metrics>.+)$", re.M)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_project) -> Path:
    """App data holding one short CLI run (2 epochs at 128 px, score threshold 0 so that the
    model predicts) that was not evaluated after training."""
    root = tmp_path_factory.mktemp("cli_evaluate")
    result = run_cli(
        "train", "--project", str(demo_project), "--model", MODEL, "--from-scratch",
        "--epochs", "2", "--batch-size", "4", "--input-size", "128", "--score-thr", "0",
        "--no-evaluate", "--app-data", str(root / "app"), "--team-files", str(root / "team"),
        "--run-id", RUN,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "evaluation of" not in result.stdout  # --no-evaluate: the tests below do it
    assert not (root / "app" / RUN / "evaluation").exists()
    return root / "app"


@pytest.fixture
def app_data(trained, tmp_path) -> Path:
    """This test's own copy of the trained run's app data."""
    return Path(shutil.copytree(trained, tmp_path / "app"))


def printed_metrics(stdout: str) -> tuple[str, dict[str, float]]:
    """The checkpoint and the key metrics of the CLI's evaluation line."""
    match = EVALUATION_LINE.search(stdout)
    assert match, stdout
    words = match["metrics"].split()
    metrics = {k: float(v) for k, v in zip(words[::2], words[1::2], strict=True)}
    return match["checkpoint"], metrics


@pytest.mark.slow  # the module's run trains in 40 to 90 s here
def test_evaluate_prints_the_key_metrics_and_writes_them_and_the_report(app_data):
    result = run_cli("evaluate", RUN, "--app-data", str(app_data))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    checkpoint, metrics = printed_metrics(result.stdout)
    run = app_data / RUN
    assert checkpoint.startswith("best_") and (run / checkpoint).is_file()  # the best by default
    assert set(metrics) == {"mAP", "AP50", "AP75", "precision", "recall", "f1"}
    saved = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert saved["checkpoint"] == checkpoint and saved["split"] == "val"
    assert metrics == {k: round(saved["metrics"][k], 3) for k in metrics}  # as printed
    report = run / "evaluation" / "report.html"
    assert f"report: {report}" in result.stdout
    assert report.stat().st_size > 10_000 and f"run {RUN} (val split)" in report.read_text()


@pytest.mark.slow  # the module's run trains in 40 to 90 s here
def test_evaluate_a_named_checkpoint_on_the_train_split(app_data):
    checkpoint = app_data / RUN / "epoch_1.pth"
    result = run_cli("evaluate", str(checkpoint), "--split", "train", "--app-data", str(app_data))
    assert result.returncode == 0, result.stderr[-3000:]
    printed, metrics = printed_metrics(result.stdout)
    assert printed == "epoch_1.pth" and "mAP" in metrics
    saved = json.loads((app_data / RUN / "evaluation" / "metrics.json").read_text())
    assert (saved["checkpoint"], saved["split"]) == ("epoch_1.pth", "train")
    assert not saved["reused_predictions"]  # predicted again with that checkpoint
    report = (app_data / RUN / "evaluation" / "report.html").read_text()
    assert f"run {RUN} (train split)" in report


def test_evaluating_a_run_that_is_not_there_fails_in_one_line(tmp_path):
    empty = tmp_path / "app"  # (not named app_data: tests/tiers.py would follow the fixture)
    result = run_cli("evaluate", "nope", "--app-data", str(empty))
    assert result.returncode == 2, result.stdout
    assert result.stderr.strip().splitlines() == [f"error: no run 'nope' in {empty}"]
    assert not empty.exists()  # nothing written


@pytest.mark.slow  # the module's run trains in 40 to 90 s here
def test_evaluating_a_checkpoint_that_is_not_there_fails_in_one_line(app_data):
    missing = app_data / RUN / "epoch_9.pth"
    result = run_cli("evaluate", str(missing), "--app-data", str(app_data))
    assert result.returncode == 2, result.stdout
    assert result.stderr.strip().splitlines() == [f"error: run {RUN} has no checkpoint epoch_9.pth"]
    assert not (app_data / RUN / "evaluation" / "metrics.json").exists()
