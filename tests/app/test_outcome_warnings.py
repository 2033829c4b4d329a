"""A run's outcome keeps every warning (issue 37): a speed test that failed is not lost when
the upload's clean-up warns as well."""

from __future__ import annotations

from types import SimpleNamespace

import src.evaluation.evaluate as evaluate
from src.training.end_of_run import RunEnding, RunOutcome


class _Summary:
    def summary(self) -> dict:
        return {"metrics": {}}


def test_a_failed_speed_test_and_a_kept_run_both_warn(monkeypatch, tmp_path):
    def no_speed_test(work_dir, checkpoint=None):
        raise RuntimeError("no GPU to time on")

    monkeypatch.setattr(evaluate, "evaluate_run", lambda work_dir: _Summary())
    monkeypatch.setattr(evaluate, "speed_test_run", no_speed_test)
    outcome = RunOutcome(run_id="run", state="finished")
    RunEnding._evaluate(SimpleNamespace(), tmp_path, outcome, speed_test=True)
    store = SimpleNamespace(exists=lambda path: False)  # Team Files holds no resumable state
    prepared = SimpleNamespace(work_dir=tmp_path, run_id="run")
    RunEnding._clean_up(SimpleNamespace(store=store), prepared, "/mmdetection-3/1_run", outcome)
    assert len(outcome.warnings) == 2
    assert "the speed test failed: RuntimeError: no GPU to time on" in outcome.warning
    assert "the artifacts hold no resumable state" in outcome.warning
    assert tmp_path.is_dir()  # (the run's files are kept)
