"""Pack a finished (or stopped) run into the layout Supervisely's MMDetection 3 serving app reads.

``config.py`` and the ``*.pth`` files side by side; ``sly_metadata`` is the config's last key. The
checkpoints are inference exports (``state_dict`` + plain ``meta``), which mmdet's ``init_detector``
loads on any torch. ``resume/`` holds the run's resumable state (see ``src.remote_runs``), so a
stopped run can be continued in a later app session even after its app data is gone.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.checkpoints import CheckpointError, best_checkpoint, export_for_inference, last_checkpoint
from src.remote_runs import RESUME_DIR, snapshot_run_state

logger = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What the README of a run says and ``metrics.json`` holds."""

    run_id: str
    model_name: str
    task: str
    project_name: str
    classes: list[str]
    epochs_done: int
    state: str  # finished | stopped | failed
    best_metric: dict[str, float] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)  # {"train": [...], "val": [...]}


def pack_run(
    work_dir: str | Path, config_text: str, out_dir: str | Path, summary: RunSummary
) -> Path:
    """Write the artifact folder for a run; returns it. Raises if there is no checkpoint at all."""
    work_dir, out_dir = Path(work_dir), Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    (out_dir / "config.py").write_text(config_text, encoding="utf-8")

    exported = []
    best = best_checkpoint(work_dir)
    last = last_checkpoint(work_dir)
    if best is not None:
        exported.append(export_for_inference(best, out_dir / best.name))
    if last is not None and last != best:
        exported.append(export_for_inference(last, out_dir / last.name))
    if not exported:
        raise FileNotFoundError(f"no checkpoint was saved in {work_dir}: nothing to upload")

    try:
        snapshot_run_state(work_dir, out_dir / RESUME_DIR, summary.run_id)
    except CheckpointError as exc:
        logger.warning("the run cannot be resumed from its artifacts: %s", exc)

    logs_dir = out_dir / "logs"
    logs_dir.mkdir()
    for log in sorted(work_dir.glob("*/*.log")):
        shutil.copy2(log, logs_dir / log.name)
    for scalars in sorted(work_dir.glob("*/vis_data/scalars.json")):
        shutil.copy2(scalars, logs_dir / f"{scalars.parent.parent.name}_scalars.json")

    (out_dir / "metrics.json").write_text(
        json.dumps(
            {
                "best": summary.best_metric,
                "epochs_done": summary.epochs_done,
                "state": summary.state,
                "history": summary.history,
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    (out_dir / "README.md").write_text(
        _readme(summary, [p.name for p in exported]), encoding="utf-8"
    )
    return out_dir


def _readme(summary: RunSummary, checkpoints: list[str]) -> str:
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in summary.best_metric.items()) or "none"
    lines = [
        f"# {summary.model_name} on {summary.project_name}",
        "",
        f"- run: {summary.run_id} ({summary.state} after {summary.epochs_done} epochs)",
        f"- task: {summary.task}",
        f"- classes: {', '.join(summary.classes)}",
        f"- best validation: {metrics}",
        f"- checkpoints (inference: state_dict + meta): {', '.join(checkpoints)}",
        "",
        "Use outside Supervisely:",
        "",
        "```python",
        "from mmdet.apis import init_detector, inference_detector",
        f"model = init_detector('config.py', '{checkpoints[0]}', device='cpu')",
        "result = inference_detector(model, 'image.jpg')",
        "```",
        "",
        "`logs/` holds the training log and the logged scalars; `metrics.json` the metric history.",
        "`resume/` holds the full training state (optimizer, schedulers, RNG): the app's Resume",
        "tab, or `python -m src.cli runs --team-files`, continues the run from it.",
        "",
    ]
    return "\n".join(lines)
