"""TensorBoard inside the app: the current run's event files served by ``tensorboard`` behind the
app's own server (``/tensorboard/*``), restarted for each run, stopped with the app, behind the
app's access guard."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from src.training.children import PRIVATE_ARGS
from src.web.access import TOKEN_COOKIE, guard_server
from src.web.tensorboard import PREFIX, TensorBoard, mount_tensorboard
from tests.helpers import FakeProcess

LOSSES = [1.0 / (step + 1) for step in range(5)]  # what _events writes, by step


def _events(run_dir, session: str, tag: str) -> None:
    """Event files where mmengine's TensorboardVisBackend writes them."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / session / "vis_data"))
    for step, value in enumerate(LOSSES):
        writer.add_scalar(tag, value, step)
    writer.close()


def _wait_for(client, path: str, timeout: float = 90, params=None, until=None):
    """GET ``path`` until it answers 200 (and ``until(json)`` holds, when given)."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(path, params=params)
        if response.status_code == 200 and (until is None or until(response.json())):
            return response
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: {response.status_code} {response.text[:300]}")
        time.sleep(0.5)


def _tags(client, until=None) -> dict[str, list[str]]:
    tags = _wait_for(client, f"{PREFIX}/data/plugin/scalars/tags", until=until).json()
    return {run: sorted(names) for run, names in tags.items()}


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
            assert _tags(client) == {"20261204_100000/vis_data": ["loss"]}
            scalars = _wait_for(
                client, f"{PREFIX}/data/plugin/scalars/scalars",
                params={"run": "20261204_100000/vis_data", "tag": "loss"},
            ).json()  # fmt: skip
            assert [step for _, step, _ in scalars] == list(range(len(LOSSES)))
            assert [value for _, _, value in scalars] == pytest.approx(LOSSES)
            # the next run: TensorBoard shows it instead
            board.serve(second)
            shown = _tags(client, until=lambda tags: "20261204_110000/vis_data" in tags)
            assert shown == {"20261204_110000/vis_data": ["loss_cls"]}
        finally:
            board.stop()
        assert not board.running
        assert client.get("/tensorboard/data/runs").status_code == 503


def test_each_run_restarts_tensorboard_on_its_folder(tmp_path):
    started: list[FakeProcess] = []
    board = TensorBoard(
        popen=lambda command, **kw: started.append(FakeProcess(command, **kw)) or started[-1]
    )
    board.serve(tmp_path / "run1")
    board.serve(tmp_path / "run2")  # the next run (or a resume of another one)
    assert [p.poll() for p in started] == [-15, None] and board.running
    command = started[-1].command
    assert command[command.index("--logdir") + 1] == str(tmp_path / "run2")
    # its path prefix is a secret of each start: in its environment, not on its command line
    prefixes = [json.loads(p.env[PRIVATE_ARGS]) for p in started]
    assert [p[0] for p in prefixes] == ["--path_prefix", "--path_prefix"]
    assert all(p[1].startswith(PREFIX + "/") and p[1] not in command for p in prefixes)
    assert prefixes[0][1] != prefixes[1][1] == board.upstream[1]
    assert "--path_prefix" not in command
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert int(command[command.index("--port") + 1]) == board.port
    board.stop()
    assert [p.poll() for p in started] == [-15, -15] and not board.running


def test_a_tensorboard_that_cannot_start_leaves_the_route_answering(tmp_path):
    def no_tensorboard(command, **kwargs):
        raise FileNotFoundError("tensorboard is not installed")

    board = TensorBoard(popen=no_tensorboard)
    board.serve(tmp_path / "run1")  # a warning, not an error: the run goes on
    assert not board.running
    server = FastAPI()
    mount_tensorboard(server, board)
    with TestClient(server) as client:
        assert client.get(f"{PREFIX}/").status_code == 503


class _Upstream(BaseHTTPRequestHandler):
    """Stands in for the tensorboard process: answers every GET, remembers what it was sent."""

    # (path, its Cookie and Authorization headers)
    seen: ClassVar[list[tuple[str, str | None, str | None]]] = []

    def do_GET(self) -> None:
        type(self).seen.append(
            (self.path, self.headers.get("Cookie"), self.headers.get("Authorization"))
        )
        body = b"from tensorboard"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def running_board(tmp_path):
    """A TensorBoard that started on a run, its port served by :class:`_Upstream`."""
    board = TensorBoard(popen=FakeProcess)
    board.serve(tmp_path / "run1")
    _Upstream.seen = []
    upstream = ThreadingHTTPServer(("127.0.0.1", board.port), _Upstream)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    yield board
    upstream.shutdown()
    upstream.server_close()
    thread.join(10)


@pytest.mark.parametrize("route", [f"{PREFIX}/", f"{PREFIX}/data/runs", f"{PREFIX}/font.woff2"])
def test_tensorboard_routes_are_behind_the_apps_token(running_board, route):
    """Off the platform, a server reachable from elsewhere needs the app's token on every route:
    /tensorboard/* is refused without it (nothing reaches tensorboard) and forwarded with it."""
    server = FastAPI()
    mount_tensorboard(server, running_board)
    guard_server(server, "secret", on_platform=False, listening=lambda: [("0.0.0.0", 8000)])
    with TestClient(server) as client:
        for refused in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "secret"}):
            response = client.get(route, headers=refused)
            assert response.status_code == 401, (refused, response.text)
        client.cookies.set(TOKEN_COOKIE, "wrong")
        assert client.get(route).status_code == 401
        assert _Upstream.seen == []  # refused before it was forwarded

        by_header = client.get(route, headers={"Authorization": "Bearer secret"})
        client.cookies.set(TOKEN_COOKIE, "secret")
        by_cookie = client.get(route)  # the browser's way, after the printed URL
    assert (by_header.status_code, by_header.text) == (200, "from tensorboard")
    assert (by_cookie.status_code, by_cookie.text) == (200, "from tensorboard")
    # under tensorboard's secret prefix; the token (cookie, header) stays here
    upstream = running_board.upstream[1] + route.removeprefix(PREFIX)
    assert [urlsplit(path).path for path, _, _ in _Upstream.seen] == [upstream, upstream]
    assert [(cookie, auth) for _, cookie, auth in _Upstream.seen] == [(None, None)] * 2


def test_on_the_platform_tensorboard_is_left_to_its_proxy(running_board):
    """On the platform its proxy authenticates every request: only /api/* needs the token."""
    server = FastAPI()
    mount_tensorboard(server, running_board)
    guard_server(server, "secret", on_platform=True)
    with TestClient(server) as client:
        response = client.get(f"{PREFIX}/data/runs")
        assert (response.status_code, response.text) == (200, "from tensorboard")
