"""Refuse to run when any output of the run would land outside the synced app-data folder.

The config builder points ``work_dir`` at ``<app data>/<run_id>`` (an edited config's own
``work_dir`` is overridden, with a warning). This hook is the guard behind that: checkpoints and
logs outside the synced folder would not survive the agent, so the run fails at once instead.
"""

from __future__ import annotations

from pathlib import Path

from mmengine.hooks import Hook


class WorkDirError(RuntimeError):
    """The run's work dir or log dir is outside the allowed root."""


class WorkDirGuardHook(Hook):
    """Check that ``runner.work_dir`` and ``runner.log_dir`` are inside ``root``.

    Args:
        root: the synced app-data folder (``sly.app.get_synced_data_dir()``).
    """

    priority = "HIGHEST"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def before_run(self, runner) -> None:
        for name in ("work_dir", "log_dir"):
            path = Path(getattr(runner, name)).resolve()
            if path != self.root and self.root not in path.parents:
                raise WorkDirError(
                    f"the run's {name} {path} is outside the app-data folder {self.root}: "
                    "its files would not survive the agent"
                )
