"""Shutting the app down (/sly/shutdown, as the platform's Stop does) stops training gracefully:
the run ends at a batch boundary with a resumable checkpoint, and its artifacts are uploaded.
The app process exits, so it runs in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from src.runs.checkpoints import find_resumable_runs

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _printed_token(server: subprocess.Popen) -> str:
    """The API token the app printed at start; the rest of its output is drained in a thread
    (a full pipe would block the server)."""
    for line in server.stdout:
        if "HTTP API token" in line:
            threading.Thread(target=server.stdout.read, daemon=True).start()
            return line.rsplit(": ", 1)[1].strip()
    raise AssertionError("the app printed no API token")


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
        # no token given: the app makes one and prints it; /api/* answers 401 without it
        token = _printed_token(server)
        auth = {"Authorization": f"Bearer {token}"}
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{base}/api/status", timeout=2).status_code == 401:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        wrong = {"Authorization": "Bearer guess"}
        assert httpx.get(f"{base}/api/status", headers=wrong, timeout=5).status_code == 401
        config = "open('pwned.txt', 'w').write('ran')"
        refused = httpx.post(f"{base}/api/train", json={"config": config}, timeout=30)
        assert refused.status_code == 401 and not (ROOT / "pwned.txt").exists()
        assert httpx.get(f"{base}/api/status", headers=auth, timeout=5).status_code == 200
        body = {
            "project": str(demo_project),
            "model": "rtmdet_tiny_8xb32-300e_coco",
            "split": {"train": ["train"], "val": ["val"]},
            "hyperparameters": {"epochs": 50, "train_batch_size": 2, "num_workers": 0,
                                "input_size": 128, "weights": "scratch"},
            "run_id": "shut",
        }  # fmt: skip
        started = httpx.post(f"{base}/api/train", json=body, headers=auth, timeout=30)
        assert started.status_code == 200, started.text
        while httpx.get(f"{base}/api/status", headers=auth, timeout=5).json()["iteration"] < 3:
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
