"""What the app knows of a resumable run, wherever its state is: one type, one table row.

A run is resumable from app data (its work dir, with the newest complete resumable checkpoint)
or only from Team Files (its artifacts dir, whose ``resume/`` folder holds the state; it is
downloaded into app data before resuming). The runs tables (``GET /api/runs``, the Model step's
Resume tab, ``cli runs``) show both the same way, through :meth:`RunInfo.row`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from src.config.primary_metric import primary_value
from src.core.layout import EPOCH_PREFIX

APP_DATA, TEAM_FILES = "app data", "Team Files"


@dataclass(frozen=True)
class RunInfo:
    """A resumable run. ``folder`` and ``checkpoint`` are local paths for a run in app data,
    Team Files paths for a run only there (``checkpoint`` then lies in ``folder/resume/``)."""

    run_id: str
    where: Literal["app data", "Team Files"]
    folder: str  # the app-data work dir, or the run's artifacts dir in Team Files
    checkpoint: str  # the newest complete, resumable checkpoint
    model_name: str
    epoch: int  # completed epochs
    iteration: int  # completed iterations
    max_epochs: int
    saved_at: float  # epoch seconds
    project_id: int | None = None
    project_name: str = ""
    last_metrics: dict[str, float] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()  # unreadable checkpoints passed over

    @property
    def in_app_data(self) -> bool:
        return self.where == APP_DATA

    @property
    def work_dir(self) -> Path:
        """The run's folder in app data (a Team Files run has none until it is fetched)."""
        if not self.in_app_data:
            raise ValueError(f"run {self.run_id} is only in Team Files: fetch it first")
        return Path(self.folder)

    @property
    def checkpoint_name(self) -> str:
        return PurePosixPath(self.checkpoint).name

    @property
    def mid_epoch(self) -> bool:
        """Saved inside an epoch (``iter_N.pth``) rather than at its end (``epoch_N.pth``)."""
        return not self.checkpoint_name.startswith(EPOCH_PREFIX)

    def row(self) -> dict[str, Any]:
        """The run as the runs tables show it."""
        return {
            "run_id": self.run_id,
            "where": self.where,
            "model": self.model_name,
            "epoch": self.epoch,
            "max_epochs": self.max_epochs,
            "iteration": self.iteration,
            "mid_epoch": self.mid_epoch,
            "saved_at": self.saved_at,
            "checkpoint": self.checkpoint,
            "folder": self.folder,
            "last_metrics": self.last_metrics,
            "mAP": primary_value(self.last_metrics),
        }
