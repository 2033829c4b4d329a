"""Checkpoint loading that is safe under torch >= 2.6, and inference-only exports.

torch >= 2.6 loads with ``weights_only=True``; mmengine's checkpoints also hold its message hub
(``HistoryBuffer``) and numpy scalars, which that refuses. Instead of trusting every pickle
(``weights_only=False``) we allow exactly the types mmengine writes, for this one load, through
``torch.serialization.safe_globals``. Anything else is refused with its name.

Checkpoints uploaded for serving hold only ``state_dict`` and plain ``meta``, so mmdet's own
``init_detector`` (which calls plain ``torch.load``) loads them on any torch.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, truncated, corrupt or holding foreign types."""


_HISTORY_BUFFER_METHODS = frozenset({"min", "max", "current", "mean"})


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stands in for ``builtins.getattr`` while unpickling: only HistoryBuffer's statistics.

    mmengine's HistoryBuffer pickles its statistics methods by reference (pickle writes
    ``getattr(HistoryBuffer, "min")``). Allowing the real ``getattr`` would let a checkpoint reach
    any attribute of any allowed object; this allows exactly those four methods.
    """
    from mmengine.logging.history_buffer import HistoryBuffer

    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f"checkpoint asks for attribute {name!r} of {obj!r}, which mmengine checkpoints never do"
    )


def _allowed_globals() -> list[Any]:
    from mmengine.logging.history_buffer import HistoryBuffer

    allowed: list[Any] = [
        HistoryBuffer,
        np.dtype,
        np.ndarray,
        (_history_buffer_getattr, "builtins.getattr"),
    ]
    core = getattr(np, "_core", None) or np.core
    allowed.append(core.multiarray.scalar)
    allowed.append(core.multiarray._reconstruct)
    for name in dir(np.dtypes):  # np.dtypes.Float64DType & co: how numpy 2 pickles dtypes
        obj = getattr(np.dtypes, name)
        if isinstance(obj, type) and name.endswith("DType"):
            allowed.append(obj)
    return allowed


_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def load_checkpoint_file(path: str | Path, map_location: str = "cpu") -> dict:
    """Load an mmengine checkpoint with the allowlist; errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        match = _UNSUPPORTED.search(str(exc))
        if match:
            raise CheckpointError(
                f"checkpoint {path} holds an object of type {match.group(1)}, which is not "
                "among the types mmengine checkpoints hold: refusing to load it (it could run "
                "arbitrary code). Load it only if you trust its source."
            ) from None
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {path} is not an mmengine checkpoint (no dict inside)")
    return checkpoint


def _plain(value: Any) -> Any:
    """Meta values reduced to what ``weights_only=True`` loads: str, numbers, lists, dicts."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def export_for_inference(src: str | Path, dst: str | Path) -> Path:
    """Write ``state_dict`` + plain ``meta`` (epoch, iter, dataset_meta) of a checkpoint.

    mmengine's EMA hook keeps the averaged weights in ``ema_state_dict``; those are the ones the
    model validated with, so they become the exported ``state_dict``.
    """
    checkpoint = load_checkpoint_file(src)
    state = checkpoint.get("state_dict")
    if state is None:
        raise CheckpointError(f"checkpoint {src} has no state_dict")
    ema = checkpoint.get("ema_state_dict")
    if ema:
        state = {k.removeprefix("module."): v for k, v in ema.items() if k != "steps"}
    meta = checkpoint.get("meta") or {}
    plain_meta = {
        key: _plain(meta[key])
        for key in ("epoch", "iter", "dataset_meta", "experiment_name", "seed", "mmengine_version")
        if key in meta
    }
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    torch.save({"state_dict": state, "meta": plain_meta}, tmp)
    os.replace(tmp, dst)
    return dst


def last_checkpoint(work_dir: str | Path) -> Path | None:
    """The checkpoint mmengine's ``last_checkpoint`` file points at, if it exists."""
    marker = Path(work_dir) / "last_checkpoint"
    if not marker.is_file():
        return None
    path = Path(marker.read_text().strip())
    if not path.is_absolute():
        path = Path(work_dir) / path
    return path if path.is_file() else None


def best_checkpoint(work_dir: str | Path) -> Path | None:
    """The newest ``best_*.pth`` mmengine's CheckpointHook kept (save_best)."""
    candidates = sorted(Path(work_dir).glob("best_*.pth"), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None
