"""Does the app's server stay responsive while training? /sly/state latency, idle vs training.

Starts the app (uvicorn, local mode, a generated project) in a subprocess, measures POST
/sly/state while idle, from Start until iteration 2 (preparation, the runner's build, the first
iterations), then while a training run started through the HTTP API trains (RTMDet-tiny, CPU,
the training thread busy on both cores), and after the first validation, when the Training
step shows its validation images; then the sizes of /sly/state and /sly/data. Prints p50/p99 of
each, side by side. Goal (issues 4 and 14): p99 under 100 ms while training, previews included.

    .venv/bin/python bench/ui_latency.py [--requests 300]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _latencies(client: httpx.Client, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.post("/sly/state", json={})
        out.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        time.sleep(0.01)
    return out


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 2 else max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    from src.data.demo import DemoOptions, make_demo_project

    work = Path(tempfile.mkdtemp(prefix="bench_ui_"))
    project = make_demo_project(work / "project", DemoOptions(images=48, seed=0))
    port = _free_port()
    token = secrets.token_urlsafe(16)  # the HTTP API's token (src/web/main.py)
    env = dict(os.environ, PROJECT_DIR=str(project), SLY_APP_DATA_DIR=str(work / "app_data"),
               TEAM_FILES_DIR=str(work / "team"), TRAIN_MMDET3_API_TOKEN=token)  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "src.web.main:app", "--host", "127.0.0.1", "--port",
         str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        auth = {"Authorization": f"Bearer {token}"}
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30, headers=auth) as client:
            for _ in range(240):
                try:
                    client.get("/api/status")
                    break
                except httpx.TransportError:
                    time.sleep(0.5)
            idle = _latencies(client, args.requests)
            # the Augmentations step's preview: two more images in the page data from now on
            page = client.post("/sly/state", json={}).json()
            client.post("/aug_preview_btn/button_clicked_cb",
                        json={"state": page, "context": {}}).raise_for_status()  # fmt: skip
            shown = client.post("/sly/data", json={}).json()
            assert shown["aug_after"]["url"].startswith("data:image/jpeg"), shown["aug_message"]
            body = {
                "project": str(project), "model": "rtmdet_tiny_8xb32-300e_coco",
                "split": {"train": ["train"], "val": ["val"]},
                "hyperparameters": {"epochs": 100, "train_batch_size": 4, "num_workers": 0,
                                    "input_size": 256, "weights": "scratch",
                                    "evaluate": False},
            }  # fmt: skip
            # the start of a run (preparation, building the runner, iteration 0), measured
            # while /api/train is answered in another thread
            poster = threading.Thread(
                target=lambda: httpx.post(f"{base}/api/train", json=body, headers=auth,
                                          timeout=300).raise_for_status()
            )  # fmt: skip
            poster.start()
            starting = []
            while poster.is_alive() or client.get("/api/status").json()["iteration"] < 2:
                starting += _latencies(client, 5)
            busy = _latencies(client, args.requests)
            iteration = client.get("/api/status").json()["iteration"]
            # after the first validation: its preview images are in the page data
            while not client.get("/api/status").json()["metrics"]:
                time.sleep(0.5)
            after_val = _latencies(client, args.requests)
            state_kib = len(client.post("/sly/state", json={}).content) / 1024
            data_kib = len(client.post("/sly/data", json={}).content) / 1024
            client.post("/api/stop")
    finally:
        server.terminate()
        server.wait(60)
        shutil.rmtree(work, ignore_errors=True)
    print(f"/sly/state, {args.requests} requests each (ms):")
    print(f"  idle:     p50 {statistics.median(idle):6.1f}   p99 {_p(idle, 99):6.1f}")
    print(
        f"  start:    p50 {statistics.median(starting):6.1f}   p99 {_p(starting, 99):6.1f}   "
        f"max {max(starting):6.1f}   ({len(starting)} requests from Start to iteration 2)"
    )
    print(f"  training: p50 {statistics.median(busy):6.1f}   p99 {_p(busy, 99):6.1f}   "
          f"goal p99 < 100 (training reached iteration {iteration})")  # fmt: skip
    print(f"  after a validation (preview images shown): p50 {statistics.median(after_val):6.1f}"
          f"   p99 {_p(after_val, 99):6.1f}")  # fmt: skip
    print(f"page payloads after a validation: /sly/state {state_kib:.1f} KiB, "
          f"/sly/data {data_kib:.1f} KiB")  # fmt: skip


if __name__ == "__main__":
    main()
