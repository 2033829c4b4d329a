"""The model part of a composed config: the zoo model's own config, its heads set to the run's
classes, weights only from ``load_from`` (no download at build), a distillation teacher inlined,
the validation's detection limits, frozen stages; and the size the model was tested at.

Apart from ``compose`` because each family of mmdet's models needs its own fix here, and these
grow with the zoo, not with the app's settings.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from mmengine.config import Config

from src.config.input_shapes import ensure_stride_padding
from src.config.params import TrainParams
from src.config.zoo import ZooEntry
from src.core.tasks import SEGMENTATION


def load_base_config(entry: ZooEntry) -> Config:
    """The zoo model's own config, loaded by file path from the installed mmdet.

    By path, not by ``mmdet::`` scope: mmengine resolves scopes through ``pkg_resources``, which
    current setuptools no longer ships.
    """
    return Config.fromfile(str(entry.config_path))


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


def set_model(cfg: Config, params: TrainParams) -> None:
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
    set_test_limits(model, params.max_per_img, params.score_thr)
    if params.frozen_stages is not None:  # whether the backbone has it: src.setup.prepare checks
        model.backbone["frozen_stages"] = params.frozen_stages


def set_test_limits(model: dict, max_per_img: int | None, score_thr: float | None) -> None:
    """Detections per image and their minimum score at validation (None: the model's own),
    where each head family reads them: a two-stage or cascade detector's ``test_cfg.rcnn``, else
    ``test_cfg`` itself (one-stage heads; DETR-like heads read only ``max_per_img``). The audit
    lowers a run's score this way to see every box (src.audit.predict)."""
    if max_per_img is None and score_thr is None:
        return
    test_cfg = model.get("test_cfg")
    if test_cfg is None:
        test_cfg = model["test_cfg"] = {}
    target = test_cfg.get("rcnn") if isinstance(test_cfg.get("rcnn"), dict) else test_cfg
    if max_per_img is not None:
        target["max_per_img"] = max_per_img
    if score_thr is not None:
        target["score_thr"] = score_thr


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
