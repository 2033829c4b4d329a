"""The prepared GPU check and the GPU benchmark's arithmetic (issue 34, item 8 and Deliver 4),
rehearsed on the CPU: ``scripts/gpu_check.sh --smoke`` writes one JSON line per stage (run or
skipped with the reason), and bench/gpu.py times iterations, not epochs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import gpu  # noqa: E402
import gpu_check  # noqa: E402


def test_a_large_batch_still_gets_the_iterations_a_rate_needs():
    """192 train images at batch 96 are 2 iterations an epoch: 3 epochs made 6, fewer than the 7
    a rate needs after 5 warm-up ones; the epochs now follow from the iterations asked for."""
    epochs = gpu.epochs_for(40, 96, 192)
    assert epochs * (192 // 96) >= 40
    assert gpu.epochs_for(40, 2, 192) == 1
    assert gpu.epochs_for(40, 256, 192) == 40  # a batch larger than the data: one an epoch


def test_too_few_iterations_is_an_error_that_says_how_many():
    with pytest.raises(ValueError, match="6 iterations: a rate needs at least 7"):
        gpu.rate_of([float(t) for t in range(6)])
    assert gpu.rate_of([0.0] * 5 + [1.0, 2.0, 3.0]) == pytest.approx(1.0)


@pytest.mark.train
def test_the_gpu_check_rehearses_every_stage_on_the_cpu(tmp_path):
    """Every stage writes its line (ok, or skipped with a reason: no CUDA, no TensorRT), none
    fails, and the line of each stage that trained says what it measured."""
    env = dict(os.environ, OUT=str(tmp_path))
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--smoke"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=1100)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in (tmp_path / "check.jsonl").read_text().splitlines()]
    assert [line["stage"] for line in lines] == [name for name, _ in gpu_check.STAGES]
    by_stage = {line["stage"]: line for line in lines}
    assert {line["status"] for line in lines} <= {"ok", "skipped"}, lines
    assert all(line["reason"] for line in lines if line["status"] == "skipped")
    assert by_stage["oom_recovery"]["status"] == "skipped"  # the search runs on CUDA only
    assert by_stage["rtmdet_steps"]["steps_done"] == 2
    assert by_stage["session_vs_bare"]["ratios"] and by_stage["session_vs_bare"]["iters"] == 7
    assert by_stage["maskrcnn"]["steps"]["steps_done"] == 1
    assert by_stage["speed"]["rows"]
