"""Augmentations: the presets of ``configs/augmentations.yaml`` and the user's own pipeline.

A custom pipeline is YAML or JSON text (JSON is YAML): a list of mmdet/mmcv transforms, each a
mapping with a ``type``, applied to a training image after it is resized to the input size and
before it is packed — the same place as a preset's. ``$input_size`` stands for the input size
the user chose, (longer, shorter) edge as mmdet's ``Resize`` scale takes it. This module checks
the text's shape only (pure); whether each transform exists and takes its arguments is checked
where mmdet is loaded (``src.data.mmdet_dataset.transform_problems``), and the result on a real
image by the preview.
"""

from __future__ import annotations

from typing import Any

import yaml

from src.config.params import CONFIGS_DIR, CUSTOM_AUGMENTATION, TrainParams
from src.config.pipeline import numbers_as_tuples, parse_pipeline
from src.core.errors import ConfigError


def presets() -> dict[str, list[dict]]:
    return yaml.safe_load((CONFIGS_DIR / "augmentations.yaml").read_text())


def preset_text(preset: str) -> str:
    """A preset as the YAML a user starts a custom pipeline from (one transform per line)."""
    steps = presets().get(preset) or []
    if not steps:
        return "[]  # no augmentation: add transforms, e.g. - {type: RandomFlip, prob: 0.5}\n"
    return yaml.safe_dump(steps, default_flow_style=None, sort_keys=False, width=100)


def augmentation_steps(augmentation: str, pipeline_text: str = "") -> list[dict]:
    """The transforms of a preset, or of the custom pipeline (with ``$input_size`` unreplaced)."""
    if augmentation == CUSTOM_AUGMENTATION:
        return parse_pipeline(pipeline_text)
    known = presets()
    if augmentation not in known:
        raise ConfigError(
            f"augmentation preset {augmentation!r} is unknown: use {', '.join(known)} or "
            f"{CUSTOM_AUGMENTATION}"
        )
    return [numbers_as_tuples(step) for step in known[augmentation] or []]


def augmentation_transforms(params: TrainParams) -> list[dict]:
    """The transforms a run with ``params`` applies after the resize, ``$input_size`` filled in
    (what the training pipeline, the preview and the request's check all use)."""
    return [
        substitute_input_size(t, params.input_size)
        for t in augmentation_steps(params.augmentation, params.augmentation_pipeline)
    ]


def substitute_input_size(node: Any, size: tuple[int, int]) -> Any:
    """``$input_size`` replaced by the input size, (longer, shorter) edge, everywhere in a
    transform."""
    if node == "$input_size":
        return tuple(size)
    if isinstance(node, dict):
        return {k: substitute_input_size(v, size) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute_input_size(v, size) for v in node]
    return node
