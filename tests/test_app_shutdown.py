"""Shutting the app down (/sly/shutdown, as the platform's Stop does) stops training gracefully:
the run ends at a batch boundary with a resumable checkpoint, and its artifacts are uploaded.
The app process exits, so it runs in a subprocess."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from src.runs.checkpoints import find_resumable_runs
from tests.helpers import AppProcess, free_port

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_shutdown_during_training_saves_and_uploads(demo_project, tmp_path):
    port = free_port()
    env = dict(
        PROJECT_DIR=str(demo_project),
        SLY_APP_DATA_DIR=str(tmp_path / "app_data"),
        TEAM_FILES_DIR=str(tmp_path / "team"),
    )
    app = AppProcess(env, "127.0.0.1", port)
    server = app.process
    base = f"http://127.0.0.1:{port}"
    try:
        # no token given: the app makes one and prints it; /api/* answers 401 without it
        token = app.token()
        auth = {"Authorization": f"Bearer {token}"}
        deadline = time.time() + 120
        answered = None
        while answered is None and time.time() < deadline:
            try:
                answered = httpx.get(f"{base}/api/status", timeout=2).status_code
            except httpx.TransportError:
                time.sleep(0.5)  # not listening yet
        assert answered == 401, f"/api/status without the token answered {answered} (None: never)"
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
        deadline = time.time() + 300
        while True:
            status = httpx.get(f"{base}/api/status", headers=auth, timeout=5).json()
            if status["iteration"] >= 3:
                break
            assert status["state"] in ("preparing", "training", "validating"), status
            assert time.time() < deadline, f"3 iterations not trained in 300 s: {status}"
            time.sleep(0.2)
        httpx.post(f"{base}/sly/shutdown", json={}, timeout=30)
        server.wait(180)  # (TimeoutExpired when it does not exit)
    finally:
        app.close()
    runs = find_resumable_runs(tmp_path / "app_data")
    assert [r.run_id for r in runs] == ["shut"]
    assert runs[0].iteration >= 3 and runs[0].epoch < 50
    assert list((tmp_path / "team" / "mmdetection-3").glob("shut_*/config.py"))
