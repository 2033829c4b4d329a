"""The two tasks the app trains, spelled once: the app's own form (``object-detection``, in
TrainParams, the CLI, the API and ``sly_metadata``) and the platform's (``object detection``,
in ``experiment_info.json``'s ``task_type`` and the Model Benchmark)."""

from __future__ import annotations

DETECTION = "object-detection"
SEGMENTATION = "instance-segmentation"
TASKS = (DETECTION, SEGMENTATION)


def platform_task(task: str) -> str:
    """The platform's spelling of ``task`` (``instance segmentation``)."""
    return task.replace("-", " ")


def from_platform(task_type: str) -> str:
    """The app's spelling of a platform ``task_type`` (``instance-segmentation``)."""
    return task_type.replace(" ", "-")


PLATFORM_DETECTION = platform_task(DETECTION)
PLATFORM_SEGMENTATION = platform_task(SEGMENTATION)
