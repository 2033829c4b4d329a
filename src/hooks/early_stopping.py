"""Early stopping that continues across a resume.

mmengine's ``EarlyStoppingHook`` keeps its best score and its count of validations without
improvement in memory only: a resumed run started counting again from zero, so a run stopped
and resumed could train past the patience an uninterrupted run stops at. The state cannot come
from the checkpoint either: an epoch's checkpoint is written before that epoch's validation. It
is replayed instead from the validations the run logged (its scalar logs, every session), up to
the checkpoint's epoch: the same numbers the hook saw, in the same order (CocoMetric rounds
them before they are logged or compared).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

from mmengine.hooks import EarlyStoppingHook, Hook

logger = logging.getLogger(__name__)


class EarlyStoppingReplayHook(Hook):
    """On a resume, gives every ``EarlyStoppingHook`` of the runner the state it had at the
    checkpoint's epoch.

    Args:
        logged_validations: a run folder's validation metrics by epoch, later sessions winning
            (``src.runs.checkpoints.logged_validations``).
    """

    def __init__(self, logged_validations: Callable[[Path], dict[int, dict[str, float]]]) -> None:
        self.logged_validations = logged_validations

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        hooks = [h for h in runner.hooks if isinstance(h, EarlyStoppingHook)]
        if not hooks or not getattr(runner, "_resume", False):
            return  # loading weights only: a fine-tune starts its own count
        epoch = int(checkpoint.get("meta", {}).get("epoch", 0))
        history = self.logged_validations(Path(runner.work_dir))
        for hook in hooks:
            hook.best_score = -math.inf if hook.rule == "greater" else math.inf
            hook.wait_count = 0
            replayed = 0
            for step in sorted(s for s in history if s <= epoch):
                score = history[step].get(hook.monitor)
                if score is not None:
                    hook._check_stop_condition(score)  # mmengine's own rule (0.10), unchanged
                    replayed += 1
            logger.info(
                "early stopping continues from %d logged validations: best %s %.4g, %d of %d "
                "without improvement",
                replayed, hook.monitor, hook.best_score, hook.wait_count, hook.patience,
            )  # fmt: skip
