"""The run's own description: ``sly_metadata``, the last key of a run's ``config.py``.

The composition writes it; resume, the session, the ranks, the evaluation and the run listers read
it, from a config or from the copy a checkpoint's ``meta`` carries; outside the app, the serving
app reads ``architecture_name``, ``model_name``, ``project_name`` and ``task_type`` from it
(tests/runs/test_serving_contract.py), and the SDK's artifacts parser the tail of the text that
:func:`src.config.text.config_to_text` writes. Its keys are spelled here only: every reader and
writer goes through :class:`RunMetadata`, and keys it does not know (a newer app's) are kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from src.core.tasks import DETECTION

KEY = "sly_metadata"
# What a checkpoint's meta carries of it (the run listers read a run from its newest checkpoint)
_IN_CHECKPOINT = ("model_name", "architecture", "task_type", "project_id", "project_name")


@dataclass(frozen=True)
class RunMetadata:
    """What a run is: its model, its project and classes, and the settings it was composed from."""

    model_name: str = "custom"
    architecture: str = "custom"
    # as the app spells it; config.py has object_detection, the platform's spelling (config/text.py)
    task_type: str = DETECTION
    project_id: int | None = None
    project_name: str = ""
    classes: tuple[str, ...] = ()
    # the smallest input edge the model accepts (the zoo probe's; src.config.augmentations)
    min_input_size: int = 32
    # TrainParams as JSON (src.config.params.jsonable): what a resume re-plans from
    train_params: Mapping[str, Any] = field(default_factory=dict)
    # the TrainParams fields the session chooses on the run's device (src.engine.autosize)
    auto_size: tuple[str, ...] = ()
    # keys this version does not know, kept as they were
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, holder: Mapping[str, Any] | None) -> RunMetadata:
        """The description in a config, a config's dict or a checkpoint's meta (defaults where
        it has none: a config written by hand, a checkpoint of another app)."""
        raw = (holder.get(KEY) if holder is not None else None) or {}
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values: dict[str, Any] = {k: raw[k] for k in known if raw.get(k) is not None}
        for key in ("classes", "auto_size"):
            if key in values:
                values[key] = tuple(values[key])
        if "train_params" in values:
            values["train_params"] = dict(values["train_params"])
        if "task_type" in values:
            values["task_type"] = str(values["task_type"]).replace("_", "-")
        if "min_input_size" in values:
            values["min_input_size"] = int(values["min_input_size"])
        extra = {k: raw[k] for k in raw if k not in known and k != "architecture_name"}
        return cls(**values, extra=extra)

    def updated(self, **changes: Any) -> RunMetadata:
        """A copy with ``changes`` (field names: a misspelt one is a TypeError)."""
        for key in ("classes", "auto_size"):
            if key in changes:
                changes[key] = tuple(changes[key])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The serialised form, with ``architecture_name`` (the serving app's key)."""
        data: dict[str, Any] = {
            "model_name": self.model_name,
            "architecture": self.architecture,
            "min_input_size": self.min_input_size,
            "task_type": self.task_type,
            "project_id": self.project_id,
            "project_name": self.project_name,
            "classes": list(self.classes),
            "train_params": dict(self.train_params),
            "auto_size": list(self.auto_size),
            **self.extra,
        }
        data["architecture_name"] = self.architecture
        return data

    def write(self, cfg: Any) -> Any:
        """Set it as ``cfg``'s last key (the artifacts parser reads the text's last lines)."""
        cfg.pop(KEY, None)
        cfg[KEY] = self.to_dict()
        return cfg

    def for_checkpoint(self) -> dict[str, Any]:
        """The part a checkpoint's meta carries, so a run can be listed from its checkpoint."""
        return {k: v for k, v in self.to_dict().items() if k in _IN_CHECKPOINT}

    @property
    def devices(self) -> int:
        """Processes the run trains in: its GPUs, or ``nproc`` CPU processes."""
        recorded = self.train_params
        return max(1, len(recorded.get("gpus") or ()) or int(recorded.get("nproc") or 1))

    @property
    def device(self) -> str:
        """The device rank 0 trains on."""
        return self.rank_device(0)

    def rank_device(self, rank: int) -> str:
        """The device rank ``rank`` trains on: its own GPU of ``gpus`` (``--gpus 2,5``: rank 1
        on cuda:5), else the run's device (CPU processes share it)."""
        gpus = self.train_params.get("gpus") or ()
        return f"cuda:{gpus[rank]}" if gpus else str(self.train_params.get("device", "cpu"))
