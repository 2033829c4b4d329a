"""Keep the best epoch's validation predictions, so the evaluation after training need not
predict again.

mmdet's ``CocoMetric`` writes each validation's predictions to ``<work_dir>/predictions/val.*``
(its ``outfile_prefix``, set when the config is composed); the next validation overwrites them.
After each validation, once mmengine's ``CheckpointHook`` has decided whether this epoch is the
best (it runs first: this hook's priority is lower), the files of a new best are copied to
``<work_dir>/predictions/best.*`` with ``best.json`` naming the checkpoint they belong to. Without
``save_best`` the newest epoch's are kept: the final checkpoint is the one evaluated.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mmengine.hooks import Hook

from src.core.layout import BEST_INFO, BEST_PREDICTIONS, epoch_checkpoint
from src.runs.atomic_files import atomic_path, write_json_atomic


class BestPredictionsHook(Hook):
    """Copy the validation predictions of the best checkpoint beside it.

    Args:
        val_prefix: ``CocoMetric``'s ``outfile_prefix`` (absolute).
    """

    priority = "LOWEST"

    def __init__(self, val_prefix: str) -> None:
        self.val_prefix = val_prefix

    def after_val_epoch(self, runner, metrics=None) -> None:
        work_dir = Path(runner.work_dir)
        hub = runner.message_hub
        best = hub.get_info("best_ckpt") if "best_ckpt" in hub.runtime_info else None
        if best and not Path(best).name.endswith(f"_{epoch_checkpoint(runner.epoch)}"):
            return  # an earlier epoch is the best: its files are already kept
        checkpoint = Path(best).name if best else epoch_checkpoint(runner.epoch)
        copied = []
        for kind in ("bbox", "segm"):
            source = Path(f"{self.val_prefix}.{kind}.json")
            if source.is_file():
                with atomic_path(work_dir / f"{BEST_PREDICTIONS}.{kind}.json") as target:
                    shutil.copyfile(source, target)
                copied.append(kind)
        if copied:
            write_json_atomic(
                {
                    "checkpoint": checkpoint,
                    "epoch": runner.epoch,
                    "iteration": runner.iter,
                    "kinds": copied,
                    "metrics": {k: float(v) for k, v in (metrics or {}).items()
                                if isinstance(v, (int, float))},
                },
                work_dir / BEST_INFO,
            )  # fmt: skip
