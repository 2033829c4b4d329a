"""Checkpoint I/O: loading through an allowlist on every torch the app runs on, downloads,
inference exports, and mmengine's loaders and checkpoint writes replaced by ours.

torch >= 2.6 loads with ``weights_only=True``; mmengine's checkpoints also hold its message hub
(``HistoryBuffer``) and numpy scalars, which that refuses. Instead of trusting every pickle
(``weights_only=False``) we allow exactly the types mmengine writes, for this one load, through
``torch.serialization.safe_globals``. A torch without it (the production image's 2.1.2) gets the
same allowlist from a restricted unpickler (``torch.load(pickle_module=...)``): torch's own
allowed globals plus ours, nothing else. Anything else is refused with its name.

Checkpoints named by URL (pretrained zoo weights, ``--weights https://...``, ``load_from`` in an
edited config, a backbone's ``init_cfg``) are downloaded to torch's hub cache first and then loaded
the same way: :func:`install_into_mmengine` replaces mmengine's own loaders for ``http(s)://`` and
local paths by ours (explicitly, from :func:`src.engine.patches.apply`; importing this module
changes nothing).

Checkpoints uploaded for serving hold only ``state_dict`` and plain ``meta``, so mmdet's own
``init_detector`` (which calls plain ``torch.load``) loads them on any torch.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src.core.layout import CLASS_THRESHOLDS
from src.runs.atomic_files import atomic_path, write_bytes_atomic

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
    # numpy 2 moved its core to numpy._core (numpy 1.26, the image's, has only a stub of it)
    if int(np.__version__.split(".")[0]) >= 2:
        from numpy._core import multiarray
    else:
        from numpy.core import multiarray
    allowed.append(multiarray.scalar)
    allowed.append(multiarray._reconstruct)
    for name in dir(np.dtypes):  # np.dtypes.Float64DType & co: how numpy 2 pickles dtypes
        obj = getattr(np.dtypes, name)
        if isinstance(obj, type) and name.endswith("DType"):
            allowed.append(obj)
    return allowed


# torch's words for a global outside the allowlist ("Unsupported global: GLOBAL x.y"), and for
# one from a module it blocks outright ("unsupported GLOBAL posix.system whose module ...").
_UNSUPPORTED = re.compile(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)")


def _global_names(obj: Any) -> set[str]:
    """The names a pickle may use for ``obj`` (numpy 1 and 2 spell their core module apart)."""
    names = {f"{obj.__module__}.{obj.__qualname__}"}
    for old, new in (("numpy.core.", "numpy._core."), ("numpy._core.", "numpy.core.")):
        names |= {n.replace(old, new, 1) for n in names if n.startswith(old)}
    return names


class _RestrictedUnpickler(pickle.Unpickler):
    """For a torch without ``safe_globals``: only torch's own allowed globals (tensors, dtypes,
    OrderedDict, ...) and :func:`_allowed_globals`; torch's loader adds storages itself. The
    refusal uses torch's wording, so the error names the type the same way on every torch."""

    def find_class(self, module: str, name: str) -> Any:
        import _compat_pickle

        # torch saves with pickle protocol 2, which spells builtins the Python 2 way
        # (``__builtin__.getattr``); plain pickle maps those names back, so do we
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = f"{module}.{name}"
        allowed = _restricted_allowlist()
        if key not in allowed:
            raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {key}")
        return allowed[key]


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Stands in for ``_codecs.encode``: how protocol-2 pickles of numpy 1.x arrays and scalars
    carry their bytes (``encode(text, "latin1")``); nothing else."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"checkpoint asks to encode with {encoding!r}")
    return text.encode("latin1")


@functools.cache
def _restricted_allowlist() -> dict[str, Any]:
    """Built once: ``find_class`` asks for it at every global a checkpoint names."""
    from torch import _weights_only_unpickler

    allowed: dict[str, Any] = dict(_weights_only_unpickler._get_allowed_globals())
    allowed["_codecs.encode"] = _latin1_encode  # (torch >= 2.4 allows it too)
    for entry in _allowed_globals():
        if isinstance(entry, tuple):  # (stand-in, "module.name")
            allowed[entry[1]] = entry[0]
        else:
            allowed.update(dict.fromkeys(_global_names(entry), entry))
    return allowed


class _RestrictedPickleModule:
    """What ``torch.load(pickle_module=...)`` needs: an ``Unpickler`` class (and ``load`` for
    the legacy format)."""

    Unpickler = _RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return _RestrictedUnpickler(file, **kwargs).load()


def _torch_load_allowlisted(path: Path, map_location: str, **kwargs: Any) -> Any:
    if hasattr(torch.serialization, "safe_globals") and not _FORCE_RESTRICTED_UNPICKLER:
        with torch.serialization.safe_globals(_allowed_globals()):
            return torch.load(str(path), map_location=map_location, weights_only=True, **kwargs)
    # torch < 2.4: weights_only cannot be extended; the restricted unpickler does the same job
    return torch.load(  # (torch 2.1 memory-maps only a path given as str)
        str(path), map_location=map_location, weights_only=False,
        pickle_module=_RestrictedPickleModule, **kwargs,
    )  # fmt: skip


_FORCE_RESTRICTED_UNPICKLER = False  # tests run the torch < 2.4 path on any torch


def load_checkpoint_file(
    path: str | Path, map_location: str = "cpu", *, mmap: bool = False
) -> dict:
    """Load an mmengine checkpoint with the allowlist; errors name the file and the problem.
    ``mmap``: the tensors memory-mapped, not read (for a look at ``meta``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = _torch_load_allowlisted(path, map_location, **({"mmap": True} if mmap else {}))
    except Exception as exc:
        match = _UNSUPPORTED.search(str(exc))
        if match:
            raise CheckpointError(
                f"checkpoint {path} holds an object of type {match.group(1)}, which is not "
                "among the types mmengine checkpoints hold: refusing to load it (it could run "
                "arbitrary code). Load it only if you trust its source."
            ) from None
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({_load_error(exc)}): it cannot be "
            "loaded; use another checkpoint of the run (or copy this one again from where it was "
            "saved)"
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {path} is not an mmengine checkpoint (no dict inside)")
    return checkpoint


def _load_error(exc: Exception) -> str:
    """What torch's loader found wrong, in one line, without its advice to load with
    ``weights_only=False`` (which would run whatever code the file holds)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:  # torch's preamble, the problem, then its advice
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
    text = " ".join(text.split())
    if "weights_only" in text:
        text = "not a file torch can read"
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


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


# what an inference export keeps of a checkpoint's meta: plain values, which serving code reads
INFERENCE_META = ("epoch", "iter", "dataset_meta", "experiment_name", "seed", "mmengine_version",
                  CLASS_THRESHOLDS)  # fmt: skip


def export_for_inference(src: str | Path, dst: str | Path) -> Path:
    """Write ``state_dict`` + plain ``meta`` (epoch, iter, dataset_meta) of a checkpoint.

    With mmengine's EMAHook, ``state_dict`` already holds the averaged weights (the hook swaps
    them in before saving, for deployment) and ``ema_state_dict`` the raw ones, which serving
    does not need.
    """
    checkpoint = load_checkpoint_file(src)
    state = checkpoint.get("state_dict")
    if state is None:
        raise CheckpointError(f"checkpoint {src} has no state_dict")
    meta = checkpoint.get("meta") or {}
    plain_meta = {key: _plain(meta[key]) for key in INFERENCE_META if key in meta}
    with atomic_path(dst) as tmp:  # a full disk leaves no partial export behind
        torch.save({"state_dict": state, "meta": plain_meta}, tmp)
    return Path(dst)


def set_checkpoint_meta(path: str | Path, key: str, value: Any) -> None:
    """Write ``meta[key] = value`` (plain values only) into a checkpoint: the evaluation keeps
    the thresholds it chose with the weights they belong to. Loaded through the allowlist and
    saved whole (a resumable checkpoint stays resumable), atomically, and with its modification
    time kept: the run's checkpoints are ordered by it (the newest best, resume's candidates) and
    an export is stale only when the weights changed after it."""
    path = Path(path)
    checkpoint = load_checkpoint_file(path)
    meta = checkpoint.get("meta")
    checkpoint["meta"] = {**(meta if isinstance(meta, dict) else {}), key: _plain(value)}
    stat = path.stat()
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def checkpoint_meta(path: str | Path) -> dict:
    """A checkpoint's ``meta`` (empty when it has none), through the allowlist, its tensors
    memory-mapped rather than read."""
    meta = load_checkpoint_file(path, mmap=True).get("meta")
    return meta if isinstance(meta, dict) else {}


# --------------------------------------------------------------------------- crash-safe writes


ATOMIC_BACKEND = "atomic_local"  # the composed CheckpointHook's backend_args (src.config.compose)
ATOMIC_BACKEND_ARGS = {"backend": ATOMIC_BACKEND}


def _register_atomic_backend() -> None:
    from mmengine.fileio import LocalBackend, register_backend

    class AtomicLocalBackend(LocalBackend):
        """mmengine's local file backend, writing checkpoints crash-safely."""

        def put(self, obj: bytes, filepath: str | Path) -> None:
            write_bytes_atomic(obj, filepath)

        def put_text(self, obj: str, filepath: str | Path, encoding: str = "utf-8") -> None:
            write_bytes_atomic(obj.encode(encoding), filepath)

    register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


# --------------------------------------------------------------------------- checkpoints by URL


def download_checkpoint(url: str, model_dir: str | Path | None = None) -> Path:
    """The file of a checkpoint URL, downloaded once into torch's hub cache (where mmengine
    keeps its downloads too, so earlier ones are reused); a failed download leaves nothing."""
    import shutil
    import urllib.request
    from urllib.parse import urlparse

    from torch.hub import get_dir

    parsed = urlparse(url)
    name = Path(parsed.path).name
    if parsed.scheme not in ("http", "https") or not name:
        raise CheckpointError(f"checkpoint URL {url} is not an http(s) URL of a file")
    cached = Path(model_dir or Path(get_dir()) / "checkpoints") / name
    if not cached.is_file():
        logger.info("downloading checkpoint %s to %s", url, cached)
        try:
            # a timeout per read (torch.hub's downloader has none): a stalled server fails
            with (
                urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
                atomic_path(cached) as tmp,
                open(tmp, "wb") as out,
            ):
                shutil.copyfileobj(response, out, 1 << 20)
        except Exception as exc:
            raise CheckpointError(f"cannot download checkpoint {url}: {exc}") from None
    return cached


DOWNLOAD_TIMEOUT_S = 60.0


def _register_safe_loaders() -> None:
    """mmengine's loaders for URLs and local files call ``torch.load`` without an allowlist
    (``weights_only=False`` for URLs): ours replace them, for every path through mmengine
    (``load_from``, a backbone's ``init_cfg``, ``open-mmlab://`` names, which resolve to URLs)."""
    from mmengine.runner import checkpoint as mm_checkpoint

    def load_from_url(filename: str, map_location: Any = None, model_dir: Any = None,
                      **_: Any) -> dict:  # fmt: skip
        location = map_location if isinstance(map_location, str) else "cpu"
        return load_checkpoint_file(download_checkpoint(filename, model_dir), location)

    def load_from_local(filename: str, map_location: Any = None) -> dict:
        location = map_location if isinstance(map_location, str) else "cpu"
        return load_checkpoint_file(Path(filename).expanduser(), location)

    mm_checkpoint.load_from_http = load_from_url  # load_from_openmmlab & co call it by name
    loader = mm_checkpoint.CheckpointLoader
    loader.register_scheme(prefixes=("http://", "https://"), loader=load_from_url, force=True)
    loader.register_scheme(prefixes="", loader=load_from_local, force=True)


def install_into_mmengine() -> None:
    """Make mmengine load checkpoints through the allowlist (URLs through our download) and
    write them crash-safely (the ``atomic_local`` backend). Called by
    :func:`src.engine.patches.apply`, before any Runner is built in a process."""
    _register_atomic_backend()
    _register_safe_loaders()


def peek_checkpoint(path: str | Path) -> dict:
    """A checkpoint's ``meta`` without reading its tensors (memory-mapped, allowlisted)."""
    path = Path(path)
    try:
        checkpoint = _torch_load_allowlisted(path, "cpu", mmap=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({exc})") from None
    if not isinstance(checkpoint, dict) or "meta" not in checkpoint:
        raise CheckpointError(f"checkpoint {path} has no meta: not an mmengine checkpoint")
    if "optimizer" not in checkpoint:
        raise CheckpointError(f"checkpoint {path} has no optimizer state: it cannot resume")
    return checkpoint["meta"]
