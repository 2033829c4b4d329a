"""Stop a run at any batch boundary: checkpoint at that exact iteration, then end cleanly.

mmengine's ``EpochBasedTrainLoop`` reads ``stop_training`` only between epochs, so a hook ends the
loop by raising :class:`TrainingStopped`, which ``TrainingSession`` treats as a clean stop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmengine.dist import is_main_process
from mmengine.hooks import Hook

from src.core.layout import VALIDATION_OWED, iter_checkpoint
from src.runs.atomic_files import write_text_atomic
from src.runs.checkpoint_io import ATOMIC_BACKEND_ARGS


class TrainingStopped(Exception):
    """Raised by :class:`StopHook` to end the run; carries where it stopped."""

    def __init__(self, checkpoint: str | None, during_validation: bool) -> None:
        self.checkpoint = checkpoint
        self.during_validation = during_validation
        where = "during validation" if during_validation else "after a training iteration"
        super().__init__(f"stopped {where}; checkpoint: {checkpoint}")


def mid_epoch_checkpoint_name(iteration: int) -> str:
    return iter_checkpoint(iteration)


class StopHook(Hook):
    """End training when ``should_stop()`` turns true, at the next batch boundary.

    Args:
        should_stop: called after every training and validation iteration; must be cheap.
        before_save: called on every rank before a stop's checkpoint (``ResumeStateHook``'s
            ``share_states``: rank 0 saves every rank's RNG states).

    A stop after a training iteration saves a resumable checkpoint of that exact iteration
    (model, optimizer, schedulers, message hub, RNG states via ``ResumeStateHook``) and points
    ``last_checkpoint`` at it. A stop during validation abandons the validation: the checkpoint
    saved at the end of that epoch (before validation) is the one to resume from, and the run
    folder's ``VALIDATION_OWED`` names the epoch, which the resumed run validates first.
    """

    priority = "LOWEST"  # after every other after_train_iter work (scheduler, EMA, logging)

    def __init__(
        self, should_stop: Callable[[], bool], before_save: Callable[[], None] | None = None
    ) -> None:
        if not callable(should_stop):
            raise TypeError(f"should_stop must be callable, got {should_stop!r}")
        self.should_stop = should_stop
        self.before_save = before_save

    def after_train_iter(
        self, runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        if not self.should_stop():
            return
        if self.before_save is not None:  # every rank is here (the stop is agreed by all)
            self.before_save()
        filename = mid_epoch_checkpoint_name(runner.iter + 1)
        runner.save_checkpoint(
            runner.work_dir,
            filename,
            save_optimizer=True,
            save_param_scheduler=True,
            by_epoch=False,
            backend_args=ATOMIC_BACKEND_ARGS,
        )
        path = f"{runner.work_dir}/{filename}"
        write_text_atomic(f"{runner.work_dir}/last_checkpoint", path)
        raise TrainingStopped(path, during_validation=False)

    def after_val_iter(
        self, runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        if self.should_stop():
            if runner.train_loop is not None and is_main_process():
                # the resume validates this epoch first (ResumableEpochBasedTrainLoop): an
                # uninterrupted run's best checkpoint and early stopping saw its validation
                write_text_atomic(f"{runner.work_dir}/{VALIDATION_OWED}", str(runner.epoch))
            raise TrainingStopped(None, during_validation=True)
