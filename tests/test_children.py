"""Every process the app starts ends with it, however it ends (issue 35): Ctrl-C (SIGINT) and
SIGTERM under uvicorn, and SIGKILL of the server process (a crash, the OOM killer), after which
no code of the app runs. The real app (``uvicorn src.web.main:app``) trains in two processes (the
ranks) with its TensorBoard up; the server is signalled; every process it had started (the
ranks, TensorBoard and what they started, multiprocessing's resource tracker) must be gone by a
deadline, and no process may still show the run's folder. The zoo probe (``python -m src.cli
probe``) is the CLI's child: it ends with the CLI the same ways."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers import AppProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "children-test-token"
SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]


def _descendants(pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(pid).children(recursive=True) if _alive(p)]


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _command(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())[:300]
    except psutil.Error:
        return f"pid {process.pid} (gone)"


def _survivors(processes: list[psutil.Process], timeout: float) -> list[str]:
    """Those of ``processes`` still running ``timeout`` seconds from now (their command lines)."""
    deadline = time.monotonic() + timeout
    alive = [p for p in processes if _alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if _alive(p)]
    return [f"{p.pid} (parent {_parent(p)}): {_command(p)}" for p in alive]


def _parent(process: psutil.Process) -> int | None:
    try:
        return process.ppid()
    except psutil.Error:
        return None


def _showing(folder: Path) -> list[psutil.Process]:
    """The processes of this machine whose command line names ``folder``."""
    found = []
    for process in psutil.process_iter():
        try:
            if str(folder) in " ".join(process.cmdline()) and _alive(process):
                found.append(process)
        except psutil.Error:
            continue
    return found


def _end_all(processes: list[psutil.Process]) -> None:
    """Whatever a failed test leaves running is killed (the next tests need the cores)."""
    for process in processes:
        if _alive(process):
            process.kill()


def _wait_until(what: str, check, timeout: float, app: AppProcess):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert app.process.poll() is None, "the app ended:\n" + "\n".join(app.lines[-30:])
        assert time.monotonic() < deadline, f"{what} not within {timeout:.0f} s:\n" + "\n".join(
            app.lines[-30:]
        )
        time.sleep(0.3)


def _answers(url: str, **kwargs) -> int | None:
    try:
        return httpx.get(url, timeout=5, **kwargs).status_code
    except httpx.TransportError:
        return None


# A process that starts a tied child from a short-lived thread (as a request's worker thread
# starts TensorBoard), waits for it to serve, lets the thread end, and checks it still runs.
_PARENT = """
import os, subprocess, sys, threading
from src.training.children import popen, tied_command

started = []
def start():
    child = popen(tied_command("http.server", ["--bind", "127.0.0.1", "0"]),
                  stdout=subprocess.PIPE, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    child.stdout.readline()  # Serving HTTP on ...: it runs (and has asked for its signal)
    started.append(child)
thread = threading.Thread(target=start)
thread.start()
thread.join()
try:
    started[0].wait(2)  # the thread that asked for it is over: it must not end with it
    print("ended with the thread", flush=True)
except subprocess.TimeoutExpired:
    print(started[0].pid, flush=True)
started[0].wait()
"""


def test_a_tied_child_outlives_the_thread_that_asked_and_ends_with_the_process(tmp_path):
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    child = None
    try:
        said = parent.stdout.readline().strip()
        assert said.isdigit(), said or f"the parent ended ({parent.wait(10)})"
        child = psutil.Process(int(said))
        assert _alive(child) and child.ppid() == parent.pid
        parent.kill()  # SIGKILL: no code of the parent runs
        parent.wait(30)
        assert not _survivors([child], timeout=10)
    finally:
        if parent.poll() is None:
            parent.kill()
        _end_all([child] if child else [])


@pytest.mark.slow
@pytest.mark.parametrize("how", SIGNALS, ids=[s.name for s in SIGNALS])
def test_the_apps_children_end_with_it_however_it_ends(how, demo_project, tmp_path):
    app_data = tmp_path / "app_data"
    env = dict(PROJECT_DIR=str(demo_project), SLY_APP_DATA_DIR=str(app_data),
               TEAM_FILES_DIR=str(tmp_path / "team"), TRAIN_MMDET3_API_TOKEN=TOKEN)  # fmt: skip
    port = free_port()
    base, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {TOKEN}"}
    app = AppProcess(env, "127.0.0.1", port)
    children: list[psutil.Process] = []
    try:
        _wait_until("the app listening", lambda: _answers(f"{base}/api/status", headers=auth),
                    180, app)  # fmt: skip
        body = {
            "project": str(demo_project), "model": "rtmdet_tiny_8xb32-300e_coco",
            "split": {"train": ["train"], "val": ["val"]}, "run_id": "kids",
            "hyperparameters": {"epochs": 50, "train_batch_size": 1, "num_workers": 0,
                                "input_size": 64, "weights": "scratch", "nproc": 2,
                                "evaluate": False},
        }  # fmt: skip
        started = httpx.post(f"{base}/api/train", json=body, headers=auth, timeout=60)
        assert started.status_code == 200, started.text
        # TensorBoard answers through the app, and both ranks train
        _wait_until(
            "TensorBoard", lambda: _answers(f"{base}/tensorboard/data/runs", headers=auth) == 200,
            300, app,
        )  # fmt: skip
        _wait_until(
            "an iteration of both ranks",
            lambda: httpx.get(f"{base}/api/status", headers=auth, timeout=5).json()["iteration"],
            300, app,
        )  # fmt: skip
        children = _descendants(app.process.pid)
        commands = [_command(p) for p in children]
        assert any("tensorboard" in c for c in commands), commands
        assert sum("spawn_main" in c for c in commands) >= 2, commands  # the ranks
        app.process.send_signal(how)
        app.process.wait(240)  # (TimeoutExpired: the app did not end)
        left = _survivors(children, timeout=30)
        assert not left, f"{how.name}: the app's children outlived it:\n" + "\n".join(left)
        assert not _showing(app_data / "kids")
    finally:
        app.close()
        _end_all(children + _showing(app_data))


_PROBE = "src.training.zoo_probe"


@pytest.mark.slow
@pytest.mark.parametrize("how", SIGNALS, ids=[s.name for s in SIGNALS])
def test_the_zoo_probe_ends_with_the_cli(how, demo_project, tmp_path):
    cli = subprocess.Popen(
        [sys.executable, "-m", "src.cli", "probe", "--project", str(demo_project), "--models",
         "rtmdet_tiny_8xb32-300e_coco"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    probes: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while not probes:
            assert cli.poll() is None, f"the CLI ended ({cli.returncode}) before its probe started"
            assert time.monotonic() < deadline, "no probe process within 120 s"
            time.sleep(0.1)
            probes = [p for p in _descendants(cli.pid) if _PROBE in _command(p)]
        # the probe has its imports, a dry run and an iteration ahead (tens of seconds)
        cli.send_signal(how)
        cli.wait(60)
        left = _survivors(probes, timeout=10)
        assert not left, f"{how.name}: the probe outlived the CLI:\n" + "\n".join(left)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(30)
        _end_all(probes)
