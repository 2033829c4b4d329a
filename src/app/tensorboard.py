"""TensorBoard inside the app, for the current run: what the SDK's TrainApp offers, the same way.

Every run writes TensorBoard event files (``src.config.compose``: mmengine's
``TensorboardVisBackend``, under ``<run>/<session>/vis_data/``). When a run starts (a resume
too), :class:`TensorBoard` (re)starts ``tensorboard`` on that run's folder, on a free port of
127.0.0.1 and under the path ``/tensorboard``; the app's own server forwards ``/tensorboard/*``
to it (:func:`mount_tensorboard`), so it is reached where the page is (through the platform's
proxy, or this machine's port) and behind the same guard as every route (``src.access``). It is
stopped with the app.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from starlette.background import BackgroundTask

logger = logging.getLogger(__name__)
PREFIX = "/tensorboard"


class TensorBoard:
    """One ``tensorboard`` process at a time, for the run that trains now.

    Args:
        log_file: where its own output goes (it is chatty; the console stays clean).
        popen: starts the process (``subprocess.Popen``; a stand-in in tests).
    """

    def __init__(
        self, log_file: str | Path | None = None, popen: Callable[..., Any] = subprocess.Popen
    ) -> None:
        self.log_file = Path(log_file) if log_file else None
        self._popen = popen
        self.port: int | None = None
        self.logdir: Path | None = None
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def serve(self, logdir: str | Path) -> None:
        """Show ``logdir`` (a run's folder): the process is restarted on it. A TensorBoard that
        cannot start is a warning: the run goes on, its charts are in the page anyway."""
        with self._lock:
            self._stop()
            self.port, self.logdir = _free_port(), Path(logdir)
            command = [
                sys.executable, "-m", "tensorboard.main", "--logdir", str(self.logdir),
                "--host", "127.0.0.1", "--port", str(self.port), "--path_prefix", PREFIX,
                "--reload_interval", "10",
            ]  # fmt: skip
            out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
            try:
                self._process = self._popen(command, stdout=out, stderr=subprocess.STDOUT)
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
        if not board.running or board.port is None:
            return JSONResponse(
                {"error": "TensorBoard starts with a run: start (or resume) one, then reload"},
                status_code=503,
            )
        url = httpx.URL(f"http://127.0.0.1:{board.port}{PREFIX}/{path}",
                        query=request.url.query.encode("utf-8"))  # fmt: skip
        headers = [(k, v) for k, v in request.headers.raw if k not in (b"host", b"cookie")]
        try:
            upstream = await client.send(
                client.build_request(request.method, url, headers=headers,
                                     content=await request.body()),
                stream=True,
            )  # fmt: skip
        except httpx.TransportError:
            return JSONResponse(
                {"error": "TensorBoard is starting: reload in a few seconds"}, status_code=503
            )
        return StreamingResponse(
            upstream.aiter_raw(),
            status_code=upstream.status_code,
            headers=dict(upstream.headers),
            background=BackgroundTask(upstream.aclose),
        )
