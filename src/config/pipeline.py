"""A custom augmentation pipeline's text checked for shape (pure): YAML or JSON, a list of
transforms named by plain identifiers, none that the app adds itself or that mixes images.
Below ``src.config.params`` (which checks a request's pipeline with it) and
``src.config.augmentations`` (which builds the pipelines)."""

from __future__ import annotations

import re
from typing import Any

import yaml

from src.core.errors import ConfigError

# Transforms the app puts in every training pipeline itself: twice would load or pack twice.
APP_OWNED_TRANSFORMS = {"LoadImageFromFile", "LoadAnnotations", "PackDetInputs"}
# Transforms that mix several images: they need ``mix_results`` from mmdet's
# MultiImageMixDataset, which the app's dataset is not (the cached variants work alone).
MULTI_IMAGE_TRANSFORMS = {"Mosaic": "CachedMosaic", "MixUp": "CachedMixUp", "CopyPaste": None}
# A transform's type is a registered name. mmengine's registry imports any dotted name it does not
# know (``type: os.system`` would be called with the step's arguments), so a pipeline, which is
# data and not code, may name nothing but plain identifiers (checked at every depth).
TRANSFORM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_pipeline(text: str) -> list[dict]:
    """The custom pipeline's transforms, or ConfigError saying what is wrong and where."""
    try:
        steps = yaml.safe_load(text) if text.strip() else []
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"the custom augmentation pipeline is not YAML/JSON: {problem}", line
        ) from None
    if steps is None:
        steps = []
    if not isinstance(steps, list):
        raise ConfigError(
            "the custom augmentation pipeline must be a list of transforms, e.g. "
            "[{type: RandomFlip, prob: 0.5}], got a " + type(steps).__name__
        )
    problems = []
    for n, step in enumerate(steps, start=1):
        kind = step.get("type") if isinstance(step, dict) else None
        if not isinstance(kind, str) or not kind:
            problems.append(f"transform {n} must be a mapping with a type, got {step!r}")
        elif not_names := _types_not_names(step):
            problems.append(
                f"transform {n}: type {not_names[0]!r} is not a transform's name (a custom "
                "pipeline names mmdet/mmcv transforms such as RandomFlip; Python objects belong "
                "in the config, which is code)"
            )
        elif kind in APP_OWNED_TRANSFORMS:
            problems.append(
                f"transform {n} ({kind}): the app adds image loading, annotations and packing "
                "itself; remove it"
            )
        elif kind in MULTI_IMAGE_TRANSFORMS:
            instead = MULTI_IMAGE_TRANSFORMS[kind]
            problems.append(
                f"transform {n} ({kind}) mixes several images, which needs mmdet's "
                "MultiImageMixDataset: "
                + (f"use {instead}, which works on its own" if instead else "not available here")
            )
    if problems:
        raise ConfigError("custom augmentation pipeline: " + "; ".join(problems))
    return [numbers_as_tuples(step) for step in steps]


def transform_types(node: Any, opaque: frozenset[str] = frozenset()) -> list[Any]:
    """Every ``type`` value in a transform, nested transforms included, in order; the
    contents of a transform whose type is in ``opaque`` are not entered."""
    found = []
    if isinstance(node, dict):
        if "type" in node:
            kind = node["type"]
            found.append(kind)
            if isinstance(kind, str) and kind in opaque:
                return found
        for key, value in node.items():
            if key != "type":
                found += transform_types(value, opaque)
    elif isinstance(node, list):
        for value in node:
            found += transform_types(value, opaque)
    return found


def _types_not_names(step: dict) -> list[Any]:
    """The ``type`` values of a transform (at every depth) that are not plain names: a dotted
    path, a number, a mapping."""
    return [
        kind for kind in transform_types(step)
        if not (isinstance(kind, str) and TRANSFORM_NAME.fullmatch(kind))
    ]  # fmt: skip


def numbers_as_tuples(node: Any) -> Any:
    """YAML and JSON have lists only, while mmdet's transforms check for tuples where they take
    a size or a range (``assert isinstance(img_scale, tuple)`` in CachedMosaic): a list of
    numbers becomes a tuple. Lists of strings, pairs or mappings stay lists (RandomFlip's
    directions, RandomChoiceResize's scales)."""
    if isinstance(node, dict):
        return {k: numbers_as_tuples(v) for k, v in node.items()}
    if isinstance(node, list):
        if node and all(isinstance(v, int | float) and not isinstance(v, bool) for v in node):
            return tuple(node)
        return [numbers_as_tuples(v) for v in node]
    return node
