"""The platform's services for the controller, built from an ``sly.Api`` (no environment reads).

Team Files as the artifact store, the project resolver that downloads a run's project (cached by id
and update time), the experiment a training task left (the Experiments page's "train again"), the
project version and workflow inputs before a run (``src.publish.workflow``), and the step after a
verified upload that shows the run's folder as the task's output (the run as an experiment, which
the Experiments page lists) and as the workflow's output.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.core.errors import RequestError
from src.core.layout import (
    EVALUATION_DIR,
    EVALUATION_PREDICTIONS,
    EVALUATION_SPEEDTEST,
    EXPERIMENT_INFO,
)
from src.core.tasks import PLATFORM_SEGMENTATION
from src.data.project import LocalProject, download_project, open_local_project
from src.data.reader import DatasetError
from src.publish.platform_report import PlatformReport, build_platform_report
from src.publish.workflow import PlatformWorkflow
from src.runs.storage import TeamFilesArtifactStore
from src.setup.prepare import Prepared

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Experiment:
    """A finished training task as the platform's Experiments page names it."""

    task_id: int
    folder: str  # its artifacts in Team Files
    best_checkpoint: str | None  # Team Files path
    project_id: int | None
    name: str


@dataclass
class PlatformServices:
    store: TeamFilesArtifactStore
    resolve_project: Callable[[int | None, str], LocalProject]
    set_output: Callable[[str], str | None]
    experiment_of_task: Callable[[int], Experiment]
    record_inputs: Callable[[Prepared], int | None]


def platform_services(
    api: Any,
    team_id: int,
    task_id: int | None,
    projects_cache: str | Path,
    backoff_s: float = 2.0,
) -> PlatformServices:
    """Args: the client, the team whose Team Files hold artifacts, this app's task id (None
    headless: no task output to set), where downloaded projects are cached, the first wait
    between upload retries."""
    store = TeamFilesArtifactStore(api, team_id, backoff_s=backoff_s)
    task = _TaskOnPlatform(api, team_id, task_id, projects_cache, store)
    return PlatformServices(
        store, task.resolve_project, task.set_output, task.experiment_of_task, task.record_inputs
    )


class _TaskOnPlatform:
    """This app's task on the platform: the services, bound to its client, team and task."""

    def __init__(
        self,
        api: Any,
        team_id: int,
        task_id: int | None,
        projects_cache: str | Path,
        store: TeamFilesArtifactStore,
    ) -> None:
        self.api, self.team_id, self.task_id = api, team_id, task_id
        self.projects_cache = projects_cache
        self.store = store
        self.workflow = PlatformWorkflow(api, team_id, task_id or 0)

    def resolve_project(self, project_id: int | None, project_dir: str) -> LocalProject:
        if project_id is None:
            return open_local_project(project_dir)
        done = [0]

        def progress(n: int) -> None:  # the download's progress in the task log
            done[0] += n
            logger.info("project %s: %d images downloaded", project_id, done[0])

        try:
            return download_project(
                self.api, int(project_id), self.projects_cache, progress=progress
            )
        except DatasetError:
            raise
        except Exception as exc:  # network, permissions: say which project and why
            raise DatasetError(f"downloading project {project_id} failed: {exc}") from None

    def set_output(self, remote_dir: str) -> str | None:
        """The task's output is the run as an experiment (``set_output_experiment`` with the
        ``experiment_info.json`` read back from Team Files: what the Experiments page lists and
        its deploy button serves), with the platform's report of an evaluated run first; the
        workflow's output after. Returns the report's link (None: no report)."""
        if self.task_id is None:
            return None
        store = self.store
        if store.file_id(f"{remote_dir}/config.py") is None:
            raise RuntimeError(f"{remote_dir}/config.py is not in Team Files")
        with tempfile.TemporaryDirectory() as tmp:
            local = store.download(f"{remote_dir}/{EXPERIMENT_INFO}", Path(tmp) / EXPERIMENT_INFO)
            info = json.loads(local.read_text(encoding="utf-8"))
            report = self.platform_report(remote_dir, info, Path(tmp))
            if report is not None:  # the experiment names it, as TrainApp's do
                info["evaluation_report_id"] = report.report_id
                info["evaluation_report_link"] = report.link
                local.write_text(json.dumps(info, indent=1), encoding="utf-8")
                store.upload_file(local, f"{remote_dir}/{EXPERIMENT_INFO}")
        info["task_id"] = self.task_id
        self.api.task.set_output_experiment(self.task_id, info)
        self.workflow.record_output(remote_dir, info.get("best_checkpoint"), report)
        return report.link if report is not None else None

    def platform_report(self, remote_dir: str, info: dict, scratch: Path) -> PlatformReport | None:
        """The platform's Model Benchmark report of an evaluated run (its predictions are in
        ``evaluation/``); None when the run was not evaluated or the report failed (a
        warning: the run, its metrics and its own report stand)."""
        predictions = f"{remote_dir}/{EVALUATION_DIR}/{EVALUATION_PREDICTIONS}"
        if info.get("project_id") is None or not self.store.exists(predictions):
            return None
        try:
            local = self.store.download(predictions, scratch / EVALUATION_PREDICTIONS)
            data = json.loads(local.read_text(encoding="utf-8"))
            speedtest = self._speedtest(remote_dir, scratch)
            project = self.resolve_project(int(info["project_id"]), "")
            report = build_platform_report(
                self.api, self.team_id, int(self.task_id or 0),
                project_id=int(info["project_id"]), project_dir=project.directory,
                predictions=data, segmentation=info.get("task_type") == PLATFORM_SEGMENTATION,
                model_name=str(info.get("model_name")),
                checkpoint_name=str(info.get("best_checkpoint")), remote_run_dir=remote_dir,
                work_dir=scratch / "model_benchmark", speedtest=speedtest,
            )  # fmt: skip
        except Exception as exc:
            logger.warning("the platform's Model Benchmark report was not built: %s", exc)
            return None
        logger.info("Model Benchmark report: %s", report.link)
        return report

    def _speedtest(self, remote_dir: str, scratch: Path) -> dict | None:
        """The run's speed test, when it was timed (--speed-test); None when it was not."""
        timed = f"{remote_dir}/{EVALUATION_DIR}/{EVALUATION_SPEEDTEST}"
        if not self.store.exists(timed):
            return None
        local = self.store.download(timed, scratch / EVALUATION_SPEEDTEST)
        return json.loads(local.read_text(encoding="utf-8"))

    def record_inputs(self, prepared: Prepared) -> int | None:
        """A new run's project version and workflow inputs (headless: none)."""
        if self.task_id is None:
            return None
        state = prepared.app_state or {}
        weights = (state.get("hyperparameters") or {}).get("weights_path")  # as the user chose
        return self.workflow.record_inputs(prepared.project.project_id, weights)

    def experiment_of_task(self, train_task_id: int) -> Experiment:
        """The experiment a training task set as its output, read as the platform's training
        apps read it (the SDK's ``api.nn.get_experiment_info``)."""
        try:
            info = self.api.nn.get_experiment_info(train_task_id)
        except Exception as exc:  # not found, no experiment output, network
            raise RequestError(
                [f"task {train_task_id} has no experiment to start from: {exc}"]
            ) from None
        folder = str(info.artifacts_dir).rstrip("/")
        best = f"{folder}/{info.best_checkpoint}" if info.best_checkpoint else None
        return Experiment(train_task_id, folder, best, info.project_id, info.experiment_name)
