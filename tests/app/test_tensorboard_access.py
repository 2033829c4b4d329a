"""TensorBoard's own port is no way around the app's token (issue 35): it listens on 127.0.0.1,
where every user of the machine can connect, but it answers only under a secret path prefix
that only the app's forwarder knows; the secret is on no command line (``ps`` shows those to
everyone) and in no file another user can read."""

from __future__ import annotations

import stat
import time

import httpx
import psutil
from fastapi import FastAPI
from fastapi.testclient import TestClient

from src.web.tensorboard import PREFIX, TensorBoard, mount_tensorboard


def _events(run_dir) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / "20261206_100000" / "vis_data"))
    writer.add_scalar("loss", 1.0, 0)
    writer.close()


def test_tensorboards_port_answers_only_the_apps_forwarder(tmp_path):
    _events(tmp_path / "run")
    log = tmp_path / "tensorboard.log"
    board = TensorBoard(log_file=log)
    server = FastAPI()
    mount_tensorboard(server, board)
    try:
        board.serve(tmp_path / "run")
        with TestClient(server) as client:
            deadline = time.monotonic() + 90
            while (forwarded := client.get(f"{PREFIX}/data/runs")).status_code != 200:
                assert time.monotonic() < deadline, forwarded.text
                time.sleep(0.5)
            page = client.get(f"{PREFIX}/")
        assert forwarded.json() == ["20261206_100000/vis_data"]
        assert page.status_code == 200 and "<tb-webapp>" in page.text
        # another user of this machine, at the port, without the secret: nothing
        direct = f"http://127.0.0.1:{board.port}"
        for path in ("/", f"{PREFIX}/", f"{PREFIX}/data/runs", f"{PREFIX}/data/logdir"):
            assert httpx.get(direct + path, timeout=10).status_code == 404, path
        secret = board.upstream[1]
        assert secret not in page.text and secret not in forwarded.text
        commands = [
            " ".join(p.cmdline())
            for p in psutil.Process().children(recursive=True)
            if str(tmp_path / "run") in " ".join(p.cmdline())
        ]  # fmt: skip (tensorboard, and its data server)
        assert any("tensorboard.main" in c for c in commands), commands
        assert not [c for c in commands if secret in c or "--path_prefix" in c]
        # its log holds its URL, secret included: this user's only
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
    finally:
        board.stop()
    assert not board.running
