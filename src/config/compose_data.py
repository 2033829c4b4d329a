"""The data part of a composed config: the loaders, our dataset per split (and mmdet's class
balance wrapper), the evaluator, and the test dataset the inferencers build.

Apart from ``compose`` because the run's other readers (autosize, the evaluation, the export's
images, a resume) read these dataset configs back through the helpers here.
"""

from __future__ import annotations

import copy
from typing import Any

from mmengine.config import Config

from src.config.params import DatasetSpec, RunSpec, TrainParams
from src.core.layout import coco_gt_file

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


def _split_kwargs(data: DatasetSpec, split: str) -> dict[str, Any]:
    return {
        "datasets": data.train_datasets if split == "train" else data.val_datasets,
        "items": data.train_items if split == "train" else data.val_items,
    }


def dataset_cfg(
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


def set_data(
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


def val_split_args(cfg: Any) -> dict[str, Any]:
    """The validation dataset's arguments, as the run trained with them."""
    dataset = cfg.val_dataloader.dataset
    keys = ("project_dir", "datasets", "items", "keep_empty_images", "cache_dir", "task")
    return {k: dataset.get(k) for k in keys} | {
        "classes": list(dataset.classes), "ignore": list(dataset.get("ignore_regions") or []),
    }  # fmt: skip
