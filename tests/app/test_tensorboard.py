"""TensorBoard inside the app: the current run's event files served by ``tensorboard`` behind the
app's own server (``/tensorboard/*``), restarted for each run, stopped with the app."""

from __future__ import annotations

import time

from fastapi import FastAPI
from fastapi.testclient import TestClient

from src.app.tensorboard import TensorBoard, mount_tensorboard


def _events(run_dir, session: str, tag: str) -> None:
    """Event files where mmengine's TensorboardVisBackend writes them."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / session / "vis_data"))
    for step in range(5):
        writer.add_scalar(tag, 1.0 / (step + 1), step)
    writer.close()


def _wait_for(client, path: str, timeout: float = 90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        response = client.get(path)
        if response.status_code == 200:
            return response
        time.sleep(0.5)
    raise AssertionError(f"{path}: {response.status_code} {response.text[:300]}")


def test_the_current_runs_tensorboard_is_served_under_the_apps_own_server(tmp_path):
    first, second = tmp_path / "run1", tmp_path / "run2"
    _events(first, "20261204_100000", "loss")
    _events(second, "20261204_110000", "loss_cls")
    board = TensorBoard(log_file=tmp_path / "tensorboard.log")
    server = FastAPI()
    mount_tensorboard(server, board)
    with TestClient(server) as client:
        response = client.get("/tensorboard/")
        assert response.status_code == 503 and "starts with a run" in response.json()["error"]
        try:
            board.serve(first)
            page = _wait_for(client, "/tensorboard/")
            assert "<tf-tensorboard" in page.text or "TensorBoard" in page.text
            tags = _wait_for(client, "/tensorboard/data/plugin/scalars/tags").json()
            assert tags == {
                "20261204_100000/vis_data": {"loss": tags["20261204_100000/vis_data"]["loss"]}
            }
            # the next run: TensorBoard shows it instead
            board.serve(second)
            deadline = time.time() + 90
            while time.time() < deadline:
                response = client.get("/tensorboard/data/plugin/scalars/tags")
                if response.status_code == 200 and "20261204_110000/vis_data" in response.json():
                    break
                time.sleep(0.5)
            assert set(response.json()) == {"20261204_110000/vis_data"}
        finally:
            board.stop()
        assert not board.running
        assert client.get("/tensorboard/data/runs").status_code == 503
