"""A prepared run's data, checked before it trains: both splits built as the run will build
them, what the user should know about them, and the dry run (datasets and model, no training).

Apart from ``prepare`` because it builds mmdet's datasets and model (slow, heavy imports), which
the request's own checks never need.
"""

from __future__ import annotations

import copy
from typing import Any

from mmengine.config import Config

from src.config.compose_data import train_dataset_cfg
from src.config.input_shapes import padding_problems
from src.config.params import CUSTOM_AUGMENTATION, ConfigError, TrainParams
from src.core.errors import RequestError
from src.core.tasks import SEGMENTATION
from src.data.geometry import BOX_GEOMETRIES, MASK_GEOMETRIES
from src.engine.shape_check import check_input_shapes
from src.setup.augment_preview import check_pipeline_on_an_image
from src.setup.prepare import Prepared


def build_datasets(prepared: Prepared) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Both splits as the run will build them (annotations parsed, through the cache, images
    checked on disk): ``(stats per split, datasets, problems)``. What fails here would fail the
    run later: an empty split, no object of the selected classes (e.g. a class whose objects
    are all points), a missing image."""
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    import src.data.mmdet_dataset  # noqa: F401  (registers SuperviselyDataset)

    init_default_scope(prepared.cfg.get("default_scope", "mmdet"))
    stats: dict[str, Any] = {}
    datasets: dict[str, Any] = {}
    problems: list[str] = []
    for split in ("train", "val"):
        # a check writes nothing into the run folder (the run writes its COCO ground truth)
        own = (
            train_dataset_cfg(prepared.cfg)
            if split == "train"
            else prepared.cfg.val_dataloader.dataset
        )
        dataset_cfg = {
            **own, "coco_gt_file": None,
            "serialize_data": False,  # a check: no packing for data-loader workers
        }  # fmt: skip
        try:
            dataset = DATASETS.build(dataset_cfg)
            stats[split] = dataset.stats.as_dict()
            if dataset.tile_stats is not None:
                stats[split]["slicing"] = dataset.tile_stats.as_dict() | {
                    "size": dataset.slicing.size, "overlap": dataset.slicing.overlap,
                }  # fmt: skip
            if len(dataset) == 0:
                problems.append(f"the {split} split has no images")
            elif dataset.stats.objects == 0:
                skipped = dict(dataset.stats.skipped)
                why = f" (skipped: {skipped})" if skipped else ""
                segm = prepared.params.task == SEGMENTATION
                problems.append(
                    f"the {split} split has no usable objects of the selected classes{why}: "
                    f"{prepared.params.task} needs shapes of type "
                    + ", ".join(MASK_GEOMETRIES if segm else BOX_GEOMETRIES)
                )
            else:
                datasets[split] = dataset
            if split == "train" and len(dataset):
                balance = class_balance_stats(prepared.cfg, dataset)
                if balance is not None:
                    stats[split]["class_balance"] = balance
        except Exception as exc:
            problems.append(f"{split} dataset: {exc}")
    if "train" in datasets and prepared.params.augmentation == CUSTOM_AUGMENTATION:
        try:  # a transform that builds may still fail on an image (wrong keys, sizes)
            check_pipeline_on_an_image(datasets["train"], prepared.params)
        except ConfigError as exc:
            problems.append(str(exc))
    return stats, datasets, problems


def class_balance_stats(cfg: Config, dataset: Any) -> dict[str, Any] | None:
    """With class balance (mmdet's ``ClassBalancedDataset`` around the train set): images per
    class before and after the repeats, and the images in all (None without it)."""
    wrapper = cfg.train_dataloader.dataset
    if wrapper.get("type") != "ClassBalancedDataset":
        return None
    from collections import Counter

    from mmengine.dataset import ClassBalancedDataset

    from src.engine import patches

    patches.apply()
    balanced = ClassBalancedDataset(dataset=dataset, oversample_thr=wrapper.oversample_thr)
    repeats = Counter(balanced.repeat_indices)
    classes = list(dataset.metainfo["classes"])
    before, after = Counter(), Counter()
    for index in range(len(dataset)):
        for label in set(dataset.get_cat_ids(index)):
            before[classes[label]] += 1
            after[classes[label]] += repeats[index]
    return {
        "oversample_thr": float(wrapper.oversample_thr),
        "images": [len(dataset), len(balanced)],
        "images_per_class": {c: [before[c], after[c]] for c in classes},
    }


def check_data(prepared: Prepared) -> None:
    """:func:`build_datasets`'s problems as a RequestError, before a run is started; what the
    user should know about the data (:func:`data_notes`) into ``prepared.notes``."""
    stats, _, problems = build_datasets(prepared)
    if problems:
        raise RequestError(problems)
    prepared.notes.extend(n for n in data_notes(prepared.params, stats) if n not in prepared.notes)


def data_notes(params: TrainParams, stats: dict[str, Any]) -> list[str]:
    """What trains but not as the user may think: a selected class without an object in the
    train split is trained on nothing (class balance cannot repeat images that do not exist)."""
    found = (stats.get("train") or {}).get("objects_per_class") or {}
    empty = [name for name in params.classes if not found.get(name)]
    if not found or not empty:
        return []
    balance = (
        f"; class balance ({params.class_balance:g}) repeats images that hold a class, and none "
        "holds them"
        if params.class_balance
        else ""
    )
    return [
        f"classes {', '.join(map(repr, empty))} have no objects in the train split: the model "
        f"cannot learn them{balance} (add examples, or leave them out of the classes)"
    ]


def _weights_line(params: TrainParams) -> str:
    if params.weights == "custom":
        return f"custom: {params.weights_path}"
    return "random (from scratch)" if params.weights == "scratch" else "pretrained (the zoo's)"


def _schedule_line(params: TrainParams) -> str:
    batch = "auto" if params.train_batch_size is None else params.train_batch_size
    return (
        f"{params.epochs} epochs, batch {batch}, {params.optimizer} lr {params.lr:g} "
        f"({params.scheduler}), input {params.input_size[0]}x{params.input_size[1]}, "
        f"seed {params.seed}"
    )


def dry_run(prepared: Prepared) -> dict[str, Any]:
    """Build both datasets and the model without training: what would train, and how big."""
    from mmdet.registry import MODELS

    from src.engine import patches

    patches.apply()
    summary: dict[str, Any] = {
        "run_id": prepared.run_id,
        "model": prepared.model_name,
        "task": prepared.params.task,
        "classes": list(prepared.params.classes),
        "split": prepared.split.description,
        "work_dir": str(prepared.work_dir),
        "weights": _weights_line(prepared.params),
        "schedule": _schedule_line(prepared.params),
    }
    stats, datasets, problems = build_datasets(prepared)
    summary.update(stats)
    model = None
    try:
        # a copy: some detectors (Deformable DETR) write into the config they are built from
        model = MODELS.build(copy.deepcopy(prepared.cfg.model))
        summary["parameters"] = sum(p.numel() for p in model.parameters())
    except Exception as exc:
        problems.append(f"model: {type(exc).__name__}: {exc}")
    padding = padding_problems(prepared.cfg)
    summary["warnings"] = padding + data_notes(prepared.params, stats)
    if model is not None and not problems:
        # the project's extreme images through the real pipelines and model, before any training
        checks = check_input_shapes(model, datasets)
        summary["input_shapes"] = [check.describe() for check in checks]
        failed = [check for check in checks if check.error]
        problems.extend(
            f"the model cannot take {check.split} image {check.item}: {check.describe()}"
            for check in failed
        )
        if failed:
            problems.extend(padding)  # the likely cause, with what to set
    if problems:
        raise RequestError(problems)
    return summary
