"""The processes the app starts end with it, however it ends.

The app starts processes of its own: TensorBoard (``src.web.tensorboard``), the ranks of a
multi-process run (``src.training.distributed``) and, from the CLI, a zoo probe per model
(``src.training.zoo_probe``). An orderly end (Ctrl-C or SIGTERM under uvicorn, the platform's stop)
ends them from the app's shutdown. A crash or SIGKILL runs no code of the app, so each child
asks the kernel for a signal when the app goes (Linux's ``PR_SET_PDEATHSIG``), then checks that
the app is still there (it may have gone before the child asked).

The caveat: Linux sends that signal when the *thread* that started the child ends, not the
process. So :func:`popen` starts every child from one thread that lives as long as the process
(a request's worker thread, which the server ends when idle, would take TensorBoard with it),
and the ranks are started by their session's thread, which waits for them. Elsewhere than Linux
there is no such signal: the orderly ends still end the children, a SIGKILL leaves them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import json
import os
import queue
import runpy
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# arguments a child gets from its environment instead of its command line: every user of the
# machine can read a process's command line (ps), only its owner its environment
PRIVATE_ARGS = "TRAIN_MMDET3_PRIVATE_ARGS"
# what a tied child runs first (python -c): this module, found from the repository's root
_LAUNCH = (
    "import sys; sys.path.append(sys.argv[1]); "
    "from src.training.children import _launched; _launched()"
)


def end_with_parent(parent_pid: int, signum: int = signal.SIGTERM) -> None:
    """In a child process: get ``signum`` when the thread that started it ends (the process of
    ``parent_pid``, however it ends); exit at once if that process is gone already."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: no such signal
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signum))
    if os.getppid() != parent_pid:
        os._exit(1)


def tied_command(module: str, args: list[str], signum: int = signal.SIGTERM) -> list[str]:
    """The command line that runs ``python -m module *args`` as a child of this process that gets
    ``signum`` when this process ends (start it with :func:`popen`)."""
    return [sys.executable, "-c", _LAUNCH, str(ROOT), str(os.getpid()), str(int(signum)), module,
            *args]  # fmt: skip


def private_env(args: list[str], env: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for :func:`popen` that appends ``args`` to a tied command's arguments out of
    sight of other users (not on its command line)."""
    return {**(os.environ if env is None else env), PRIVATE_ARGS: json.dumps(args)}


def _launched() -> None:
    """The tied child (:func:`tied_command`): ask for the signal, then run the module."""
    parent, signum, module, *args = sys.argv[2:]
    end_with_parent(int(parent), int(signum))
    private = json.loads(os.environ.pop(PRIVATE_ARGS, "[]"))
    sys.argv = [module, *args, *private]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def popen(command: list[str], **kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen(command, **kwargs)`` from the thread that lives as long as this process
    (so that a tied child's signal comes when the process ends, not when the caller's thread
    does)."""
    return _starter().call(lambda: subprocess.Popen(command, **kwargs))


def run(command: list[str], timeout: float | None = None, **kwargs: Any):
    """``subprocess.run(command, timeout=timeout, **kwargs)`` started by :func:`popen`: the child
    is killed when the wait ends early (the timeout, Ctrl-C), and ``TimeoutExpired`` raised."""
    if kwargs.pop("capture_output", False):
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with popen(command, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except BaseException:
            process.kill()
            process.wait()
            raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


class _Starter:
    """One daemon thread that starts processes for the others, until the process ends."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="child-starter", daemon=True).start()

    def _serve(self) -> None:
        while True:
            job, done = self._jobs.get()
            try:
                done.set_result(job())
            except BaseException as exc:  # the caller's to handle (e.g. no such program)
                done.set_exception(exc)

    def call(self, job: Callable[[], Any]) -> Any:
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((job, done))
        return done.result()


_lock = threading.Lock()
_the_starter: _Starter | None = None


def _starter() -> _Starter:
    global _the_starter
    with _lock:
        if _the_starter is None:
            _the_starter = _Starter()
        return _the_starter


def _forget_the_starter() -> None:
    """A forked child (a data-loader worker) has none of its parent's threads: its own starter
    is made when it needs one."""
    global _lock, _the_starter
    _lock, _the_starter = threading.Lock(), None


os.register_at_fork(after_in_child=_forget_the_starter)
