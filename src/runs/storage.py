"""Where a run's artifacts end up: Team Files on the platform, a local folder headless.

Both stores take the same remote paths (``/mmdetection-3/<run_id>_<project>/...``) and have the
same methods, so the code that uploads does not care which one it has.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from src.core.layout import ARTIFACTS_ROOT

logger = logging.getLogger(__name__)

INCOMING = ".incoming"  # where a replacement waits in Team Files until it is checked


class UploadError(RuntimeError):
    """An upload that did not complete; the local files are kept and the message says where."""


@dataclass(frozen=True)
class RemoteFile:
    path: str  # remote path, "/"-separated, absolute
    size: int


class ArtifactStore(Protocol):
    def upload_dir(self, local_dir: str | Path, remote_dir: str) -> str:
        """Upload a folder's files (recursively) into ``remote_dir``; returns the remote dir."""
        ...

    def list(self, remote_dir: str) -> list[RemoteFile]:
        """Every file under ``remote_dir`` (recursively)."""
        ...

    def exists(self, remote_path: str) -> bool: ...

    def upload_file(self, local_path: str | Path, remote_path: str) -> None:
        """One file, replacing what is at ``remote_path``."""
        ...

    def download(self, remote_path: str, local_path: str | Path) -> Path:
        """One file to ``local_path`` (written completely or not at all)."""
        ...

    def remove(self, remote_path: str) -> None:
        """Delete one file (no error when it is not there)."""
        ...

    def describe(self, remote_path: str) -> str:
        """Where a user finds the path (a local path, or a Team Files link)."""
        ...


def run_dir_name(run_id: str, project_name: str) -> str:
    """``<run_id>_<project_name>`` with path separators made safe."""
    safe = "".join(c if c not in '/\\:*?"<>|' else "_" for c in project_name).strip() or "project"
    return f"{run_id}_{safe}"


def artifacts_dir(run_id: str, project_name: str) -> str:
    """The run's remote folder, where Supervisely's serving app looks for MMDetection 3 runs."""
    return f"{ARTIFACTS_ROOT}/{run_dir_name(run_id, project_name)}"


def verify_upload(store: ArtifactStore, local_dir: str | Path, remote_dir: str) -> list[str]:
    """Files of ``local_dir`` missing in ``remote_dir`` or of another size (empty: all there)."""
    remote = {f.path: f.size for f in store.list(remote_dir)}
    problems = []
    for path in sorted(Path(local_dir).rglob("*")):
        if path.is_file():
            rel = path.relative_to(local_dir).as_posix()
            target = f"{remote_dir.rstrip('/')}/{rel}"
            if remote.get(target) != path.stat().st_size:
                problems.append(rel)
    return problems


class LocalArtifactStore:
    """A local folder standing in for Team Files: ``/a/b`` is stored at ``<root>/a/b``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def _local(self, remote_path: str) -> Path:
        rel = remote_path.strip("/")
        path = (self.root / rel).resolve()
        if path != self.root and self.root not in path.parents:
            raise ValueError(f"remote path {remote_path!r} points outside {self.root}")
        return path

    def upload_dir(self, local_dir: str | Path, remote_dir: str) -> str:
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise UploadError(f"nothing to upload: {local_dir} is not a folder")
        target = self._local(remote_dir)
        # copy next to the target, then rename: a reader never sees half a run
        staging = target.with_name(f".{target.name}.uploading{os.getpid()}")
        previous = target.with_name(f".{target.name}.previous{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            shutil.copytree(local_dir, staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():  # swapped, never deleted first: the old copy stays until then
                os.replace(target, previous)
            os.replace(staging, target)
            shutil.rmtree(previous, ignore_errors=True)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if previous.exists() and not target.exists():
                os.replace(previous, target)
            raise UploadError(
                f"copying {local_dir} to {target} failed ({exc}); the files stay in {local_dir}"
            ) from None
        missing = verify_upload(self, local_dir, remote_dir)
        if missing:
            raise UploadError(
                f"upload to {target} is incomplete ({len(missing)} files differ, e.g. "
                f"{missing[0]}); the files stay in {local_dir}"
            )
        return remote_dir

    def list(self, remote_dir: str) -> list[RemoteFile]:
        base = self._local(remote_dir)
        if not base.is_dir():
            return []
        prefix = "/" + remote_dir.strip("/")
        return [
            RemoteFile(f"{prefix}/{p.relative_to(base).as_posix()}", p.stat().st_size)
            for p in sorted(base.rglob("*"))
            if p.is_file()
        ]

    def exists(self, remote_path: str) -> bool:
        return self._local(remote_path).exists()

    def upload_file(self, local_path: str | Path, remote_path: str) -> None:
        target = self._local(remote_path)
        try:
            _copy_atomic(Path(local_path), target)
        except OSError as exc:
            raise UploadError(f"copying {local_path} to {target} failed ({exc})") from None

    def download(self, remote_path: str, local_path: str | Path) -> Path:
        source = self._local(remote_path)
        if not source.is_file():
            raise FileNotFoundError(f"{remote_path} is not in {self.root}")
        return _copy_atomic(source, Path(local_path))

    def remove(self, remote_path: str) -> None:
        self._local(remote_path).unlink(missing_ok=True)

    def describe(self, remote_path: str) -> str:
        return str(self._local(remote_path))


def _copy_atomic(source: Path, target: Path) -> Path:
    """Copy beside the target, then rename: a reader never sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part{os.getpid()}")
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _is_transient(exc: BaseException) -> bool:
    """Worth retrying: the server's 5xx/408/429, timeouts, dropped connections."""
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return exc.response.status_code >= 500 or exc.response.status_code in (408, 429)
    return isinstance(
        exc,
        (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.RetryError,
        ),
    )


class _RequestsWithTimeout:
    """The ``requests`` module as the SDK's ``Api`` sees it, with a default timeout.

    ``sly.Api.post``/``get`` call ``requests.post``/``get`` with no timeout, so a stalled
    connection (an upload the server stopped reading, a download that stopped sending) would
    hang forever and no retry would ever fire. ``timeout`` is (connect, read) seconds; the read
    timeout bounds each wait for the socket, not the whole transfer, so a large upload that
    keeps moving is never cut."""

    def __init__(self, module: Any, timeout: tuple[float, float]) -> None:
        self._module = module
        self.timeout = timeout

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def post(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.timeout)
        return self._module.post(*args, **kwargs)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.timeout)
        return self._module.get(*args, **kwargs)


def install_request_timeouts(connect_s: float = 10.0, read_s: float = 120.0) -> None:
    """Give every HTTP call of the SDK's ``Api`` (Team Files, project download, task output) a
    timeout; a timed-out call is a transient error, retried with backoff by this module."""
    import importlib

    sdk_api = importlib.import_module("supervisely.api.api")

    if isinstance(sdk_api.requests, _RequestsWithTimeout):
        sdk_api.requests.timeout = (connect_s, read_s)
    else:
        sdk_api.requests = _RequestsWithTimeout(sdk_api.requests, (connect_s, read_s))


class TeamFilesArtifactStore:
    """Team Files through the SDK client (``api.file``), with retries that resend the file.

    The SDK retries a failed request itself, but for a multipart upload it would resend an
    encoder whose file stream was already read. So uploads go through a client that tries once,
    and this class retries each file with exponential backoff on transient errors (5xx,
    timeouts, dropped connections); other errors (403, 404, ...) fail at once.

    Args:
        api: the app's ``sly.Api``.
        team_id: the team whose Team Files hold the artifacts.
        attempts: tries per file before an upload fails.
        backoff_s: first wait between tries; doubles each time (capped at 60 s).
        timeout_s: (connect, read) seconds for every SDK request (see
            :func:`install_request_timeouts`).
    """

    def __init__(
        self,
        api: Any,
        team_id: int,
        attempts: int = 5,
        backoff_s: float = 2.0,
        timeout_s: tuple[float, float] = (10.0, 120.0),
    ) -> None:
        import supervisely as sly

        install_request_timeouts(*timeout_s)
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        if backoff_s < 0:
            raise ValueError(f"backoff_s must be >= 0, got {backoff_s}")
        self.api = api
        self.team_id = int(team_id)
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._once = sly.Api(
            api.server_address, api.token, retry_count=1, ignore_task_id=True,
            api_server_address=getattr(api, "_api_server_address", None),
        )  # fmt: skip
        self._once.headers.update(api.headers)

    def _retrying(self, what: str, call: Callable[[], Any]) -> Any:
        for attempt in range(1, self.attempts + 1):
            try:
                return call()
            except Exception as exc:
                if not _is_transient(exc) or attempt == self.attempts:
                    raise UploadError(f"{what} failed after {attempt} tries: {exc}") from None
                wait = min(self.backoff_s * 2 ** (attempt - 1), 60.0)
                logger.warning("%s failed (%s); try %d in %.0f s", what, exc, attempt + 1, wait)
                time.sleep(wait)

    def upload_file(self, local_path: str | Path, remote_path: str) -> None:
        self._retrying(
            f"uploading {Path(local_path).name} to Team Files {remote_path}",
            lambda: self._once.file.upload_bulk(self.team_id, [str(local_path)], [remote_path]),
        )

    def upload_dir(self, local_dir: str | Path, remote_dir: str) -> str:
        """Mirror ``local_dir`` into ``remote_dir``: every file uploaded, then verified, then the
        remote files that are not in ``local_dir`` (left from an earlier upload) removed.

        A file already there is replaced upload-then-swap: Team Files cannot rename, so the new
        version goes to ``.incoming/`` first and is checked; only then is the old one removed and
        the new one put in its place (then ``.incoming/`` is cleared). If that fails, the old
        version or the checked new one is always in Team Files. A checkpoint already there with
        the same size is the same file (mmengine writes each name once) and is kept as it is."""
        local_dir = Path(local_dir)
        if not local_dir.is_dir():
            raise UploadError(f"nothing to upload: {local_dir} is not a folder")
        remote_dir = "/" + remote_dir.strip("/")
        before = {f.path: f.size for f in self.list(remote_dir)}
        local_files = sorted(p for p in local_dir.rglob("*") if p.is_file())
        try:
            for path in local_files:
                relative = path.relative_to(local_dir).as_posix()
                target = f"{remote_dir}/{relative}"
                size = path.stat().st_size
                if target not in before:
                    self.upload_file(path, target)
                elif not (path.suffix == ".pth" and before[target] == size):
                    self._swap_in(path, target, f"{remote_dir}/{INCOMING}/{relative}", size)
            missing = verify_upload(self, local_dir, remote_dir)
        except UploadError as exc:
            raise UploadError(f"{exc}; the files stay in {local_dir}") from None
        if missing:
            raise UploadError(
                f"upload to Team Files {remote_dir} is incomplete ({len(missing)} files differ, "
                f"e.g. {missing[0]}); the files stay in {local_dir}"
            )
        wanted = {f"{remote_dir}/{p.relative_to(local_dir).as_posix()}" for p in local_files}
        for stale in sorted(set(before) - wanted):
            self.remove(stale)
        return remote_dir

    def _swap_in(self, path: Path, target: str, incoming: str, size: int) -> None:
        self.upload_file(path, incoming)
        arrived = {f.path: f.size for f in self.list(incoming.rsplit("/", 1)[0])}
        if arrived.get(incoming) != size:
            raise UploadError(f"the new version of {target} did not arrive complete in {incoming}")
        self.remove(target)
        self.upload_file(path, target)
        self.remove(incoming)

    def list(self, remote_dir: str) -> list[RemoteFile]:
        infos = self._retrying(
            f"listing Team Files {remote_dir}",
            lambda: self.api.file.list(self.team_id, remote_dir.rstrip("/") + "/", True, "dict"),
        )
        return [RemoteFile(i["path"], int((i.get("meta") or {}).get("size") or 0)) for i in infos]

    def exists(self, remote_path: str) -> bool:
        infos = self.api.file.list(self.team_id, remote_path, True, "dict")
        return any(i["path"] == remote_path or i["path"].startswith(remote_path.rstrip("/") + "/")
                   for i in infos)  # fmt: skip

    def file_id(self, remote_path: str) -> int | None:
        info = self.api.file.get_info_by_path(self.team_id, remote_path)
        return info.id if info else None

    def download(self, remote_path: str, local_path: str | Path) -> Path:
        local_path = Path(local_path)
        tmp = local_path.with_name(f".{local_path.name}.part{os.getpid()}")
        self._retrying(
            f"downloading Team Files {remote_path}",
            lambda: self.api.file.download(self.team_id, remote_path, str(tmp)),
        )
        os.replace(tmp, local_path)
        return local_path

    def remove(self, remote_path: str) -> None:
        self._retrying(
            f"removing Team Files {remote_path}",
            lambda: self.api.file.remove_file(self.team_id, remote_path),
        )

    def describe(self, remote_path: str) -> str:
        return f"Team Files: {remote_path}"
