"""Shutting the app down (/sly/shutdown, as the platform's Stop does) stops training gracefully:
the run ends at a batch boundary with a resumable checkpoint, and its artifacts are uploaded.
The app process exits, so it runs in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from src.checkpoints import find_resumable_runs

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_shutdown_during_training_saves_and_uploads(demo_project, tmp_path):
    port = _free_port()
    env = dict(
        os.environ,
        PROJECT_DIR=str(demo_project),
        SLY_APP_DATA_DIR=str(tmp_path / "app_data"),
        TEAM_FILES_DIR=str(tmp_path / "team"),
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "src.main:app", "--host", "127.0.0.1",
         "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{base}/api/status", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        body = {
            "project": str(demo_project),
            "model": "rtmdet_tiny_8xb32-300e_coco",
            "split": {"train": ["train"], "val": ["val"]},
            "hyperparameters": {"epochs": 50, "train_batch_size": 2, "num_workers": 0,
                                "input_size": 128, "weights": "scratch"},
            "run_id": "shut",
        }  # fmt: skip
        assert httpx.post(f"{base}/api/train", json=body, timeout=30).status_code == 200
        while httpx.get(f"{base}/api/status", timeout=5).json()["iteration"] < 3:
            time.sleep(0.2)
        httpx.post(f"{base}/sly/shutdown", json={}, timeout=30)
        server.wait(180)
    finally:
        if server.poll() is None:
            server.kill()
    runs = find_resumable_runs(tmp_path / "app_data")
    assert [r.run_id for r in runs] == ["shut"]
    assert runs[0].iteration >= 3 and runs[0].epoch < 50
    assert list((tmp_path / "team" / "mmdetection-3").glob("shut_*/config.py"))
