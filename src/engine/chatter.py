"""Library chatter goes to the run's log file, not to the user's console.

pycocotools prints its progress and a 12-line table after every validation; torch and mmdet emit
Python warnings (``torch.meshgrid``'s indexing, ``torch.cuda.amp`` deprecations). They say nothing
a user can act on, and drowned the app's own lines (the progress bar, one line per validation, the
summary). While a run trains, :func:`library_chatter_to_log` sends what the *training thread*
prints and warns to the run's logger (its log file keeps everything, marked ``[stdout]`` and
``[warning]`` so that log views can leave them out); other threads (the CLI's, the app server's)
print as before. mmengine's own warnings ("... is duplicate", deprecations) reach the log file
through its logger, whose console handler the session sets (``console_log_level``).

``sys.stdout`` and ``warnings.showwarning`` are process-wide, so the routing is by thread: the
replacements are installed once and forward every thread that is not routed, untouched.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

CHATTER_MARKS = ("[stdout]", "[warning]")  # how routed lines start in the log file

_routes: dict[int, logging.Logger] = {}
_lock = threading.Lock()


class _RoutedStdout(io.TextIOBase):
    """``sys.stdout`` that sends the writes of routed threads to their logger, line by line."""

    def __init__(self, original: Any) -> None:
        self.original = original
        self._partial: dict[int, str] = {}

    def write(self, text: str) -> int:
        logger = _routes.get(threading.get_ident())
        if logger is None:
            return self.original.write(text)
        ident = threading.get_ident()
        lines = (self._partial.pop(ident, "") + text).split("\n")
        self._partial[ident] = lines.pop()
        for line in lines:
            if line.strip():
                logger.info("[stdout] %s", line.rstrip())
        return len(text)

    def flush(self) -> None:
        self.original.flush()

    def isatty(self) -> bool:
        return self.original.isatty()

    def fileno(self) -> int:
        return self.original.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", "utf-8")

    def __getattr__(self, name: str) -> Any:  # buffer, errors, ...: the original stream's
        return getattr(self.original, name)


_original_showwarning = warnings.showwarning


def _showwarning(message, category, filename, lineno, file=None, line=None) -> None:
    logger = _routes.get(threading.get_ident())
    if logger is None:
        _original_showwarning(message, category, filename, lineno, file, line)
        return
    logger.info("[warning] %s: %s (%s:%s)", category.__name__, message, filename, lineno)


def _install() -> None:
    """Once per process; the warning filters stay as they are (which warnings show is theirs)."""
    if not isinstance(sys.stdout, _RoutedStdout):
        sys.stdout = _RoutedStdout(sys.stdout)
    if warnings.showwarning is not _showwarning:
        global _original_showwarning
        _original_showwarning = warnings.showwarning
        warnings.showwarning = _showwarning


@contextlib.contextmanager
def library_chatter_to_log(logger: logging.Logger, enabled: bool = True) -> Iterator[None]:
    """Within the block, what this thread prints or warns goes to ``logger`` (INFO)."""
    if not enabled:
        yield
        return
    ident = threading.get_ident()
    with _lock:
        _install()
        _routes[ident] = logger
    try:
        yield
    finally:
        with _lock:
            _routes.pop(ident, None)


def is_chatter(line: str) -> bool:
    """A log line that :func:`library_chatter_to_log` routed (log views may leave it out)."""
    return any(mark in line for mark in CHATTER_MARKS)
