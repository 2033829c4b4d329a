"""TensorBoard inside the app, for the current run: what the SDK's TrainApp offers, the same way.

Every run writes TensorBoard event files (``src.config.compose``: mmengine's
``TensorboardVisBackend``, under ``<run>/<session>/vis_data/``). When a run starts (a resume
too), :class:`TensorBoard` (re)starts ``tensorboard`` on that run's folder, on a free port of
127.0.0.1; the app's own server forwards ``/tensorboard/*`` to it (:func:`mount_tensorboard`), so
it is reached where the page is (through the platform's proxy, or this machine's port) and behind
the same guard as every route (``src.web.access``).

Its port is no way around that guard: ``tensorboard`` answers only under a path prefix drawn at
random for each start (``/tensorboard/<secret>``; anything else is 404), given to it in its
environment (which only this user can read), not on its command line (which every user can), and
known to nobody but the forwarder. It is stopped with the app however the app ends
(``src.training.children``: the app's shutdown, or the kernel's signal when the app process dies).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from starlette.background import BackgroundTask

from src.training import children

logger = logging.getLogger(__name__)
PREFIX = "/tensorboard"
_NOT_FORWARDED = (b"host", b"cookie", b"authorization")


class TensorBoard:
    """One ``tensorboard`` process at a time, for the run that trains now.

    Args:
        log_file: where its own output goes (it is chatty; the console stays clean). Only this
            user may read it: tensorboard prints its URL, secret prefix included.
        popen: starts the process (``src.training.children.popen``; a stand-in in tests).
    """

    def __init__(
        self, log_file: str | Path | None = None, popen: Callable[..., Any] = children.popen
    ) -> None:
        self.log_file = Path(log_file) if log_file else None
        self._popen = popen
        self.logdir: Path | None = None
        # where the forwarder finds it: (port, path prefix), replaced together at each start
        self.upstream: tuple[int, str] | None = None
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int | None:
        return self.upstream[0] if self.upstream else None

    def serve(self, logdir: str | Path) -> None:
        """Show ``logdir`` (a run's folder): the process is restarted on it, under a new secret
        prefix. A TensorBoard that cannot start is a warning: the run goes on, its charts are in
        the page anyway."""
        with self._lock:
            self._stop()
            self.logdir = Path(logdir)
            self.upstream = (_free_port(), f"{PREFIX}/{secrets.token_urlsafe(32)}")
            command = children.tied_command("tensorboard.main", [
                "--logdir", str(self.logdir), "--host", "127.0.0.1", "--port",
                str(self.upstream[0]), "--reload_interval", "10",
            ])  # fmt: skip
            env = children.private_env(["--path_prefix", self.upstream[1]])
            out = _private_log(self.log_file) if self.log_file else subprocess.DEVNULL
            try:
                self._process = self._popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
            except OSError as exc:
                logger.warning("TensorBoard did not start: %s", exc)
                self._process = None
            finally:
                if out is not subprocess.DEVNULL:
                    out.close()

    @property
    def running(self) -> bool:
        process = self._process
        return process is not None and process.poll() is None

    def stop(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def _private_log(path: Path) -> Any:
    """``path`` opened to append, readable by this user only (an older one is made so)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mount_tensorboard(server: Any, board: TensorBoard) -> None:
    """``/tensorboard/*`` of the app's server forwarded to ``board`` (503 with a message while
    no run has started one, or while it starts)."""
    client = httpx.AsyncClient(timeout=60)

    @server.get(PREFIX)
    async def _bare() -> Any:  # its pages' links are relative to the folder
        return RedirectResponse(f"{PREFIX}/")

    @server.api_route(PREFIX + "/{path:path}", methods=["GET", "POST"])
    async def _forward(path: str, request: Request) -> Any:
        upstream = board.upstream
        if not board.running or upstream is None:
            return JSONResponse(
                {"error": "TensorBoard starts with a run: start (or resume) one, then reload"},
                status_code=503,
            )
        port, prefix = upstream
        url = httpx.URL(f"http://127.0.0.1:{port}{prefix}/{path}",
                        query=request.url.query.encode("utf-8"))  # fmt: skip
        # the app's token (cookie, header) stays here
        headers = [(k, v) for k, v in request.headers.raw if k not in _NOT_FORWARDED]
        try:
            answer = await client.send(
                client.build_request(request.method, url, headers=headers,
                                     content=await request.body()),
                stream=True,
            )  # fmt: skip
        except httpx.TransportError:
            return JSONResponse(
                {"error": "TensorBoard is starting: reload in a few seconds"}, status_code=503
            )
        headers = dict(answer.headers)
        if "location" in headers:  # a redirect names the app's path, never the secret
            headers["location"] = headers["location"].replace(prefix, PREFIX)
        return StreamingResponse(
            answer.aiter_raw(),
            status_code=answer.status_code,
            headers=headers,
            background=BackgroundTask(answer.aclose),
        )
