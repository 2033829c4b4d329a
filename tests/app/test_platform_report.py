"""The platform's Model Benchmark report of a run, over real HTTP against the protocol server: the
run's evaluated predictions go into a predictions project, the SDK's benchmark evaluates them and
its visualizer renders and uploads the report, the experiment names it, the workflow lists it. A
report that cannot be built (a model without one true positive) is a warning and leaves nothing
behind; the run's output is set all the same."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from src.core.layout import EVALUATION_PREDICTIONS
from src.data.eval_projects import write_eval_projects
from src.data.reader import load_split
from src.publish.platform import platform_services
from tests.sly_server import PROJECT_ID, TASK_ID, TEAM_ID

CLASSES = ["square", "circle", "triangle"]
RUN = "/mmdetection-3/4242_project"


def _run_folder(fake, tmp_path: Path, project, score_shift: float) -> None:
    """A run uploaded with its evaluation: predictions are the validation boxes themselves
    (moved by ``score_shift`` of their size: 0, a good model; 2, none matches)."""
    data_list, _ = load_split(project.directory, CLASSES, "object-detection", ["val"])
    predictions = []
    for info in data_list:
        for inst in info["instances"]:
            x1, y1, x2, y2 = inst["bbox"]
            w, h = x2 - x1, y2 - y1
            box = [x1 + score_shift * w, y1, w, h]
            predictions.append({"image_id": info["img_id"], "bbox": box, "score": 0.9,
                                "category_id": inst["bbox_label"] + 1})  # fmt: skip
    folder = fake.state.local(RUN)
    (folder / "evaluation").mkdir(parents=True)
    write_eval_projects(
        data_list, CLASSES, predictions, tmp_path / "eval", False,
        predictions_file=folder / "evaluation" / EVALUATION_PREDICTIONS,
    )  # fmt: skip
    (folder / "config.py").write_text("model = dict()\n")
    (folder / "best_coco_bbox_mAP_epoch_2.pth").write_bytes(b"weights")
    info = {"experiment_name": "4242 project rtmdet", "framework_name": "MMDetection 3.0",
            "model_name": "rtmdet_tiny_8xb32-300e_coco", "task_type": "object detection",
            "project_id": PROJECT_ID, "task_id": TASK_ID, "model_files": {"config": "config.py"},
            "model_meta": "model_meta.json", "checkpoints": ["best_coco_bbox_mAP_epoch_2.pth"],
            "best_checkpoint": "best_coco_bbox_mAP_epoch_2.pth",
            "hyperparameters": "hyperparameters.yaml", "artifacts_dir": RUN + "/",
            "evaluation_report_id": None, "evaluation_report_link": None}  # fmt: skip
    (folder / "experiment_info.json").write_text(json.dumps(info))
    timing = {"device": "cpu", "runtime": "PyTorch", "hardware": "test CPU"}
    speedtest = {"model_info": timing, "speedtest": [
        {"benchmark": {"total": 12.5}, "benchmark_std": {"total": 0.5}, "batch_size": size,
         "num_iterations": 10, **timing} for size in (1, 8)]}  # fmt: skip
    (folder / "evaluation" / "speedtest.json").write_text(json.dumps(speedtest))


@pytest.fixture
def services(fake_demo, tmp_path, monkeypatch):
    monkeypatch.setenv("ENV", "production")  # the SDK's workflow calls are off in development
    monkeypatch.setenv("TEAM_ID", str(TEAM_ID))  # the SDK's benchmark reads its team from here
    api = fake_demo.api()
    services = platform_services(api, TEAM_ID, TASK_ID, tmp_path / "projects", backoff_s=0)
    return services, services.resolve_project(PROJECT_ID, "")


def test_an_evaluated_run_gets_the_platforms_report_named_in_its_experiment(
    fake_demo, services, tmp_path
):
    services, project = services
    _run_folder(fake_demo, tmp_path, project, score_shift=0.0)
    link = services.set_output(RUN)  # the outcome shows it (src.training.end_of_run)
    state = fake_demo.state
    output = state.outputs[TASK_ID]["experiment"]["data"]
    report_id = output["evaluation_report_id"]
    assert link == output["evaluation_report_link"]
    assert output["evaluation_report_link"] == f"{fake_demo.address}/model-benchmark?id={report_id}"
    uploaded = json.loads((state.local(RUN) / "experiment_info.json").read_text())
    assert uploaded["evaluation_report_id"] == report_id  # the file in Team Files says so too
    # the report: the SDK's visualizer's template, its evaluation beside it, its link in the run
    [template] = state.team_files_root.glob("model-benchmark/77_*/*/visualizations/template.vue")
    remote = "/" + template.relative_to(state.team_files_root).as_posix()
    assert state.file_id(remote) == report_id
    [table] = (template.parent / "data").glob("key_metrics_table_widget_*.json")
    metrics = {row["id"]: row["row"][1] for row in json.loads(table.read_text())["content"]}
    assert metrics["mAP"] == pytest.approx(1.0)  # the predictions are the ground truth
    assert metrics["precision"] == metrics["recall"] == pytest.approx(1.0)
    # the run's speed test, in the report's "Inference Speed" section, as TrainApp's
    assert list((template.parent / "data").glob("speedtest_table_widget_*.json"))
    assert (template.parent.parent / "speedtest" / "speedtest.json").is_file()
    assert (state.local(RUN) / "Model Evaluation Report.lnk").read_text() == (
        f"/model-benchmark?id={report_id}"
    )
    # the predictions project, in the benchmark's workspace: the validation images, by id
    benchmark = [p for p in state.projects.values() if p.workspace_id != 1]
    predictions = next(p for p in benchmark if not p.name.startswith("[diff]"))
    val = [i for i in state.projects[PROJECT_ID].images if i.dataset_id in {
        d.id for d in state.projects[PROJECT_ID].datasets if d.name == "val"}]  # fmt: skip
    assert sorted(i.name for i in predictions.images) == sorted(i.name for i in val)
    assert [d.name for d in predictions.datasets] == ["val"]
    # the project's classes are of any shape: the ground truth as the model trained on it (its
    # boxes) is a project of its own beside the original, as TrainApp converts it
    [converted] = [p for p in state.projects.values() if p.name.startswith("[detection]: ")]
    assert converted.workspace_id == state.projects[PROJECT_ID].workspace_id
    assert {o["geometryType"] for i in converted.images for o in i.ann["objects"]} == {"rectangle"}
    # the workflow: the run's folder, and the report as TrainApp adds it
    (_, folder_node), (_, report_node) = state.workflow
    assert folder_node["type"] == "folder" and report_node["type"] == "file"
    link = report_node["meta"]["customRelationSettings"]["mainLink"]["url"]
    assert link == f"/model-benchmark?id={report_id}"


def test_a_report_that_cannot_be_built_is_a_warning_and_leaves_no_project(
    fake_demo, services, tmp_path, caplog
):
    services, project = services
    _run_folder(fake_demo, tmp_path, project, score_shift=2.0)  # no box matches
    before = set(fake_demo.state.projects)
    with caplog.at_level(logging.WARNING, logger="src.publish.platform"):
        assert services.set_output(RUN) is None
    assert "Model Benchmark report was not built" in caplog.text
    assert set(fake_demo.state.projects) == before  # its predictions project removed
    output = fake_demo.state.outputs[TASK_ID]["experiment"]["data"]
    assert output["evaluation_report_id"] is None  # the run's output is set all the same
