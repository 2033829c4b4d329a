"""Where a run's artifacts end up: Team Files on the platform, a local folder headless.

Both stores take the same remote paths (``/mmdetection-3/<run_id>_<project>/...``) and have the
same methods, so the code that uploads does not care which one it has.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

logger = logging.getLogger(__name__)

ARTIFACTS_ROOT = "/mmdetection-3"


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
        shutil.rmtree(staging, ignore_errors=True)
        try:
            shutil.copytree(local_dir, staging)
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, target)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
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

    def describe(self, remote_path: str) -> str:
        return str(self._local(remote_path))
