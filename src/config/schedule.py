"""The learning-rate schedule: mmengine param schedulers from ``TrainParams``, and the preview.

:func:`lr_schedule` plans warmup by iteration and the main schedule in epochs, so a resumed run
with more epochs re-plans it (:func:`replan_epochs`); :func:`lr_curve` steps the same mmengine
schedulers on a dummy optimizer, so the preview is the schedule a run follows.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any

from mmengine.config import Config

from src.config.metadata import RunMetadata
from src.config.params import ConfigError, TrainParams, jsonable

# mmdet names a zoo config by its training recipe: <GPUs>x b<images per GPU> ("rtmdet_s_8xb32")
RECIPE = re.compile(r"(?:^|_)(\d+)xb(\d+)(?=[-_])")


def recipe_batch(model_name: str) -> int | None:
    """The total batch the zoo model's lr was tuned for, from its name (8 x 32 = 256 for
    ``rtmdet_s_8xb32-300e_coco``), None where the name does not say. Preferred over the config's
    ``auto_scale_lr.base_batch_size``: RTMDet's configs inherit 16 from ``schedule_1x`` although
    their lr (0.004) is for 256."""
    found = RECIPE.search(model_name or "")
    return int(found[1]) * int(found[2]) if found else None


def set_schedule(cfg: Config, params: TrainParams, model_name: str = "") -> None:
    cfg.train_cfg = dict(
        type="EpochBasedTrainLoop", max_epochs=params.epochs, val_interval=params.val_interval
    )
    cfg.val_cfg = dict(type="ValLoop")
    cfg.test_cfg = dict(type="TestLoop")
    old_wrapper = cfg.get("optim_wrapper") or {}
    optimizer: dict[str, Any] = dict(
        type=params.optimizer, lr=params.lr, weight_decay=params.weight_decay
    )
    if params.optimizer == "SGD":
        optimizer["momentum"] = params.momentum
        if params.nesterov:
            optimizer["nesterov"] = True
    amp = params.mixed_precision
    wrapper: dict[str, Any] = dict(
        type="AmpOptimWrapper" if amp else "OptimWrapper", optimizer=optimizer
    )
    if amp:
        wrapper["loss_scale"] = "dynamic"
    for key in ("paramwise_cfg", "constructor"):
        if old_wrapper.get(key) is not None:
            wrapper[key] = old_wrapper[key]
    wrapper["clip_grad"] = (
        dict(max_norm=params.grad_clip, norm_type=2) if params.grad_clip else None
    )
    cfg.optim_wrapper = wrapper
    cfg.param_scheduler = lr_schedule(params)
    # the zoo config's base batch size (what its lr was tuned for), else this run's own
    base = (
        recipe_batch(model_name)
        or (cfg.get("auto_scale_lr") or {}).get("base_batch_size")
        or params.batch
    )
    cfg.auto_scale_lr = dict(enable=params.auto_scale_lr, base_batch_size=int(base))


def effective_lr(params: TrainParams, base_batch_size: int, devices: int = 1) -> float:
    """The LR a run trains with: mmengine's ``auto_scale_lr`` multiplies the set LR by the
    effective batch size (per device × devices) over the base batch size."""
    if not params.auto_scale_lr:
        return params.lr
    return params.lr * params.batch * devices / max(1, base_batch_size)


def devices(params: TrainParams) -> int:
    """How many processes (GPUs, or CPU processes) a run trains in."""
    return len(params.gpus) or params.nproc


def effective_batch_note(params: TrainParams) -> str:
    """The batch a step sees with several devices (per device x devices); empty for one."""
    n = devices(params)
    if n == 1:
        return ""
    return f"effective batch {params.batch * n} ({params.batch} per device x {n} devices)"


def effective_lr_note(params: TrainParams, base_batch_size: int) -> str:
    """How the auto-scaled LR comes about, as the CLI prints it and the Compose step shows it."""
    n = devices(params)
    batch = f"batch {params.batch}" + (f" x {n} devices" if n > 1 else "")
    return (
        f"learning rate {effective_lr(params, base_batch_size, n):.3g} (auto-scaled: "
        f"{params.lr:g} x {batch} / the zoo config's base batch {base_batch_size})"
    )


def auto_batch_lr_note(params: TrainParams, base_batch_size: int) -> str:
    """What happens to the LR when the app chooses the batch on the GPU (before it is chosen):
    the CLI prints it, the Compose and Hyperparameters steps show it."""
    if params.train_batch_size is not None or not params.on_cuda:
        return ""
    n = devices(params)
    per = f"batch x {n} devices" if n > 1 else "batch"
    how = "by mmengine's auto_scale_lr" if params.auto_scale_lr else "in the config"
    return (
        f"learning rate {params.lr:g} is for the zoo config's base batch {base_batch_size}: "
        f"with the batch chosen on the GPU it is scaled {how} to {params.lr:g} x the chosen "
        f"{per} / {base_batch_size}"
    )


def scale_lr_to_batch(cfg: Any, batch: int, devices: int) -> str:
    """Scale ``cfg``'s LR to a batch the app chose (``batch`` per device x ``devices``), from the
    zoo config's base batch, by the rule mmengine's ``auto_scale_lr`` applies (lr x real batch /
    base batch; Goyal et al. 2017), and say so; empty when the batch is the base batch.

    The scaled LR is written in the config (the optimizer's ``lr`` and the schedulers' absolute
    bounds, ``eta_min`` and ``eta_max``, which the schedule derives from the LR), so ``config.py``
    holds the LR that trained; where ``auto_scale_lr`` is enabled mmengine scales it when the
    Runner is built instead, and only the note is made here."""
    auto = cfg.get("auto_scale_lr") or {}
    base = int(auto.get("base_batch_size") or 0)
    real = batch * max(1, devices)
    optimizer = cfg.optim_wrapper.get("optimizer") or {}
    if not base or real == base or "lr" not in optimizer:
        return ""
    ratio = real / base
    lr = float(optimizer["lr"])
    if not auto.get("enable"):
        optimizer["lr"] = lr * ratio
        for scheduler in cfg.get("param_scheduler") or []:
            for key in ("eta_min", "eta_max"):
                if isinstance(scheduler.get(key), float | int):
                    scheduler[key] = scheduler[key] * ratio
    per = f"batch {batch} x {devices} devices" if devices > 1 else f"batch {batch}"
    return (
        f"learning rate {lr * ratio:.3g} (auto-scaled to the chosen {per}: {lr:g} x {real} / "
        f"the zoo config's base batch {base})"
    )


def lr_schedule(params: TrainParams) -> list[dict]:
    """mmengine param schedulers: optional linear warmup by iteration, then the main schedule.

    The main schedule is planned in epochs (``convert_to_iter_based``), so a resumed run with
    more epochs re-plans it from the new ``params.epochs``.
    """
    schedulers: list[dict] = []
    if params.warmup_iters > 0:
        schedulers.append(
            dict(
                type="LinearLR",
                start_factor=params.warmup_ratio,
                by_epoch=False,
                begin=0,
                end=params.warmup_iters,
            )
        )
    epochs = params.epochs
    if params.scheduler == "cosine":
        schedulers.append(
            dict(
                type="CosineAnnealingLR",
                eta_min=params.lr * 0.01,
                begin=0,
                end=epochs,
                T_max=epochs,
                by_epoch=True,
                convert_to_iter_based=True,
            )
        )
    elif params.scheduler == "step":
        milestones = list(params.step_epochs) or sorted(
            {max(1, round(epochs * 2 / 3)), max(1, round(epochs * 8 / 9))}
        )
        schedulers.append(
            dict(type="MultiStepLR", milestones=milestones, gamma=0.1, begin=0, end=epochs)
        )
    elif params.scheduler == "linear":
        schedulers.append(
            dict(
                type="LinearLR",
                start_factor=1.0,
                end_factor=0.01,
                begin=0,
                end=epochs,
                by_epoch=True,
                convert_to_iter_based=True,
            )
        )
    else:
        main = _other_schedule(params)
        if main is not None:
            schedulers.append(main)
    if not schedulers:
        schedulers.append(dict(type="ConstantLR", factor=1.0, begin=0, end=epochs))
    return schedulers


def _other_schedule(params: TrainParams) -> dict | None:
    """Polynomial decay, one cycle, cosine with restarts (planned in epochs, stepped by
    iteration like cosine); None for a constant LR."""
    epochs = params.epochs
    by_iter = dict(begin=0, end=epochs, by_epoch=True, convert_to_iter_based=True)
    if params.scheduler == "poly":
        return dict(type="PolyLR", eta_min=params.lr * 0.01, power=0.9, **by_iter)
    if params.scheduler == "onecycle":  # its own warmup: up to lr over 30 %, then down
        return dict(type="OneCycleLR", eta_max=params.lr, pct_start=0.3, **by_iter)
    if params.scheduler == "cosine_restarts":
        period = params.restart_epochs or max(1, epochs // 3)
        cycles = -(-epochs // period)  # ceil: the last cycle may be cut short by the run's end
        return dict(
            type="CosineRestartLR", periods=[period] * cycles, restart_weights=[1.0] * cycles,
            eta_min=params.lr * 0.01, **by_iter,
        )  # fmt: skip
    return None


def replan_epochs(cfg: Config, epochs: int) -> Config:
    """The same config planned for ``epochs`` epochs (a resume that trains longer or shorter).

    A config composed by the app is re-planned from its recorded ``TrainParams`` (the LR
    schedule is rebuilt as if the run had started with ``epochs``). In another config, epoch-based
    scheduler bounds that equal the old length are moved to the new one.
    """
    if epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}")
    old = int(cfg.train_cfg.get("max_epochs", epochs))
    cfg.train_cfg.max_epochs = epochs
    metadata = RunMetadata.of(cfg)
    recorded = metadata.train_params
    if recorded:
        fields = set(TrainParams.__dataclass_fields__)
        values = {k: v for k, v in recorded.items() if k in fields}
        for key in ("classes", "input_size", "step_epochs"):
            if key in values and values[key] is not None:
                values[key] = tuple(values[key])
        params = TrainParams(**dict(values, epochs=epochs))
        cfg.param_scheduler = lr_schedule(params)
        metadata.updated(train_params=jsonable(asdict(params))).write(cfg)
    else:
        for scheduler in cfg.get("param_scheduler") or []:
            for key in ("end", "T_max"):
                if scheduler.get(key) == old and scheduler.get("by_epoch", True):
                    scheduler[key] = epochs
    return cfg


def lr_curve(params: TrainParams, iters_per_epoch: int) -> list[tuple[int, float]]:
    """(iteration, LR) over the whole run, as mmengine's schedulers will set it (UI preview)."""
    import mmengine.optim  # noqa: F401  (registers the schedulers: the registry is empty before)
    import torch
    from mmengine.registry import PARAM_SCHEDULERS

    iters_per_epoch = max(1, int(iters_per_epoch))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=params.lr)
    schedulers = []
    for spec in lr_schedule(params):
        spec = dict(spec)
        cls = PARAM_SCHEDULERS.get(spec.pop("type"))
        if spec.pop("convert_to_iter_based", False):
            schedulers.append(
                cls.build_iter_from_epoch(optimizer, epoch_length=iters_per_epoch, **spec)
            )
        else:
            schedulers.append(cls(optimizer, **spec))
    points: list[tuple[int, float]] = []
    advance_schedulers(
        schedulers,
        params.epochs * iters_per_epoch,
        iters_per_epoch,
        before_step=lambda it: points.append((it + 1, float(optimizer.param_groups[0]["lr"]))),
    )
    return points


def advance_schedulers(
    schedulers: list, iterations: int, iters_per_epoch: int, before_step=None
) -> None:
    """Step mmengine param schedulers through ``iterations`` training iterations, the way
    ``ParamSchedulerHook`` does: iteration-based ones after every iteration, epoch-based ones
    after every ``iters_per_epoch``. ``before_step(i)`` sees the LR iteration ``i`` trains with."""
    for it in range(iterations):
        if before_step is not None:
            before_step(it)
        for scheduler in schedulers:
            if not scheduler.by_epoch:
                scheduler.step()
        if (it + 1) % iters_per_epoch == 0:
            for scheduler in schedulers:
                if scheduler.by_epoch:
                    scheduler.step()
