"""The platform's own Model Benchmark report of a run, built as the SDK's ``TrainApp`` builds it.

On the platform ``TrainApp`` serves the trained model, lets the SDK's benchmark predict the
validation images into a predictions project, evaluates, renders the report with the SDK's
visualizer and uploads it; ``experiment_info.json`` then names it (``evaluation_report_id``,
``evaluation_report_link``). This app has already predicted those images (the evaluation after
training, ``src.evaluation.evaluate``, keeps them in ``evaluation/predictions.json``), so it uploads
them into the predictions project the benchmark would have made (same workspace, same name), and
from there follows ``TrainApp``'s steps with the SDK's own classes: the benchmark downloads both
projects and evaluates, uploads its results, the visualizer renders the report (with its
"differences" project) and uploads it, and the report's link is written beside the run.

What it costs: the predictions project (the validation images are added by id, not copied), the
visualizer's differences project, and the report's files under ``/model-benchmark/`` in Team
Files. Only the platform's entry runs it; a failure is a warning (the run and its offline report
stand).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.core.tasks import PLATFORM_DETECTION, PLATFORM_SEGMENTATION
from src.evaluation.evaluate import SDK_MAX_DETECTIONS, sdk_evaluation_params
from src.publish.platform_project import upload_items
from src.publish.workflow import APP_NAME

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlatformReport:
    report_id: int
    link: str  # absolute: the instance's address + /model-benchmark?id=...
    eval_dir: str  # Team Files folder of its evaluation and visualizations


def _image_ids(project_dir: Path, items: list[str]) -> dict[str, int]:
    """``dataset/path/name`` → the platform image id, from the downloaded project's ``img_info``
    (``src.data.project.download_project`` writes the SDK's layout, nested datasets included)."""
    from supervisely.project.project import Dataset

    ids = {}
    for item in items:
        *parents, dataset, name = item.split("/")
        folder = project_dir / Dataset._get_dataset_path(dataset, parents)
        info = json.loads((folder / "img_info" / f"{name}.json").read_text(encoding="utf-8"))
        ids[item] = int(info["id"])
    return ids


def build_platform_report(
    api: Any,
    team_id: int,
    task_id: int,
    *,
    project_id: int,
    project_dir: str | Path,
    predictions: dict[str, Any],
    segmentation: bool,
    model_name: str,
    checkpoint_name: str,
    remote_run_dir: str,
    work_dir: str | Path,
    speedtest: dict[str, Any] | None = None,
) -> PlatformReport:
    """The report of ``predictions`` (``evaluation/predictions.json``: ``{"meta": project meta
    JSON, "annotations": {"dataset/name": annotation JSON}, "ground_truth": {...}}``, the
    validation images') against project ``project_id``; its link file goes into
    ``remote_run_dir``. ``speedtest``: the run's speed test in the SDK's form
    (``evaluation/speedtest.json``), shown in the report's "Inference Speed" section. Raises on
    any failure (the caller warns), its projects removed."""
    import supervisely as sly

    meta = sly.ProjectMeta.from_json(predictions["meta"])  # its shapes, the scores' tag
    classes = [c.name for c in meta.obj_classes]
    ids = _image_ids(Path(project_dir), sorted(predictions["annotations"]))
    gt = api.project.get_info_by_id(project_id)
    created: list[Any] = []
    bm = None
    try:
        gt_id = project_id
        if _needs_conversion(api, project_id, classes, segmentation):
            converted = _converted_ground_truth(api, gt, meta, predictions, ids, segmentation)
            created.append(converted)
            gt_id, ids = converted.id, converted.ids
        max_dets = predictions.get("max_detections", SDK_MAX_DETECTIONS)
        bm = _benchmark(api, gt_id, ids, classes, segmentation, max_dets, work_dir)
        dt = _predictions_project(api, team_id, f"{gt.name} - {checkpoint_name}", meta, created)
        _upload_annotations(api, dt.id, meta, predictions["annotations"], ids)
        bm.dt_project_info = api.project.get_info_by_id(dt.id)
        model_info = {"model_name": model_name, "checkpoint_name": checkpoint_name,
                      "task_type": PLATFORM_SEGMENTATION if segmentation else PLATFORM_DETECTION,
                      "app_name": APP_NAME, "runtime": "PyTorch"}  # fmt: skip
        inference_info = {"gt_project_id": gt_id, "gt_dataset_ids": None,
                          "dt_project_id": dt.id, "batch_size": 1, "val_images_cnt": len(ids),
                          "train_info": {"app_session_id": task_id}, **model_info}  # fmt: skip
        bm._eval_inference_info = inference_info  # what run_inference would have set
        bm.evaluate(dt.id)
        bm._dump_eval_inference_info(inference_info)
        eval_dir = f"/model-benchmark/{project_id}_{gt.name}/{task_id}_{APP_NAME}/"
        eval_dir = api.storage.get_free_dir_name(team_id, eval_dir).rstrip("/") + "/"
        report_id = _upload_report(bm, eval_dir, speedtest, remote_run_dir, work_dir)
    except BaseException:
        _remove_projects(api, bm, created)  # as TrainApp does when its benchmark fails
        raise
    link = f"{api.server_address.rstrip('/')}/model-benchmark?id={report_id}"
    return PlatformReport(report_id, link, eval_dir)


def _benchmark(
    api: Any,
    gt_id: int,
    ids: dict[str, int],
    classes: list[str],
    segmentation: bool,
    max_detections: int,
    work_dir: str | Path,
) -> Any:
    """The SDK's benchmark of the task over the ground truth's images ``ids``, scoring as the
    app's own evaluation does (``src.evaluation.evaluate.sdk_evaluation_params``)."""
    from supervisely.nn.benchmark import InstanceSegmentationBenchmark, ObjectDetectionBenchmark

    benchmark_cls = InstanceSegmentationBenchmark if segmentation else ObjectDetectionBenchmark
    evaluator = benchmark_cls._get_evaluator_class(None)
    return benchmark_cls(
        api, gt_id, output_dir=str(work_dir), gt_images_ids=sorted(ids.values()),
        classes_whitelist=classes,
        evaluation_params=sdk_evaluation_params(evaluator, max_detections),
    )  # fmt: skip


def _predictions_project(api: Any, team_id: int, name: str, meta: Any, created: list[Any]) -> Any:
    """The empty predictions project, in the benchmark's workspace (made if missing) as the
    benchmark would have made it; added to ``created`` at once (removed if a later step fails)."""
    from supervisely.nn.benchmark.base_benchmark import WORKSPACE_DESCRIPTION, WORKSPACE_NAME

    workspace = api.workspace.get_info_by_name(team_id, WORKSPACE_NAME) or api.workspace.create(
        team_id, WORKSPACE_NAME, WORKSPACE_DESCRIPTION
    )
    dt = api.project.create(workspace.id, name, change_name_if_conflict=True)
    created.append(dt)
    api.project.update_meta(dt.id, meta.to_json())
    return dt


def _upload_report(
    bm: Any,
    eval_dir: str,
    speedtest: dict[str, Any] | None,
    remote_run_dir: str,
    work_dir: str | Path,
) -> int:
    """The evaluated benchmark's results (and the speed test), its rendered report into
    ``eval_dir``, and the report's link file beside the run: the report's id."""
    bm.upload_eval_results(eval_dir + "evaluation/")
    if speedtest:  # where TrainApp's speed test puts its results
        bm._dump_speedtest(speedtest)
        bm.upload_speedtest_results(eval_dir + "speedtest/")
    bm.visualize()
    bm.upload_visualizations(eval_dir + "visualizations/")
    report_id = bm.report.id
    bm.upload_report_link(remote_run_dir, report_id, str(work_dir))
    return report_id


def _needs_conversion(api: Any, project_id: int, classes: list[str], segmentation: bool) -> bool:
    """Whether the project's classes have shapes the task's evaluator does not read as the model
    was trained (``TrainApp``'s rule: detection needs rectangles, segmentation no polygons)."""
    import supervisely as sly

    meta = sly.ProjectMeta.from_json(api.project.get_meta(project_id))
    shapes = [c.geometry_type for c in meta.obj_classes if c.name in classes]
    if segmentation:
        return any(shape is not sly.Bitmap for shape in shapes)
    return any(shape is not sly.Rectangle for shape in shapes)


@dataclass(frozen=True)
class _Converted:
    id: int
    ids: dict[str, int]  # item -> its image id in the converted project


def _converted_ground_truth(
    api: Any, gt: Any, meta: Any, predictions: dict[str, Any], ids: dict[str, int],
    segmentation: bool,
) -> _Converted:  # fmt: skip
    """The ground truth as the model trained on it (boxes, or masks, from any shape: the
    evaluation's own), in a project beside the original, as ``TrainApp`` converts it."""
    prefix = "[instance segmentation]: " if segmentation else "[detection]: "
    project = api.project.create(
        gt.workspace_id, f"{prefix}{gt.name}", change_name_if_conflict=True,
        description=f"Ground truth of project {gt.id} as {APP_NAME} trained on it (the "
        "Model Benchmark report reads it: removing it affects the report)",
    )  # fmt: skip
    try:
        api.project.update_meta(project.id, meta.to_json())
        new_ids = _upload_annotations(api, project.id, meta, predictions["ground_truth"], ids)
    except BaseException:
        _remove_projects(api, None, [project])
        raise
    return _Converted(project.id, new_ids)


def _remove_projects(api: Any, bm: Any, created: list[Any]) -> None:
    """The projects a failed report made (predictions, differences, converted ground truth)."""
    diff = None
    if bm is not None:
        try:
            diff = bm.get_diff_project_info()
        except Exception:  # no evaluation result: no differences project either
            diff = None
    for project in [*created, *([diff] if diff is not None else [])]:
        try:
            api.project.remove(project.id)
        except Exception as exc:
            logger.warning("project %s (a failed report's) not removed: %s", project.id, exc)


def _upload_annotations(
    api: Any, project_id: int, meta: Any, annotations: dict[str, dict], ids: dict[str, int]
) -> dict[str, int]:
    """The validation images (added by id: nothing is copied) with ``annotations``, in datasets
    nested and named as the ground truth's (the evaluator pairs images by them); their ids."""
    split = sorted(item.rsplit("/", 1) for item in annotations)
    items = ((ds, name, ids[f"{ds}/{name}"], annotations[f"{ds}/{name}"]) for ds, name in split)
    return upload_items(api, project_id, meta, items)
