"""The Supervisely project as an mmdet dataset: ``SuperviselyDataset`` (registry name unchanged).

Importing this module imports mmdet and registers the dataset; the project reader it wraps
(:mod:`src.data.reader`) does not, so the UI and the project model stay free of mmdet.
"""

from __future__ import annotations

import logging
import os
import pickle
from typing import Any

import numpy as np
import torch
from mmdet.datasets import BaseDetDataset
from mmdet.registry import DATASETS

from src.config.compose_data import class_palette
from src.config.pipeline import transform_types
from src.core.tasks import DETECTION
from src.data.reader import (
    DatasetError,
    SplitStats,
    cache_key,
    class_colors,
    load_split,
    to_coco,
)
from src.data.sample_rng import SampleIndex, seeded
from src.data.tiles import Slicing, TileStats, cut_tiles, load_tiled_split
from src.runs.atomic_files import write_json_atomic

logger = logging.getLogger(__name__)


@DATASETS.register_module(name="SuperviselyDataset", force=True)
class SuperviselyDataset(BaseDetDataset):
    """A split of a local Supervisely project as an mmdet detection dataset.

    Args:
        project_dir: the project (``meta.json`` + datasets with ``ann/`` and ``img/``).
        classes: class names in label order; objects of other classes are ignored.
        task: ``object-detection`` (boxes) or ``instance-segmentation`` (boxes + masks;
            rectangles have no mask and are skipped, counted).
        datasets: dataset full names to read (``parent/child`` for nested); None: all.
        items: ``dataset/item_name`` entries to read; None: every item of ``datasets``.
        keep_empty_images: keep images without objects (as negatives) or drop them.
        cache_dir: where parsed splits are cached; None: no cache.
        coco_gt_file: where to write this split's COCO ground truth for ``CocoMetric``.
        selected_classes: the same names as ``classes``; Supervisely's serving app reads the
            class list of a custom model from ``train_dataloader.dataset.selected_classes``.
        ignore_regions: class or tag names whose objects are ignore regions
            (``src.data.reader.read_instances``).
        slicing: cut the images into overlapping tiles (``src.data.tiles.Slicing``'s fields;
            None: whole images). The COCO ground truth stays the whole images' and names each
            tile's image and offset (``tiles``) for ``SlicedCocoMetric``. A split that would
            make more tiles, or bytes of tile files, than its ``max_tiles`` / ``max_gb`` is
            refused (``DatasetError``, with the numbers) before anything is cut.
    """

    def __init__(
        self,
        project_dir: str,
        classes: list[str],
        task: str = DETECTION,
        datasets: list[str] | None = None,
        items: list[str] | None = None,
        keep_empty_images: bool = True,
        cache_dir: str | None = None,
        coco_gt_file: str | None = None,
        selected_classes: list[str] | None = None,
        ignore_regions: list[str] | None = None,
        slicing: dict | None = None,
        **kwargs: Any,
    ) -> None:
        if not classes:
            raise DatasetError("no classes selected: choose at least one class to train on")
        if selected_classes is not None and list(selected_classes) != list(classes):
            raise DatasetError(
                f"selected_classes {list(selected_classes)} differ from classes "
                f"{list(classes)}: they name the same labels, in the same order"
            )
        self.project_dir = project_dir
        self.task = task
        self.datasets = datasets
        self.items = items
        self.keep_empty_images = keep_empty_images
        self.cache_dir = cache_dir
        self.coco_gt_file = coco_gt_file
        self.ignore_regions = list(ignore_regions or [])
        try:
            self.slicing = Slicing.of(slicing)
        except (TypeError, ValueError) as exc:
            raise DatasetError(str(exc)) from None
        self.tile_stats: TileStats | None = None
        self._cuts: dict[str, tuple[str, list[list[int]]]] = {}
        self.stats = SplitStats()
        colors = class_colors(project_dir)
        metainfo = {
            "classes": tuple(classes),
            "palette": class_palette(list(classes), colors),
        }
        kwargs.setdefault("filter_cfg", None)
        super().__init__(metainfo=metainfo, **kwargs)

    def __getitem__(self, idx: int) -> Any:
        """A training sample indexed by the train sampler's ``SampleIndex`` is augmented with
        the generators seeded from (seed, epoch, index) — the same draws in any worker, with any
        number of workers, resumed or not (``src.data.sample_rng``); mmengine's re-fetch of a
        sample the pipeline dropped draws its replacement from them too."""
        if isinstance(idx, SampleIndex):
            in_worker = torch.utils.data.get_worker_info() is not None
            with seeded(idx.seed, idx.epoch, idx.draw, restore=not in_worker):
                return super().__getitem__(int(idx))
        return super().__getitem__(idx)

    def prepare_data(self, idx: int) -> Any:
        info = self.get_data_info(idx)
        self.ensure_image(info)
        return self.pipeline(info)

    def ensure_image(self, info: dict) -> None:
        """A tile whose file is not written yet is cut now, with its image's other tiles
        (``src.data.tiles.cut_tiles``): the first epoch cuts, the next ones read. Whoever runs
        an item of the data list through the pipeline calls it first."""
        source = info.get("source_path")
        if source and source in self._cuts and not os.path.isfile(info["img_path"]):
            cut_tiles(source, *self._cuts[source])

    def _serialize_data(self) -> tuple[np.ndarray, np.ndarray]:
        """mmengine's packing of the data list into one buffer (workers then share it
        instead of copying Python objects), minus its ``gc.collect()``: a full collection in
        a process holding torch and mmdet holds the GIL for about 200 ms, which froze the
        app's page and HTTP API twice at the start of every run (bench/ui_latency.py). The
        list's plain dicts hold no cycles: clearing it frees them."""
        packed = [
            np.frombuffer(pickle.dumps(info, protocol=4), dtype=np.uint8) for info in self.data_list
        ]
        address = np.cumsum(np.asarray([len(x) for x in packed], dtype=np.int64))
        data_bytes = np.concatenate(packed) if packed else np.zeros(0, dtype=np.uint8)
        self.data_list.clear()
        return data_bytes, address

    def get_cat_ids(self, idx: int) -> list[int]:
        """The labels of an image's objects, its ignore regions left out: what class balance
        (mmdet's ``ClassBalancedDataset``) counts an image's classes by."""
        instances = self.get_data_info(idx)["instances"]
        return [i["bbox_label"] for i in instances if not i.get("ignore_flag")]

    def load_data_list(self) -> list[dict]:
        classes = list(self.metainfo["classes"])
        data_list, self.stats = load_split(
            self.project_dir,
            classes,
            self.task,
            self.datasets,
            self.items,
            self.keep_empty_images,
            self.cache_dir,
            ignore=self.ignore_regions,
        )
        if self.stats.skipped:
            logger.warning(
                "%s: skipped objects: %s",
                self.project_dir,
                ", ".join(f"{n} x {reason}" for reason, n in sorted(self.stats.skipped.items())),
            )
        ground_truth = to_coco(data_list, classes) if self.coco_gt_file else None
        if self.slicing is not None:
            key = cache_key(
                self.project_dir, classes, self.task, self.datasets, self.items,
                self.keep_empty_images, self.ignore_regions,
            )  # fmt: skip
            tiled = load_tiled_split(
                data_list, self.slicing, self.cache_dir, key, train=not self.test_mode
            )
            self.tile_stats, self._cuts, data_list = tiled.stats, tiled.cuts, tiled.data_list
            if ground_truth is not None:
                ground_truth["tiles"] = {str(k): v for k, v in tiled.sources.items()}
        if ground_truth is not None:
            write_json_atomic(ground_truth, self.coco_gt_file)
        return data_list


def transform_problems(steps: list[dict]) -> list[str]:
    """Why transforms of a custom augmentation pipeline cannot be built (empty: all can): a type
    that is not a registered transform, or arguments its class does not take. Looked up in
    mmdet's registry and its parents (mmcv registers into mmengine's), as the run's pipeline is,
    but never through mmengine's fallback that imports an unknown name: nothing a pipeline names
    is imported or called unless it is a registered transform (nested ones included)."""
    from mmdet.registry import TRANSFORMS

    problems = []
    for n, step in enumerate(steps, start=1):
        kind = step.get("type")
        unknown = _unregistered_types(step, TRANSFORMS)
        if unknown:
            which = f"({kind})" if unknown[0] == kind else f"({kind}): its {unknown[0]!r}"
            problems.append(
                f"transform {n} {which} is not an mmdet or mmcv transform: check the name "
                "(case matters), e.g. RandomFlip, RandomResize, PhotoMetricDistortion"
            )
            continue
        try:
            TRANSFORMS.build(dict(step))
        except Exception as exc:  # the transform's own check of its arguments
            why = str(exc) or "an argument is not of the type or in the range it takes"
            problems.append(f"transform {n} ({kind}): {type(exc).__name__}: {why}")
    return problems


# Transforms whose nested ``type``s are not registered transforms (Albu's name albumentations
# classes, looked up in that package alone).
_FOREIGN_NESTED_TYPES = frozenset({"Albu"})


def _unregistered_types(step: dict, registry) -> list[object]:
    """The ``type`` names in a transform, nested transforms included, that no registry from
    ``registry`` up to its root has registered."""
    return [
        kind for kind in transform_types(step, opaque=_FOREIGN_NESTED_TYPES)
        if not _is_registered(kind, registry)
    ]  # fmt: skip


def _is_registered(kind: object, registry) -> bool:
    if not isinstance(kind, str):
        return False
    while registry is not None:
        registry.import_from_location()  # what ``get`` does first: registers lazily
        if kind in registry.module_dict:
            return True
        registry = registry.parent
    return False
