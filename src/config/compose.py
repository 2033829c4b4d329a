"""Compose the mmengine config that trains: zoo entry (or user text) + TrainParams + dataset.

Pure functions: nothing here reads the environment, touches the network or starts training.
:func:`apply_owned_settings` re-applies only what the app must own (dataset paths, class count,
work dir, resume) on top of a user's edited text. The model's part is in ``compose_model``, the
pipelines in ``compose_pipelines``, the loaders and datasets in ``compose_data``; here the
schedule, hooks, visualizer and weights, and the whole put together.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mmengine.config import Config

from src.config.compose_data import dataset_cfg, inference_dataset_cfg, set_data
from src.config.compose_model import load_base_config, set_model, set_num_classes
from src.config.compose_pipelines import set_pipelines
from src.config.metadata import RunMetadata
from src.config.params import ConfigError, DatasetSpec, RunSpec, TrainParams, jsonable
from src.config.primary_metric import primary_metric
from src.config.schedule import set_schedule
from src.config.zoo import ZooEntry
from src.core.layout import VAL_PREDICTIONS
from src.core.tasks import SEGMENTATION

logger = logging.getLogger(__name__)


# Hooks whose job is to switch to the model's own COCO pipeline late in training; our pipeline
# replaces that one, so they would silently swap the user's augmentations back.
_PIPELINE_SWITCH_HOOKS = {"PipelineSwitchHook", "YOLOXModeSwitchHook"}
# Top-level variables of mmdet's COCO base configs that would only mislead in the Editor.
_STALE_TOP_LEVEL_KEYS = (
    "data_root",
    "dataset_type",
    "train_pipeline_stage2",
    "img_scales",
    "tta_model",
    "tta_pipeline",
    "image_size",
    "batch_augments",
    "num_things_classes",
    "num_stuff_classes",
    "num_classes",
    "data_preprocessor",
    "backend_args",
    "checkpoint",
    "pretrained",
    "max_epochs",
    "base_lr",
    "interval",
    "stage2_num_epochs",
    "lang_model_name",
)


def build_config(
    base: Config,
    params: TrainParams,
    data: DatasetSpec,
    run: RunSpec,
    *,
    model_name: str,
    architecture: str,
    weights_url: str | None = None,
    min_input_size: int = 32,
) -> Config:
    """Compose a trainable config from a model's config (zoo or user) and the user's settings.

    ``min_input_size``: the smallest side the model takes (the zoo entry's); above 32, every image
    is padded to the full input size, so panoramas and tiny images reach it large enough.
    """
    problems = params.validate()
    if problems:
        raise ConfigError("; ".join(problems))
    cfg = Config(copy.deepcopy(base.to_dict()), filename=base.filename)
    is_segm = params.task == SEGMENTATION

    set_model(cfg, params)
    set_pipelines(cfg, params, is_segm, min_input_size)
    set_data(cfg, params, data, run, is_segm)
    set_schedule(cfg, params, model_name)
    _set_hooks(cfg, params)
    _set_visualizer(cfg)
    _set_weights(cfg, params, weights_url)
    for key in _STALE_TOP_LEVEL_KEYS:
        cfg.pop(key, None)
    cfg.randomness = dict(seed=params.seed, deterministic=False)
    cfg.default_scope = cfg.get("default_scope", "mmdet")
    cfg.launcher = "none"
    metadata = dict(
        model_name=model_name,
        architecture=architecture,
        min_input_size=min_input_size,
        task_type=params.task,
        project_id=data.project_id,
        project_name=data.project_name,
        classes=params.classes,
        train_params=jsonable(asdict(params)),
        # what the session sizes on the run's device before it trains (src.engine.autosize)
        auto_size=params.auto_sized,
    )
    apply_owned_settings(cfg, params, data, run, metadata=metadata)
    return cfg


COCO_METRICS = ("CocoMetric", "SlicedCocoMetric")  # mmdet's, and ours for sliced validation


def _set_tile_merging(evaluator: dict, sliced: bool, params: TrainParams) -> None:
    """A sliced validation set is scored on whole images: mmdet's ``CocoMetric`` becomes
    ``SlicedCocoMetric`` (src.engine.sliced_metric), which merges the tiles' predictions first;
    and back when slicing is off. Another metric the user chose is left alone."""
    if evaluator.get("type") not in COCO_METRICS:
        return
    if sliced:
        evaluator["type"] = "SlicedCocoMetric"
        evaluator.setdefault("merge_thr", 0.5)
        evaluator.setdefault("max_per_img", 1000)  # per whole image (src.engine.tile_merge)
    else:
        evaluator["type"] = "CocoMetric"
        for key in ("merge_thr", "max_per_img"):
            evaluator.pop(key, None)


def _set_prediction_files(cfg: Config, work_dir: str | Path) -> None:
    evaluator = cfg.get("val_evaluator")
    if isinstance(evaluator, dict) and evaluator.get("type") in COCO_METRICS:
        evaluator["outfile_prefix"] = str(Path(work_dir) / VAL_PREDICTIONS)


def apply_owned_settings(
    cfg: Config,
    params: TrainParams,
    data: DatasetSpec,
    run: RunSpec,
    *,
    metadata: dict[str, Any] | None = None,
) -> Config:
    """Re-apply what the app must own on top of any config (an edited one too).

    Dataset locations and splits, the class count, the work dir and resume — nothing else of the
    user's text is touched. The run's description (``sly_metadata``: :class:`RunMetadata`, the
    config's own updated with the fields in ``metadata``) is (re)placed as the last key, because
    Supervisely's artifacts parser reads it from the last lines of ``config.py``.
    """
    set_num_classes(cfg.model, len(params.classes))
    for split, loader_key in (("train", "train_dataloader"), ("val", "val_dataloader")):
        loader = cfg.get(loader_key)
        if loader is None:
            raise ConfigError(f"the config has no {loader_key}")
        loader.dataset = dataset_cfg(loader.dataset, params, data, split, run)
    cfg.test_dataloader = copy.deepcopy(cfg.val_dataloader)
    cfg.test_dataloader.dataset = inference_dataset_cfg(cfg, params, data)
    gt_file = cfg.val_dataloader.dataset.coco_gt_file
    for key in ("val_evaluator", "test_evaluator"):
        evaluator = cfg.get(key)
        if isinstance(evaluator, dict):
            evaluator.ann_file = gt_file
            _set_tile_merging(evaluator, bool(cfg.val_dataloader.dataset.get("slicing")), params)
    _set_resumable_machinery(cfg)
    _set_prediction_files(cfg, run.work_dir)
    if Path(run.work_dir).resolve() != Path(cfg.get("work_dir", run.work_dir)).resolve():
        logger.warning("work_dir %r in the config is replaced by %s", cfg.work_dir, run.work_dir)
    cfg.work_dir = run.work_dir
    cfg.resume = bool(run.resume_from)
    if run.resume_from:
        cfg.load_from = run.resume_from
    # Serve MMDetection 3.0 reads cfg.dataset_type (anything but its own SuperviselyDatasetSplit:
    # the classes then come from the checkpoint's dataset_meta) and
    # sly_metadata.architecture_name (see tests/runs/test_serving_contract.py)
    cfg.dataset_type = "SuperviselyDataset"
    return RunMetadata.of(cfg).updated(**(metadata or {})).write(cfg)


def relocate_run(
    cfg: Config, work_dir: str | Path, project_dir: str | Path, cache_dir: str | None = None
) -> Config:
    """Point a run's config at where its folder and project are now (another machine, a new app
    session). Nothing that changes training is touched."""
    work_dir = Path(work_dir)
    cfg.work_dir = str(work_dir)
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        dataset = (cfg.get(key) or {}).get("dataset")
        if isinstance(dataset, dict) and dataset.get("type") == "ClassBalancedDataset":
            dataset = dataset.get("dataset")
        if not isinstance(dataset, dict) or "project_dir" not in dataset:
            continue  # not a dataset of ours (the inference dataset reads nothing)
        dataset["project_dir"] = str(project_dir)
        if cache_dir is not None:
            dataset["cache_dir"] = cache_dir
        if dataset.get("coco_gt_file"):
            dataset["coco_gt_file"] = str(work_dir / Path(dataset["coco_gt_file"]).name)
    gt_file = (cfg.get("val_dataloader") or {}).get("dataset", {}).get("coco_gt_file")
    for key in ("val_evaluator", "test_evaluator"):
        evaluator = cfg.get(key)
        if isinstance(evaluator, dict) and gt_file:
            evaluator["ann_file"] = gt_file
    if (cfg.get("val_evaluator") or {}).get("outfile_prefix"):
        _set_prediction_files(cfg, work_dir)
    return cfg


def _set_resumable_machinery(cfg: Config) -> None:
    """The loop, sampler and checkpoint writer that make stop-anywhere/resume-exactly work.

    A mid-epoch resume needs the sampler to skip what was trained; a crash must never leave a
    half-written checkpoint. Other loop types (iteration-based) are left as the user wrote them.
    """
    train_cfg = cfg.get("train_cfg") or {}
    if train_cfg.get("type", "EpochBasedTrainLoop") in ("EpochBasedTrainLoop", None):
        train_cfg["type"] = "ResumableEpochBasedTrainLoop"
        train_cfg.pop("by_epoch", None)
        cfg.train_cfg = train_cfg
    sampler = cfg.train_dataloader.get("sampler") or {}
    if sampler.get("type", "DefaultSampler") == "DefaultSampler":
        cfg.train_dataloader.sampler = dict(sampler, type="SkippableSampler")
    checkpoint_hook = (cfg.get("default_hooks") or {}).get("checkpoint")
    if isinstance(checkpoint_hook, dict):
        checkpoint_hook["backend_args"] = {"backend": "atomic_local"}


def _set_hooks(cfg: Config, params: TrainParams) -> None:
    hooks = cfg.get("default_hooks") or {}
    save_best = f"coco/{primary_metric(params.task)}" if params.save_best else None
    hooks["checkpoint"] = dict(
        type="CheckpointHook",
        interval=params.checkpoint_interval,
        by_epoch=True,
        max_keep_ckpts=params.keep_checkpoints,
        save_last=params.save_last,
        save_best=save_best,
        rule="greater" if save_best else None,
    )
    hooks["logger"] = dict(type="LoggerHook", interval=params.log_interval)
    cfg.default_hooks = hooks
    custom = [
        h for h in cfg.get("custom_hooks") or [] if h.get("type") not in _PIPELINE_SWITCH_HOOKS
    ]
    if params.early_stopping_patience > 0:
        custom.append(
            dict(
                type="EarlyStoppingHook",
                monitor=f"coco/{primary_metric(params.task)}",
                rule="greater",
                patience=params.early_stopping_patience,
                min_delta=params.early_stopping_min_delta,
            )
        )
    cfg.custom_hooks = custom
    cfg.log_processor = dict(type="LogProcessor", window_size=params.log_interval, by_epoch=True)


def _set_visualizer(cfg: Config) -> None:
    """Every run logs its scalars twice: ``vis_data/scalars.json`` (mmengine's local backend: the
    charts, resume and the artifacts read it) and TensorBoard event files beside it (uploaded
    under ``logs/``)."""
    visualizer = cfg.get("visualizer") or dict(type="DetLocalVisualizer", name="visualizer")
    backends = [b for b in visualizer.get("vis_backends") or [] if isinstance(b, dict)]
    for kind in ("LocalVisBackend", "TensorboardVisBackend"):
        if not any(b.get("type") == kind for b in backends):
            backends.append(dict(type=kind))
    visualizer["vis_backends"] = backends
    cfg.visualizer = visualizer


def _set_weights(cfg: Config, params: TrainParams, weights_url: str | None) -> None:
    if params.weights == "pretrained":
        if not weights_url:
            raise ConfigError("this model has no pretrained weights: train it from scratch")
        cfg.load_from = weights_url
    elif params.weights == "custom":
        cfg.load_from = params.weights_path
    else:
        cfg.load_from = None


def compose_from_zoo(
    entry: ZooEntry, params: TrainParams, data: DatasetSpec, run: RunSpec
) -> Config:
    """The usual path: a zoo model + the user's settings → trainable config."""
    return build_config(
        load_base_config(entry),
        params,
        data,
        run,
        model_name=entry.model,
        architecture=entry.architecture,
        weights_url=entry.weights_url,
        min_input_size=entry.min_input_size,
    )
