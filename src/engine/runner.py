"""mmengine's Runner with the app's loading, resuming and logging behaviour.

- Checkpoints load through the allowlist (``src.runs.checkpoints``): mmengine 0.10.7 calls plain
  ``torch.load``, which torch >= 2.6 refuses for its own checkpoints (``HistoryBuffer``).
- A resume with a different number of epochs re-plans the LR schedule for the new length: the
  schedulers of the new config are stepped from iteration 0 to the resume point (so the LR is
  where the new plan says it is), instead of restoring the old plan's state.
- A resume on another batch geometry (another number of processes or batch size: the checkpoint
  records its own, ``BatchGeometry``) is continued, not refused: the iteration is re-counted in
  this run's batches from the samples already trained in the epoch, and the schedule re-planned
  the same way, in this run's iterations. Which samples each process trains next differs from
  the interrupted run, so it is not bit-identical; ``geometry_note`` (logged) says so.
- The console can be quieter than the log file.
- Data loaders draw their worker seeds from a generator of their own, not from torch's global
  one: with per-sample seeding (``src.data.sample_rng``) those seeds no longer matter, and the
  global stream (what the model draws: proposal sampling, dropout) is then the same with or
  without workers, persistent or not, resumed or not.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint_to_model
from torch.utils.data import DataLoader

from src.config.metadata import RunMetadata
from src.config.schedule import advance_schedulers
from src.engine import patches
from src.engine.loops import BatchGeometry, geometry_of
from src.runs.checkpoint_io import download_checkpoint, load_checkpoint_file

logger = logging.getLogger(__name__)


def _keep_shapes(state: dict, own: dict) -> list[str]:
    """Replace, in ``state``, every tensor whose shape differs from ``own``'s (keys may carry
    mmengine's ``module.`` prefix) by ``own``'s; the names replaced."""
    replaced = []
    for key, value in state.items():
        name = key[len("module.") :] if key.startswith("module.") else key
        if name in own and hasattr(value, "shape") and value.shape != own[name].shape:
            state[key] = own[name]
            replaced.append(name)
    return replaced


def _said_by_the_app(record: logging.LogRecord) -> bool:
    """Console filter: mmdet's CocoMetric logs an ERROR when a validation has no predictions;
    the app's own validation line says so (the log file keeps the record)."""
    return "results of the whole dataset is empty" not in record.getMessage()


class AppRunner(Runner):
    """The Runner every TrainingSession uses."""

    console_log_level = "INFO"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        patches.apply()  # our checkpoint loaders and writes in mmengine, mmdet's fixes
        self.is_resuming = False
        self.geometry_note: str | None = None  # how a resume on another geometry went on
        super().__init__(*args, **kwargs)

    def build_logger(self, log_level="INFO", log_file=None, **kwargs):
        mm_logger = super().build_logger(log_level=log_level, log_file=log_file, **kwargs)
        for handler in mm_logger.handlers:
            if type(handler) is logging.StreamHandler:
                handler.setLevel(self.console_log_level)
                handler.addFilter(_said_by_the_app)
        return mm_logger

    @staticmethod
    def build_dataloader(dataloader: Any, seed: int | None = None, diff_rank_seed: bool = False):
        loader = Runner.build_dataloader(dataloader, seed=seed, diff_rank_seed=diff_rank_seed)
        if isinstance(loader, DataLoader) and loader.generator is None:
            loader.generator = torch.Generator().manual_seed(seed or 0)
        return loader

    def scale_lr(self, optim_wrapper: Any, auto_scale_lr: dict | None = None) -> None:
        """mmengine's ``auto_scale_lr``, plus the optimizer wrapper's base LR: with several
        parameter groups mmengine keeps a base group (``base_param_settings``, what the LR
        schedulers and the logs read first) that its ``scale_lr`` leaves unscaled, so the logged
        and charted LR would not be the one training uses."""
        groups = optim_wrapper.optimizer.param_groups
        before = groups[0]["lr"] if groups else None
        super().scale_lr(optim_wrapper, auto_scale_lr)
        base = getattr(optim_wrapper, "base_param_settings", None)
        if base is not None and before:
            base["lr"] = base["lr"] * groups[0]["lr"] / before

    def load_checkpoint(
        self,
        filename: str,
        map_location: Any = "cpu",
        strict: bool = False,
        revise_keys: list | None = None,
    ) -> dict:
        if "://" in str(filename):  # pretrained zoo weights, --weights URL: downloaded first
            filename = str(download_checkpoint(str(filename)))
        location = map_location if isinstance(map_location, str) else "cpu"
        checkpoint = load_checkpoint_file(filename, map_location=location)
        model = self.model.module if hasattr(self.model, "module") else self.model
        if not self.is_resuming:  # before the hooks: the EMAHook loads the checkpoint's EMA copy
            self._keep_own_shapes(model, checkpoint, filename)
        self.call_hook("after_load_checkpoint", checkpoint=checkpoint)
        checkpoint = _load_checkpoint_to_model(
            model, checkpoint, strict, revise_keys=revise_keys or [(r"^module.", "")]
        )
        self._has_loaded = True
        self.logger.info(f"Load checkpoint from {filename}")
        return checkpoint

    def _keep_own_shapes(self, model: Any, checkpoint: dict, filename: str) -> None:
        """Fine-tuning on other classes: the tensors whose shape differs (the class-dependent
        layers of the heads) keep this model's fresh initialisation, with one log line, instead
        of mmengine's page of size-mismatch warnings."""
        own = model.state_dict()
        mismatched = _keep_shapes(checkpoint.get("state_dict", checkpoint), own)
        # the EMA copy (RTMDet's EMAHook loads it into its averaged model when fine-tuning)
        if isinstance(checkpoint.get("ema_state_dict"), dict):
            _keep_shapes(checkpoint["ema_state_dict"], own)
        if not mismatched:
            return
        old = ((checkpoint.get("meta") or {}).get("dataset_meta") or {}).get("classes")
        new = RunMetadata.of(self.cfg).classes
        counts = f" ({len(old)} classes there, {len(new)} here)" if old and new else ""
        layers = sorted({n.rsplit(".", 1)[0] for n in mismatched})
        self.logger.warning(
            f"{Path(filename).name} was trained for other classes{counts}: "
            f"{len(mismatched)} tensors of {len(layers)} layers are re-initialised "
            f"({', '.join(layers[:6])}{', ...' if len(layers) > 6 else ''}); "
            "everything else is loaded"
        )

    def resume(
        self,
        filename: str,
        resume_optimizer: bool = True,
        resume_param_scheduler: bool = True,
        map_location: Any = "default",
    ) -> None:
        from src.runs.checkpoint_io import peek_checkpoint

        self.is_resuming = True
        meta = peek_checkpoint(filename)
        old_epochs = meta.get("max_epochs")
        replan = old_epochs is not None and int(old_epochs) != self.max_epochs
        saved, here = BatchGeometry.of_meta(meta), geometry_of(self)
        regear = (
            saved is not None
            and saved.samples_per_iteration is not None
            and (saved.samples_per_iteration, saved.batches_per_epoch)
            != (here.samples_per_iteration, here.batches_per_epoch)
        )
        # this run's optimizer as built (an auto-scaled LR is scaled for its own batch)
        fresh = [_initial_values(g) for g in self.optim_wrapper.param_groups]
        try:
            super().resume(
                filename,
                resume_optimizer=resume_optimizer,
                resume_param_scheduler=resume_param_scheduler and not (replan or regear),
                map_location=map_location,
            )
        finally:
            self.is_resuming = False
        if regear:
            self._recount_iterations(saved, here)
        if replan or regear:
            self._replan_schedule(fresh if regear else None)
        if replan:
            self.logger.info(
                f"resumed a {old_epochs}-epoch run for {self.max_epochs} epochs: the LR schedule "
                f"was re-planned for {self.max_epochs} epochs and advanced to iteration {self.iter}"
            )

    def _recount_iterations(self, saved: BatchGeometry, here: BatchGeometry) -> None:
        """A checkpoint of another geometry (processes x batch): go on in the same epoch after
        as many of its samples as were trained, at this run's iteration for them."""
        loop = self.train_loop
        done = loop._iter - loop._epoch * saved.batches_per_epoch
        if not 0 <= done <= saved.batches_per_epoch:
            raise RuntimeError(
                f"cannot resume at iteration {loop._iter} of epoch {loop._epoch + 1}: the "
                f"checkpoint's epochs have {saved.batches_per_epoch} batches"
            )
        now_done = min(done * saved.samples_per_iteration // here.samples_per_iteration,
                       here.batches_per_epoch)  # fmt: skip
        loop._iter = loop._epoch * here.batches_per_epoch + now_done
        self.geometry_note = (
            f"resumed on {_processes(here.world_size)} from a checkpoint of "
            f"{_processes(saved.world_size)} ({saved.samples_per_iteration} samples per "
            f"iteration, now {here.samples_per_iteration}): continuing epoch {loop._epoch + 1} "
            f"after {now_done * here.samples_per_iteration} of its samples, at iteration "
            f"{loop._iter} of {loop.max_iters}, with the LR schedule in the new iterations; "
            "not bit-identical to an uninterrupted run (other samples go to each process)"
        )
        self.logger.warning(self.geometry_note)

    def _replan_schedule(self, initial: list[dict[str, Any]] | None = None) -> None:
        """Step the new config's schedulers from the start to the resumed iteration.

        The optimizer state just loaded carries the old plan's values (LR, momentum) in its
        param groups, and mmengine's schedulers compute each value from the previous one: so
        each group's scheduled values are reset to their initial ones (``initial``: these, e.g.
        this run's auto-scaled LR; None: the checkpoint's) and the schedulers are built afresh
        before stepping them.
        """
        groups = self.optim_wrapper.param_groups
        for group, start in zip(groups, initial or [_initial_values(g) for g in groups],
                                strict=True):  # fmt: skip
            group.update(start)
            for key, value in start.items():
                name = key[len("initial_") :]
                group[name] = value
                if name == "momentum" and "betas" in group:  # Adam's beta_0 (mmengine's mixin)
                    group["betas"] = (value, group["betas"][1])
        self.param_schedulers = self.build_param_scheduler(self.cfg.param_scheduler)
        schedulers = self.param_schedulers or []
        if isinstance(schedulers, dict):
            schedulers = [s for group in schedulers.values() for s in group]
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()"
            warnings.simplefilter("ignore")
            advance_schedulers(schedulers, self.iter, len(self.train_dataloader))


def _initial_values(group: dict[str, Any]) -> dict[str, Any]:
    """A param group's ``initial_*`` entries: where mmengine's schedulers start each value."""
    return {k: v for k, v in group.items() if k.startswith("initial_")}


def _processes(n: int) -> str:
    return "1 process" if n == 1 else f"{n} processes"


def release_mmengine_instances(name: str) -> None:
    """Forget mmengine's process-wide instances (logger, message hub, visualizer, scope) of a run.

    They are looked up by the run's experiment name; a finished run's instances would otherwise
    live (with their open log files) until the process ends.
    """
    from mmengine.logging import MessageHub, MMLogger
    from mmengine.registry import DefaultScope
    from mmengine.visualization import Visualizer

    for cls in (MMLogger, MessageHub, Visualizer, DefaultScope):
        instance = cls._instance_dict.pop(name, None)
        if isinstance(instance, logging.Logger):
            for handler in list(instance.handlers):
                handler.close()
                instance.removeHandler(handler)


def shut_down_loader_workers(runner: Runner) -> None:
    """Stop the data-loader worker processes a run's loops keep (persistent workers outlive an
    epoch by design), now, while the run ends.

    Left to the garbage collector, torch's shutdown of a collected iterator stalled the next
    run of the same process for ~21 s before its first iteration (measured: every second run
    with 2 workers; 2 s with this call), the app's resume after a stop included."""
    for name in ("_train_loop", "_val_loop", "_test_loop"):
        loop = getattr(runner, name, None)
        iterator = getattr(getattr(loop, "dataloader", None), "_iterator", None)
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            try:
                shutdown()
            except Exception:  # a worker already gone: nothing left to stop
                logger.debug("shutting down %s workers failed", name, exc_info=True)
