"""Skip optimizer steps whose loss is NaN or Inf; stop the run after too many in a row.

mmengine's ``OptimWrapper.update_params(loss)`` does backward and step in one call, after the
last hook point before the step. This hook wraps that method of the run's optimizer wrapper (on
this one instance, in ``before_train``): a non-finite loss skips backward and step, the skip is
counted, and after ``max_consecutive`` skips in a row the run fails with a clear error. The
checkpoints saved so far are kept: the last one precedes the divergence.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from mmengine.hooks import Hook

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss was NaN/Inf for too many consecutive iterations."""


def _finite_on_every_rank(loss: torch.Tensor) -> bool:
    """Whether the loss is finite here and, with several DDP ranks, on all of them: the ranks
    must skip a step together (a rank that skipped backward alone would leave the others
    waiting in the gradient all-reduce)."""
    finite = bool(torch.isfinite(loss).all())
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        flag = torch.tensor([int(finite)], device=loss.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        finite = bool(flag.item())
    return finite


class NonFiniteLossHook(Hook):
    """Guard optimizer steps against NaN/Inf losses.

    Args:
        max_consecutive: how many non-finite losses in a row end the run (at least 1).
    """

    priority = "VERY_HIGH"

    def __init__(self, max_consecutive: int = 5) -> None:
        if max_consecutive < 1:
            raise ValueError(f"max_consecutive must be at least 1, got {max_consecutive}")
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.skipped = 0

    def before_train(self, runner) -> None:
        wrapper = runner.optim_wrapper
        original = wrapper.update_params

        def guarded_update_params(loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
            if _finite_on_every_rank(loss):
                self.consecutive = 0
                return original(loss, *args, **kwargs)
            self.consecutive += 1
            self.skipped += 1
            wrapper.zero_grad()
            logger.warning(
                "non-finite loss (%s) at iteration %d: optimizer step skipped (%d in a row)",
                loss.item() if loss.numel() == 1 else "tensor",
                runner.iter + 1,
                self.consecutive,
            )
            return None

        wrapper.update_params = guarded_update_params

    def after_train_iter(
        self, runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        runner.message_hub.update_info("skipped_nonfinite_steps", self.skipped)
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteLossError(
                f"the loss was NaN or Inf for {self.consecutive} iterations in a row (up to "
                f"iteration {runner.iter + 1}): training diverged. Lower the learning rate or "
                "enable gradient clipping, then resume from the last checkpoint"
            )
