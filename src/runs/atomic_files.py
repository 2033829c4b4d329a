"""Crash-safe and disk-full-safe file writes: a temporary file beside the target, renamed over it.

The rename is atomic, so a process killed at any moment (SIGKILL, the agent removing the
container) leaves either the old file or the complete new one; a write that fails (a full disk,
a file-size limit) removes its temporary file, so no ``.name.tmpNNN`` is left behind. No fsync:
it would cost a checkpoint's worth of disk flush per save and only protects against a host crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; renamed to ``path`` when the block succeeds,
    removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}_{threading.get_ident()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(data: bytes, path: str | Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(text.encode("utf-8"), path)


def write_json_atomic(data: Any, path: str | Path) -> None:
    write_bytes_atomic(json.dumps(data).encode("utf-8"), path)
