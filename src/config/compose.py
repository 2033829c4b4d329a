"""Compose the mmengine config that trains: zoo entry (or user text) + TrainParams + dataset.

Pure functions: nothing here reads the environment, touches the network or starts training.
:func:`apply_owned_settings` re-applies only what the app must own (dataset paths, class count,
work dir, resume) on top of a user's edited text.
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mmengine.config import Config

from src.config.augmentations import augmentation_transforms
from src.config.input_shapes import ensure_stride_padding
from src.config.metadata import RunMetadata
from src.config.params import ConfigError, DatasetSpec, RunSpec, TrainParams, jsonable
from src.config.primary_metric import primary_metric
from src.config.schedule import set_schedule
from src.config.zoo import ZooEntry
from src.core.layout import VAL_PREDICTIONS, coco_gt_file
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
# Transforms whose output the heads of some models read (CenterNet/CornerNet need "border").
_KEEP_MODEL_TEST_PIPELINE_IF = {"RandomCenterCropPad"}


def load_base_config(entry: ZooEntry) -> Config:
    """The zoo model's own config, loaded by file path from the installed mmdet.

    By path, not by ``mmdet::`` scope: mmengine resolves scopes through ``pkg_resources``, which
    current setuptools no longer ships.
    """
    return Config.fromfile(str(entry.config_path))


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

    _set_model(cfg, params)
    _set_pipelines(cfg, params, is_segm, min_input_size)
    _set_data(cfg, params, data, run, is_segm)
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
        loader.dataset = _dataset_cfg(loader.dataset, params, data, split, run)
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


# what mmdet's inferencers need of a test dataset (its classes, palette and pipeline), in a type
# mmdet registers, so that a run loads where no code of this app is importable
INFERENCE_DATASET = "CocoDataset"
GREY = (128, 128, 128)  # a class the project has no colour for


def class_palette(classes: list[str], colors: dict[str, tuple[int, int, int]]) -> list[tuple]:
    """The run's palette in label order: the project's class colours (the training dataset's
    metainfo and the inference dataset's, one rule)."""
    return [tuple(colors.get(c, GREY)) for c in classes]


def inference_dataset_cfg(cfg: Config, params: TrainParams, data: DatasetSpec) -> dict:
    """The config's test dataset: what ``init_detector``, ``DetInferencer`` (and SAHI, which
    wraps it) build with their default ``palette='none'`` for the metainfo, lazily (no file
    read), and whose pipeline they run: mmdet's own dataset type carrying the run's classes and
    the project's colours, with the validation's pipeline. The app itself never builds it: its
    validation and predictions use ``val_dataloader`` (``engine/predict.py`` copies that)."""
    colors = data.class_colors or {}
    return dict(
        type=INFERENCE_DATASET,
        metainfo=dict(
            classes=tuple(params.classes),
            palette=class_palette(list(params.classes), colors),
        ),
        data_root="",
        ann_file="",
        data_prefix=dict(img=""),
        test_mode=True,
        pipeline=copy.deepcopy(cfg.val_dataloader.dataset.get("pipeline") or []),
    )


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


def set_num_classes(model: dict, num_classes: int) -> None:
    """Set the class count in every head of a model config, however deeply nested.

    ``num_classes`` anywhere (except the class-agnostic RPN), ``num_things_classes`` /
    ``num_stuff_classes`` (Mask2Former, MaskFormer: all things, no stuff) and per-class loss
    weights (``class_weight`` of length classes + 1: background keeps its weight).
    """

    def walk(node: Any, parent_key: str | None) -> None:
        if isinstance(node, dict):
            if parent_key == "rpn_head":
                return
            if "num_things_classes" in node:
                node["num_things_classes"] = num_classes
                node["num_stuff_classes"] = 0
            if "num_classes" in node:
                old = node["num_classes"]
                node["num_classes"] = num_classes
                loss_cls = node.get("loss_cls")
                if isinstance(loss_cls, dict) and isinstance(loss_cls.get("class_weight"), list):
                    weights = loss_cls["class_weight"]
                    if len(weights) == (old or 0) + 1:
                        loss_cls["class_weight"] = [1.0] * num_classes + [weights[-1]]
            for key, value in node.items():
                walk(value, key)
            # heads that carry class weights without a num_classes key of their own
            if "num_things_classes" in node and isinstance(node.get("loss_cls"), dict):
                weights = node["loss_cls"].get("class_weight")
                if isinstance(weights, list):
                    node["loss_cls"]["class_weight"] = [1.0] * num_classes + [weights[-1]]
        elif isinstance(node, list | tuple):
            for value in node:
                walk(value, parent_key)

    walk(model, None)


def _set_model(cfg: Config, params: TrainParams) -> None:
    model = cfg.model
    preprocessor = model.get("data_preprocessor")
    if isinstance(preprocessor, dict) and preprocessor.get("batch_augments"):
        # BatchFixedSizePad / BatchSyncRandomResize assume COCO-sized inputs and large batches.
        preprocessor.pop("batch_augments")
    # Every batch of every pipeline padded to the stride the neck needs (input_shapes):
    # the zoo's own fixed-size Pad steps are COCO-specific and our pipelines replace them.
    ensure_stride_padding(model, with_masks=params.task == SEGMENTATION)
    # HTC / SCNet: the semantic branch needs stuff segmentation ground truth we do not have.
    roi_head = model.get("roi_head")
    if isinstance(roi_head, dict):
        for key in ("semantic_roi_extractor", "semantic_head"):
            roi_head.pop(key, None)
    # Weights come from load_from (or nowhere): a backbone "Pretrained" init would download.
    _strip_pretrained_init(model)
    model.pop("pretrained", None)
    _set_teacher(model, params)
    _set_test_limits(model, params)
    if params.frozen_stages is not None:  # whether the backbone has it: src.app.prepare checks
        model.backbone["frozen_stages"] = params.frozen_stages


def _set_test_limits(model: dict, params: TrainParams) -> None:
    """Detections per image and their minimum score at validation, where each head family
    reads them: a two-stage or cascade detector's ``test_cfg.rcnn``, else ``test_cfg`` itself
    (one-stage heads; DETR-like heads read only ``max_per_img``)."""
    if params.max_per_img is None and params.score_thr is None:
        return
    test_cfg = model.get("test_cfg")
    if test_cfg is None:
        test_cfg = model["test_cfg"] = {}
    target = test_cfg.get("rcnn") if isinstance(test_cfg.get("rcnn"), dict) else test_cfg
    if params.max_per_img is not None:
        target["max_per_img"] = params.max_per_img
    if params.score_thr is not None:
        target["score_thr"] = params.score_thr


def _set_teacher(model: dict, params: TrainParams) -> None:
    """Distillation models (LD, LAD): inline the teacher's config; its weights only if pretrained.

    mmdet names LD's teacher by a path relative to its source tree, which does not exist in an
    installed package: the teacher's model config is read from the installed mmdet and inlined,
    so the composed config stays self-contained. From scratch, the COCO teacher checkpoint (a
    download) is dropped.
    """
    teacher = model.get("teacher_config")
    if isinstance(teacher, str):
        from src.config.zoo import mmdet_configs_dir

        path = Path(teacher)
        if not path.is_file():
            path = mmdet_configs_dir().parent / teacher
        teacher_model = Config.fromfile(str(path)).model.to_dict()
        _strip_pretrained_init(teacher_model)
        model["teacher_config"] = dict(model=teacher_model)
    if "teacher_ckpt" in model and params.weights != "pretrained":
        model["teacher_ckpt"] = None


def _strip_pretrained_init(node: Any) -> None:
    if isinstance(node, dict):
        init = node.get("init_cfg")
        # "Pretrained" inits, and inits that name a checkpoint without a type (PVT)
        if isinstance(init, dict) and (init.get("type") == "Pretrained" or "checkpoint" in init):
            node["init_cfg"] = None
        # old-style backbone weights, e.g. DetectoRS's rfp_backbone: "torchvision://resnet50"
        if isinstance(node.get("pretrained"), str):
            node["pretrained"] = None
        for value in node.values():
            _strip_pretrained_init(value)
    elif isinstance(node, list | tuple):
        for value in node:
            _strip_pretrained_init(value)


@functools.lru_cache(maxsize=256)
def native_input_size(entry: ZooEntry) -> tuple[int, int] | None:
    """The size the zoo model was tested at, as (longer, shorter) edge: the scale of its test
    pipeline's Resize (RTMDet 640x640, Faster R-CNN 1333x800, SSD 300x300). None where the
    config cannot be read here (a model that needs a package this machine lacks) or has no
    Resize. The UI proposes it when a model is picked; the CLI takes it as
    ``--input-size model``."""
    try:
        cfg = load_base_config(entry)
    except Exception:  # e.g. ImportError of mmpretrain for ConvNeXt: no size to propose
        return None
    pipeline = cfg.get("test_dataloader", {}).get("dataset", {}).get("pipeline") or []
    for step in pipeline:
        scale = step.get("scale") if step.get("type") == "Resize" else None
        if isinstance(scale, list | tuple) and len(scale) == 2:
            return max(int(v) for v in scale), min(int(v) for v in scale)
        if isinstance(scale, int):
            return scale, scale
    return None


def _fixed_input_size(model_test_pipeline: list[dict]) -> bool:
    """Whether the zoo model resizes to an exact size (SSD: its last layers need the full input
    size on both sides, which keep-ratio resizing of a 16:9 photo does not give)."""
    return any(
        t.get("type") == "Resize" and t.get("keep_ratio") is False for t in model_test_pipeline
    )


def train_pipeline(
    params: TrainParams, *, keep_ratio: bool = True, pad_to_input: bool = False
) -> list[dict]:
    """The training pipeline: load, resize into the input size, the augmentations (preset or
    custom), optionally pad to the full input size, drop degenerate objects, pack. The
    augmentation preview runs the same list without the final packing."""
    size = tuple(int(v) for v in params.input_size)
    is_segm = params.task == SEGMENTATION
    return [
        dict(type="LoadImageFromFile"),
        _load_annotations(is_segm),
        dict(type="Resize", scale=size, keep_ratio=keep_ratio),
        *augmentation_transforms(params),
        *(_pad_to(size) if pad_to_input else []),
        dict(type="FilterAnnotations", min_gt_bbox_wh=(1, 1), keep_empty=False, by_mask=is_segm),
        dict(type="PackDetInputs"),
    ]


def _load_annotations(is_segm: bool) -> dict:
    """Only what the task loads: SAHI takes a config whose train pipeline has any
    ``*mask*=True`` key (mmdet's default ``poly2mask=True`` written out) for a mask model."""
    return dict(type="LoadAnnotations", with_bbox=True, **({"with_mask": True} if is_segm else {}))


def _pad_to(size: tuple[int, ...]) -> list[dict]:
    """Pad every image to the full input size (grey, as mmdet's YOLO-style pipelines do)."""
    return [dict(type="Pad", size=size, pad_val=dict(img=(114, 114, 114)))]


def _set_pipelines(cfg: Config, params: TrainParams, is_segm: bool, min_input_size: int) -> None:
    size = tuple(int(v) for v in params.input_size)
    model_test = cfg.get("test_dataloader", {}).get("dataset", {}).get("pipeline") or []
    keep_ratio = not _fixed_input_size(model_test)
    # Models with a smallest side (SSD, DDOD, DINO) see the full input size on both sides: a
    # panorama or a crop would otherwise reach them too small. Every step before it yields at
    # most the input size (keep-ratio resize into it; crops to it), as Pad(size) requires.
    pad_to_input = min_input_size > 32 or not keep_ratio
    train = train_pipeline(params, keep_ratio=keep_ratio, pad_to_input=pad_to_input)
    if any(t.get("type") in _KEEP_MODEL_TEST_PIPELINE_IF for t in model_test):
        test_pipeline = _resized_model_test_pipeline(model_test, size)
    else:
        test_pipeline = [
            dict(type="LoadImageFromFile"),
            dict(type="Resize", scale=size, keep_ratio=keep_ratio),
            *(_pad_to(size) if pad_to_input else []),
            _load_annotations(is_segm),
            dict(
                type="PackDetInputs",
                meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor"),
            ),
        ]
    cfg.train_pipeline = train
    cfg.test_pipeline = test_pipeline


def _resized_model_test_pipeline(model_test: list[dict], size: tuple[int, ...]) -> list[dict]:
    """The model's own test pipeline (CenterNet/CornerNet: their heads read its padding border),
    resized to the input size first: their zoo pipelines test at the original size, and a 4K
    photo then takes minutes on Hourglass-104. Their heads undo the border and the scale factor,
    which is packed for that."""
    pipeline = copy.deepcopy(model_test)
    if any(t.get("type") == "Resize" for t in pipeline):
        return pipeline
    pipeline.insert(1, dict(type="Resize", scale=size, keep_ratio=True))
    for step in pipeline:
        keys = step.get("meta_keys") if step.get("type") == "PackDetInputs" else None
        if keys is not None and "scale_factor" not in keys:
            step["meta_keys"] = (*keys, "scale_factor")
    return pipeline


def _split_kwargs(data: DatasetSpec, split: str) -> dict[str, Any]:
    return {
        "datasets": data.train_datasets if split == "train" else data.val_datasets,
        "items": data.train_items if split == "train" else data.val_items,
    }


def _dataset_cfg(
    old: dict | None, params: TrainParams, data: DatasetSpec, split: str, run: RunSpec
) -> dict:
    """Our dataset for one split; keeps the pipeline of the given loader config, and for the
    train split mmdet's ``ClassBalancedDataset`` around it when the config has one (class
    balance: the settings put it there, or the user's text does). Other wrappers are dropped.

    The wrapper carries ``selected_classes`` too: the serving app reads the run's classes from
    ``train_dataloader.dataset.selected_classes`` (``src.engine.patches`` lets the wrapper take
    it)."""
    pipeline = (old or {}).get("pipeline")
    inner = old
    if old and old.get("type") in {"RepeatDataset", "ClassBalancedDataset", "MultiImageMixDataset"}:
        inner = old.get("dataset") or {}
        pipeline = inner.get("pipeline") or pipeline
    ours = _our_dataset_cfg(pipeline, params, data, split, run)
    # slicing is the text's own once it names our dataset (an Editor edit is kept, as the class
    # balance wrapper is); a config composed from the settings gets theirs
    slicing = (
        inner.get("slicing") if inner and inner.get("type") == ours["type"] else params.slicing
    )
    if slicing:
        ours["slicing"] = dict(slicing)
    if split == "train" and old and old.get("type") == "ClassBalancedDataset":
        return dict(
            type="ClassBalancedDataset",
            oversample_thr=float(old.get("oversample_thr", params.class_balance)),
            selected_classes=list(params.classes),
            # a copy of the train pipeline, ignored by the dataset (``engine/patches.py``): SAHI
            # reads a wrapper's own ``pipeline`` to tell a mask model
            pipeline=copy.deepcopy(ours["pipeline"]),
            dataset=ours,
        )
    return ours


def train_dataset_cfg(cfg: Any) -> dict:
    """The run's own train dataset config: inside the class-balance wrapper when it has one."""
    dataset = cfg.train_dataloader.dataset
    return dataset.dataset if dataset.get("type") == "ClassBalancedDataset" else dataset


def _our_dataset_cfg(
    pipeline: list | None, params: TrainParams, data: DatasetSpec, split: str, run: RunSpec
) -> dict:
    return dict(
        type="SuperviselyDataset",
        project_dir=str(data.project_dir),
        task=params.task,
        classes=list(params.classes),
        keep_empty_images=data.keep_empty_images if split == "train" else True,
        cache_dir=data.cache_dir,
        coco_gt_file=str(coco_gt_file(run.work_dir, split)) if split == "val" else None,
        selected_classes=list(params.classes),  # where the serving app reads them
        test_mode=split != "train",
        pipeline=pipeline or [],
        **_split_kwargs(data, split),
        **({"ignore_regions": list(params.ignore)} if params.ignore else {}),
    )


def val_loader_workers(train_workers: int) -> int:
    """The validation loader's workers for ``train_workers`` in the training loader: half,
    rounded up. Validation runs between epochs and its persistent workers idle the rest of the
    run, each holding a copy of the dataset (8 more processes per GPU at the cap); its pipeline
    has no augmentation, and the network's forward pass alone is fed by fewer."""
    return (train_workers + 1) // 2


def _set_data(
    cfg: Config, params: TrainParams, data: DatasetSpec, run: RunSpec, is_segm: bool
) -> None:
    workers = params.workers
    pin = params.on_cuda  # page-locked batches copy to the GPU asynchronously
    cfg.train_dataloader = dict(
        batch_size=params.batch,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=pin,
        sampler=dict(type="DefaultSampler", shuffle=True),
        dataset=dict(pipeline=cfg.train_pipeline),
    )
    if params.class_balance > 0:  # mmdet's repeat-factor sampling, as mmdet spells it
        cfg.train_dataloader.dataset = dict(
            type="ClassBalancedDataset", oversample_thr=params.class_balance,
            dataset=cfg.train_dataloader.dataset,
        )  # fmt: skip
    cfg.val_dataloader = dict(
        batch_size=params.val_batch_size,
        num_workers=val_loader_workers(workers),
        persistent_workers=workers > 0,
        pin_memory=pin,
        drop_last=False,
        sampler=dict(type="DefaultSampler", shuffle=False),
        dataset=dict(pipeline=cfg.test_pipeline),
    )
    metric = ["bbox", "segm"] if is_segm else ["bbox"]
    cfg.val_evaluator = dict(type="CocoMetric", metric=metric, classwise=True, format_only=False)
    cfg.test_evaluator = copy.deepcopy(cfg.val_evaluator)


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


def val_split_args(cfg: Any) -> dict[str, Any]:
    """The validation dataset's arguments, as the run trained with them."""
    dataset = cfg.val_dataloader.dataset
    keys = ("project_dir", "datasets", "items", "keep_empty_images", "cache_dir", "task")
    return {k: dataset.get(k) for k in keys} | {
        "classes": list(dataset.classes), "ignore": list(dataset.get("ignore_regions") or []),
    }  # fmt: skip
