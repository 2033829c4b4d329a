"""The composed config as text and back: what the Editor shows and what it reads.

:func:`config_to_text` writes a ``Config`` as Python text with ``sly_metadata`` last (the
platform's artifacts parser reads its tail); :func:`parse_config_text` executes edited text
(mmengine configs are Python) with a deadline and reports errors with their line number.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmengine.config import Config

from src.config.metadata import KEY as METADATA_KEY
from src.config.params import ConfigError

logger = logging.getLogger(__name__)

# Supervisely's artifacts parser (supervisely.nn.artifacts.MMDetection3) reads the project name
# between the first quotes of config.py's last line, and the task type from the third line from
# the end, with "_" read as " ". So these keys close ``sly_metadata``, in this order.
_METADATA_TAIL = ("task_type", "project_id", "project_name")


def config_to_text(cfg: Config) -> str:
    """The config as Python text (what the Editor shows and what trains).

    ``sly_metadata`` is written last, one key per line, ending with task type, project id and
    project name, where the platform's artifacts parser reads them (see ``_METADATA_TAIL``).
    """
    data = cfg.to_dict()
    metadata = data.pop(METADATA_KEY, None)
    text = Config(data).pretty_text.rstrip("\n") + "\n"
    if metadata is not None:
        text += _metadata_text(dict(metadata))
    return text


def _metadata_text(metadata: dict[str, Any]) -> str:
    if "task_type" in metadata:  # the parser's form: object_detection, instance_segmentation
        metadata["task_type"] = str(metadata["task_type"]).replace("-", "_")
    metadata.setdefault("project_name", "")
    order = [k for k in metadata if k not in _METADATA_TAIL]
    order += [k for k in _METADATA_TAIL if k in metadata]
    lines = [f"    {key}={metadata[key]!r}," for key in order]
    lines[-1] = lines[-1][:-1] + ")"
    return f"{METADATA_KEY} = dict(\n" + "\n".join(lines) + "\n"


def parse_config_text(text: str) -> Config:
    """Config text → ``Config``; any error says on which line of *text* it is."""
    try:
        ast.parse(text)
    except SyntaxError as exc:
        raise ConfigError(f"syntax error: {exc.msg}", line=exc.lineno) from None
    fd, path = tempfile.mkstemp(suffix=".py", prefix="sly_cfg_")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            with _deadline(CONFIG_TIMEOUT_S):
                parsed = Config.fromfile(path)
        except _ConfigTimeout:
            raise ConfigError(
                f"the config did not finish executing in {CONFIG_TIMEOUT_S:.0f} s (an endless "
                "loop?): it was stopped"
            ) from None
        except Exception as exc:  # exec of user code: anything can go wrong
            raise ConfigError(
                f"{type(exc).__name__}: {exc}", line=_config_error_line(exc)
            ) from None
    finally:
        os.unlink(path)
    # not tied to the temporary file, which is gone (mmengine re-reads a config's filename)
    return Config(parsed.to_dict(), cfg_text=text)


CONFIG_TIMEOUT_S = 60.0  # executing a config takes milliseconds; a loop must not wedge the app


class _ConfigTimeout(Exception):
    """Raised inside the thread executing a config that ran past its deadline."""


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`_ConfigTimeout` in this thread if the block runs longer than ``seconds``.

    A config is Python executed in the app's process: ``while True: pass`` in the Editor would
    otherwise keep the thread preparing the run, and with it the app ("preparing"), busy for
    good. CPython can raise an exception in another thread at its next bytecode
    (``PyThreadState_SetAsyncExc``); a timer thread does that once the time is up. (A call that
    blocks in C, such as a long ``time.sleep``, is interrupted only when it returns.)"""
    import ctypes

    target, lock = threading.get_ident(), threading.Lock()
    state = {"finished": False}
    done = threading.Event()

    def expire() -> None:
        if done.wait(seconds):
            return
        with lock:
            if not state["finished"]:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(target), ctypes.py_object(_ConfigTimeout)
                )

    threading.Thread(target=expire, name="config-deadline", daemon=True).start()
    try:
        yield
    finally:
        with lock:
            state["finished"] = True
        done.set()


def _config_error_line(exc: BaseException) -> int | None:
    """Line of the failing statement in the config text (mmengine execs a temp copy of it)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if Path(filename).name.startswith(("tmp", "sly_cfg_")) and "site-packages" not in filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def load_config_file(path: str | Path) -> Config:
    """A config file from a user (custom weights, ``--config``), with line-numbered errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        return parse_config_text(path.read_text(encoding="utf-8"))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
