"""Copy a run's newest checkpoint to Team Files in the background while it trains.

The agent's disk does not outlive the agent. ``CheckpointSync`` takes snapshots on the training
thread — only hard links and two small files, so taking one costs no copy and mmengine may delete
its checkpoint meanwhile — and does everything else in its own thread: reading the checkpoint's
meta, writing ``state.json``, uploading. Training never waits on the network. When snapshots come
faster than uploads, only the newest pending one is uploaded.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from src.runs.remote import collect_run_files, publish_state, write_state
from src.runs.storage import ArtifactStore

logger = logging.getLogger(__name__)


@dataclass
class SyncStatus:
    synced_iteration: int | None = None  # the iteration of the newest checkpoint in Team Files
    synced_at: float | None = None
    uploads: int = 0
    last_error: str | None = None


class CheckpointSync:
    """Uploads run-state snapshots to ``<remote_run_dir>/resume/`` in a worker thread.

    Args:
        store: Team Files (or the local stand-in).
        remote_run_dir: the run's artifacts dir.
        scratch_dir: where snapshots are assembled (beside the run, same disk for hard links).
        run_id: the run's id, recorded in ``state.json``.
    """

    def __init__(
        self, store: ArtifactStore, remote_run_dir: str, scratch_dir: str | Path, run_id: str
    ) -> None:
        self.store = store
        self.remote_run_dir = remote_run_dir
        self.scratch_dir = Path(scratch_dir)
        self.run_id = run_id
        self.status = SyncStatus()
        self._pending: tuple[Path, str] | None = None  # (snapshot dir, checkpoint name)
        self._cond = threading.Condition()
        self._closed = False
        self._counter = 0
        self._last_key: tuple[str, float] | None = None
        self._thread = threading.Thread(target=self._work, name=f"sync-{run_id}", daemon=True)
        self._thread.start()

    def submit(self, work_dir: str | Path) -> bool:
        """Snapshot the run's newest resumable checkpoint and queue it; False if there is none."""
        from src.runs.checkpoints import last_checkpoint

        newest = last_checkpoint(work_dir)
        key = (str(newest), newest.stat().st_mtime) if newest else None
        with self._cond:
            if self._closed or (key is not None and key == self._last_key):
                return False  # closed, or this checkpoint was already submitted
            self._last_key = key
            self._counter += 1
            dest = self.scratch_dir / f"snapshot_{self._counter}"
        if newest is None or newest.name.startswith("best_"):
            return False
        try:
            collect_run_files(work_dir, dest, newest)
        except OSError as exc:
            logger.warning("checkpoint sync: no snapshot of %s (%s)", work_dir, exc)
            shutil.rmtree(dest, ignore_errors=True)
            return False
        with self._cond:
            if self._pending is not None:  # superseded before it was uploaded
                shutil.rmtree(self._pending[0], ignore_errors=True)
            self._pending = (dest, newest.name)
            self._cond.notify_all()
        return True

    def close(self, timeout: float | None = None) -> None:
        """Finish the upload in progress and the pending one, then stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        shutil.rmtree(self.scratch_dir, ignore_errors=True)

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None:
                    return
                (snapshot, checkpoint), self._pending = self._pending, None
            try:
                state = write_state(snapshot, checkpoint, self.run_id)
                publish_state(self.store, snapshot, self.remote_run_dir)
                self.status.synced_iteration = int(state["iteration"])
                self.status.synced_at = time.time()
                self.status.uploads += 1
                self.status.last_error = None
                logger.info("checkpoint sync: iteration %s uploaded", state["iteration"])
            except Exception as exc:  # the next snapshot tries again; training goes on
                self.status.last_error = str(exc)
                logger.warning("checkpoint sync to %s failed: %s", self.remote_run_dir, exc)
            finally:
                shutil.rmtree(snapshot, ignore_errors=True)
