"""Where a model came from, on the platform: a version of the project before training, and the
run's inputs and outputs in the platform's workflow (``api.app.workflow``).

What the official Train MMDetection app does (its ``src/workflow.py``; the SDK's ``TrainApp``
alike): before training, a version of an images project is created (a backup the model can be
traced to; when nothing changed since the last one, the platform answers with that one) and the
project version, or the project, is the workflow's input, with the custom weights' file when they
come from Team Files; after the upload, the run's folder is the output, its card linking the
checkpoints and the app session. None of it may fail a run: each failure is a warning saying what
was not recorded. Only the platform's entry (``src.web.main``) builds this; headless, nothing is
called.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)
APP_NAME = "Train MMDetection 3"
REPORT_LINK_FILE = "Model Evaluation Report.lnk"  # what the SDK's benchmark writes beside a run


class PlatformWorkflow:
    """Args: the SDK client, the team whose Team Files hold the runs, this app's task."""

    def __init__(self, api: Any, team_id: int, task_id: int) -> None:
        self.api = api
        self.team_id = team_id
        self.task_id = task_id

    def record_inputs(self, project_id: int | None, weights_path: str | None) -> int | None:
        """Before a run trains: the project version (returned: the run's settings record it)
        and the workflow's inputs. ``weights_path``: custom weights as the user chose them
        (a Team Files path is recorded as the model's input)."""
        if project_id is None:
            return None
        version_id = self._project_version(project_id)
        try:  # (the SDK logs its own failures as errors and goes on)
            self.api.app.workflow.add_input_project(
                project_id, version_id=version_id, task_id=self.task_id
            )
            if weights_path and weights_path.startswith("/"):
                info = self.api.file.get_info_by_path(self.team_id, weights_path)
                if info is not None:
                    self.api.app.workflow.add_input_file(
                        info, model_weight=True, task_id=self.task_id
                    )
        except Exception as exc:
            logger.warning("the platform's workflow did not record this run's inputs: %s", exc)
        return version_id

    def _project_version(self, project_id: int) -> int | None:
        """A new version of an images project (the platform's backup before training), else its
        current version's id (None: versioning is off or failed, said as a warning)."""
        import supervisely as sly

        try:
            info = self.api.project.get_info_by_id(project_id)
        except Exception as exc:
            logger.warning("project %s: cannot read it to version it: %s", project_id, exc)
            return None
        version_id = None
        if info.type == str(sly.ProjectType.IMAGES):
            try:
                version_id = self.api.project.version.create(
                    info,
                    APP_NAME,
                    f"This backup was created automatically by Supervisely before the {APP_NAME} "
                    f"task with ID: {self.task_id}",
                )
            except Exception as exc:
                logger.warning("project %s: no version was created: %s", project_id, exc)
        if version_id is None and info.version:
            version_id = info.version.get("id")
        if version_id is None:
            logger.warning(
                "project %s: no project version was created (versioning is off or failed): the "
                "model is traced to the project, not to a version of it",
                project_id,
            )
        return version_id

    def record_output(
        self, remote_dir: str, best_checkpoint: str | None, report: Any = None
    ) -> None:
        """After a verified upload: the run's folder as the workflow's output, its card linking
        the checkpoints' folder and this app session; and the platform's Model Benchmark
        report (``report``: a ``PlatformReport``) as an output of its own, as TrainApp adds it."""
        from supervisely.api.app_api import WorkflowMeta, WorkflowSettings

        try:
            task = self.api.task.get_info_by_id(self.task_id) or {}
            module_id = task.get("meta", {}).get("app", {}).get("id")
            node = WorkflowSettings(
                title=APP_NAME,
                url=f"/apps/{module_id}/sessions/{self.task_id}"
                if module_id
                else f"apps/sessions/{self.task_id}",
                url_title="Show Results",
            )
            best = None
            if best_checkpoint:
                best = self.api.file.get_info_by_path(
                    self.team_id, f"{remote_dir.rstrip('/')}/{best_checkpoint}"
                )
            relation = WorkflowSettings(
                title="Checkpoints",
                icon="folder",
                icon_color="#FFA500",
                icon_bg_color="#FFE8BE",
                url=f"/files/{best.id}/true" if best is not None else None,
                url_title="Open Folder",
            )
            meta = WorkflowMeta(relation_settings=relation, node_settings=node)
            self.api.app.workflow.add_output_folder(remote_dir, task_id=self.task_id, meta=meta)
            if report is not None:
                link = self.api.file.get_info_by_path(
                    self.team_id, f"{remote_dir.rstrip('/')}/{REPORT_LINK_FILE}"
                )
                benchmark = WorkflowSettings(
                    title="Model Benchmark",
                    icon="assignment",
                    icon_color="#674EA7",
                    icon_bg_color="#CCCCFF",
                    url=f"/model-benchmark?id={report.report_id}",
                    url_title="Open Report",
                )
                if link is not None:
                    self.api.app.workflow.add_output_file(
                        link, task_id=self.task_id,
                        meta=WorkflowMeta(relation_settings=benchmark, node_settings=node),
                    )  # fmt: skip
        except Exception as exc:
            logger.warning("the platform's workflow did not record this run's output: %s", exc)

    def record_copy(
        self, project_id: int, weights_path: str | None = None, source_id: int | None = None
    ) -> None:
        """A project this task made (``src.publish.platform_project``) as the workflow's output,
        with what it came from as inputs: the model's weights in Team Files (pre-labelling) or
        the audited project. Never fails the copy: a warning says what was not recorded."""
        workflow = self.api.app.workflow
        try:
            if source_id is not None:
                workflow.add_input_project(source_id, task_id=self.task_id)
            info = weights_path and self.api.file.get_info_by_path(self.team_id, weights_path)
            if info:
                workflow.add_input_file(info, model_weight=True, task_id=self.task_id)
            workflow.add_output_project(project_id, task_id=self.task_id)
        except Exception as exc:
            logger.warning("the platform's workflow did not record project %s: %s", project_id, exc)
