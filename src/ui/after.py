"""After the steps: put a model back to work on the project (docs/after-training.md).

Two optional cards. **Pre-label**: a run's model predicts the project's images that have no labels
yet, into a copy in app data (``_prelabelled/<run>_<time>``) and, on the platform, a new project
beside this one (the user's project is never written). **Audit the labels**: K models trained on
K folds with the settings of the steps above predict the images they did not train on, and the
suspicious labels are ranked (suspects.json, report.html, a tagged copy, in the audit's folder
``_audits/<id>/outputs``; on the platform a tagged project and the report in Team Files).

Each runs in the background; its card says how far it got and what it wrote. Both go through the
services the HTTP API uses (the controller's ``prelabel``, the app's one ``AuditService``): a
training run, a pre-labelling and an audit never run at once.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from supervisely.app.widgets import (
    Button,
    Card,
    Checkbox,
    Container,
    Field,
    Flexbox,
    InputNumber,
    Select,
    Text,
)

from src.audit.plan import audit_dir, new_audit_id
from src.audit.service import DEFAULT_FOLDS, AuditService
from src.core.errors import AppError, RequestError
from src.core.layout import PRELABELLED, free_name
from src.data.project import LocalProject
from src.prelabel.prelabel import PrelabelRequest, PrelabelResult, prelabel_request
from src.training.controller import TrainingController

logger = logging.getLogger(__name__)
MAX_FOLDS = 10
AUDIT_OUTPUTS = "outputs"  # the page's audits write into their own folder in app data


def prelabel_summary(result: PrelabelResult) -> str:
    """What a pre-labelling wrote, as the card says it."""
    objects = ", ".join(f"{name} {count}" for name, count in result.objects.items()) or "none"
    text = (
        f"pre-labelled {result.predicted} of {result.images} images in {result.seconds:.0f} s; "
        f"objects added: {objects}; copy: {result.out_dir}"
    )
    if result.left_labelled:
        text += f"; {result.left_labelled} labelled images left as they were"
    if project := result.platform_project:
        text += f"; new project: {project['name']} {project['link']}"
    return text


class PrelabelStep:
    """Args: the project, the controller (its runs and ``prelabel``), whether the copy is also
    published on the platform."""

    def __init__(
        self, project: LocalProject, controller: TrainingController, on_platform: bool
    ) -> None:
        self.project, self.controller, self.on_platform = project, controller, on_platform
        self.run = Select([], filterable=True, widget_id="prelabel_run")
        self.datasets = Select(
            [Select.Item(d) for d in project.datasets], multiple=True, widget_id="prelabel_datasets"
        )
        self.datasets.set_value([])  # (the SDK's Select starts on its first item) every dataset
        self.overwrite = Checkbox(
            "Predict the images that already have labels too (the predictions are added beside "
            "their labels)", False, widget_id="prelabel_overwrite",
        )  # fmt: skip
        self.after_training = Checkbox(
            "Pre-label with the run when its training finishes"
            + (" (then the app stops)" if on_platform else ""), False,
            widget_id="prelabel_after",
        )  # fmt: skip
        self.start_button = Button("Pre-label", widget_id="prelabel_start")
        self.refresh_button = Button("Refresh", plain=True, widget_id="prelabel_refresh")
        self.status = Text("", widget_id="prelabel_status")
        where = "a new project beside this one" if on_platform else "a copy in app data"
        self.card = Card(
            "Pre-label the project (optional)",
            f"a run's model labels the images that have none yet, into {where}; each predicted "
            "object carries its confidence, and this project is not changed",
            content=Container([
                Field(self.run, "Run", "its model and its per-class thresholds"),
                Field(self.datasets, "Datasets", "none chosen: every dataset"),
                self.overwrite, self.after_training,
                Flexbox([self.start_button, self.refresh_button]),
                self.status,
            ]),
            collapsable=True, widget_id="card_prelabel",
        )  # fmt: skip
        self.thread: threading.Thread | None = None
        self.refresh()
        self.refresh_button.click(self.refresh)
        self.start_button.click(self.start)

    def refresh(self) -> None:
        """The runs to choose from: app data's, then Team Files' (the newest trained here)."""
        try:
            runs = self.controller.catalog.model_runs()
        except Exception as exc:  # the store cannot be listed: said, the card stays usable
            self.status.set(f"cannot list the runs: {exc}", "warning")
            return
        chosen = self.run.get_value()
        self.run.set([Select.Item(r) for r in runs])
        if chosen in runs:
            self.run.set_value(chosen)

    def after_run(self, run_id: str, then: Callable[[], None]) -> bool:
        """A run finished: when "when its training finishes" is checked, pre-label with it (the
        card's other choices) and call ``then`` at the end, however it ends; True if it
        started."""
        if not self.after_training.is_checked():
            return False
        self.run.set([Select.Item(run_id)])
        self.run.set_value(run_id)
        return self.start(then)

    def request(self) -> PrelabelRequest:
        """The card as a request, its fields checked as the API's body is: the copy goes to a
        new folder under app data; no dataset chosen is every dataset."""
        run_id = self.run.get_value()
        root = self.controller.app_data_dir / PRELABELLED
        body = {
            "run_id": run_id, "project": str(self.project.directory),
            "out": str(root / free_name(root, f"{run_id}_{time.strftime('%Y%m%d_%H%M%S')}")),
            "overwrite_labelled": self.overwrite.is_checked(), "to_platform": self.on_platform,
        }  # fmt: skip
        if datasets := self.datasets.get_value():
            body["datasets"] = datasets
        return prelabel_request(body, max_images=None)

    def start(self, then: Callable[[], None] | None = None) -> bool:
        """Pre-label in the background (``then`` called when it ends); False (said on the card)
        when it cannot start."""
        run_id = self.run.get_value()
        if not run_id or not isinstance(run_id, str):
            self.status.set("choose a run first (Refresh lists the newest)", "error")
            return False
        if self.thread is not None and self.thread.is_alive():
            self.status.set("pre-labelling is in progress", "warning")
            return False
        try:
            request = self.request()
        except RequestError as exc:
            self.status.set("not pre-labelled: " + "; ".join(exc.problems), "error")
            return False
        self.status.set(f"pre-labelling with run {request.run_id}…", "info")
        self.start_button.disable()
        self.thread = threading.Thread(
            target=self._work, args=(request, then), name="prelabel", daemon=True
        )
        self.thread.start()
        return True

    def _work(self, request: PrelabelRequest, then: Callable[[], None] | None) -> None:
        def told(done: int, total: int) -> None:
            if done == total or done % 10 == 0:
                self.status.set(f"pre-labelling: {done} of {total} images", "info")

        try:
            result = self.controller.prelabel(request, told)
        except AppError as exc:
            self.status.set("not pre-labelled: " + "; ".join(exc.problems), "error")
        except Exception as exc:  # whatever it is, the card says it (the log has the trace)
            logger.exception("pre-labelling with run %s failed", request.run_id)
            self.status.set(f"pre-labelling failed: {type(exc).__name__}: {exc}", "error")
        else:
            self.status.set(prelabel_summary(result), "success")
        finally:
            self.start_button.enable()
            if then is not None:
                then()


def audit_summary(state: dict[str, Any]) -> tuple[str, str]:
    """The audit's state as the card says it, and its status colour."""
    name = state.get("audit_id", "")
    if state["state"] == "done":
        kinds = ", ".join(f"{k} {n}" for k, n in state["counts"].items()) or "no suspects"
        report = state["outputs"]["report"]
        text = f"audit {name} done in {state['seconds']:.0f} s: {kinds}; report: {report}"
        if state.get("platform_project"):
            project = state["platform_project"]
            text += f"; tagged project: {project['name']} {project['link']}"
        if state.get("platform_problem"):
            text += f"; not published: {state['platform_problem']}"
        return text, "success"
    if state["state"] == "stopped":
        return f"audit {name} stopped in fold {state['stopped_at']}: Continue resumes it", "warning"
    if state["state"] == "failed":
        return f"audit {name} failed: {state.get('error') or state.get('ended')}", "error"
    return f"audit {name}: {(state.get('log') or ['starting'])[-1]}", "info"


class AuditStep:
    """Args: the app's audit service; ``body``: the steps' settings as ``POST /api/audit``'s
    body (raises ``AppError`` with what is missing); whether it publishes on the platform."""

    def __init__(
        self,
        audits: AuditService,
        body: Callable[[], dict[str, Any]],
        on_platform: bool,
    ) -> None:
        self.audits, self.body, self.on_platform = audits, body, on_platform
        self.folds = InputNumber(DEFAULT_FOLDS, min=2, max=MAX_FOLDS, step=1,
                                 widget_id="audit_folds")  # fmt: skip
        self.curve = Checkbox(
            "Also the learning curve: how much more labelling would help (fold 1 trained on 25 "
            "and 50 % of its images too: 2 more trainings)", False, widget_id="audit_curve",
        )  # fmt: skip
        self.start_button = Button("Audit the labels", widget_id="audit_start")
        self.continue_button = Button("Continue", plain=True, widget_id="audit_continue")
        self.stop_button = Button("Stop", button_type="danger", widget_id="audit_stop")
        self.status = Text("", widget_id="audit_status")
        self.card = Card(
            "Audit the labels (optional)",
            "K models, each trained with the settings above on all folds but one, predict the "
            "images they did not train on; labels that disagree are ranked for review (missing "
            "objects, labels with nothing there, wrong classes, loose boxes). It suggests; a "
            "person decides",
            content=Container([
                Field(self.folds, "Folds (K trainings)"), self.curve,
                Flexbox([self.start_button, self.continue_button, self.stop_button]),
                self.status,
            ]),
            collapsable=True, widget_id="card_audit",
        )  # fmt: skip
        self.last_id: str | None = None
        self.watcher: threading.Thread | None = None
        self.start_button.click(self.start)
        self.continue_button.click(self.resume)
        self.stop_button.click(self.stop)

    def start(self) -> bool:
        """A new audit with the steps' settings; False (said on the card) when it cannot."""
        folds = self.folds.get_value()
        whole = isinstance(folds, int | float) and not isinstance(folds, bool)
        if not (whole and math.isfinite(folds) and folds == int(folds) and 2 <= folds <= MAX_FOLDS):
            self.status.set(f"folds must be a whole number from 2 to {MAX_FOLDS}", "error")
            return False
        try:
            body = self.body()
            root = self.audits.controller.app_data_dir
            audit_id = new_audit_id(root)
            body.update(
                folds=int(folds), learning_curve=self.curve.is_checked(),
                audit_id=audit_id, to_platform=self.on_platform,
                out=str(audit_dir(root, audit_id) / AUDIT_OUTPUTS),
            )  # fmt: skip
        except AppError as exc:
            self.status.set("cannot audit: " + "; ".join(exc.problems), "error")
            return False
        return self._begin(body)

    def resume(self) -> bool:
        if self.last_id is None:
            self.status.set("no audit of this session to continue", "warning")
            return False
        return self._begin({"resume": self.last_id})

    def stop(self) -> None:
        if self.audits.stop():
            self.status.set("stopping the audit: its fold in training after the current batch, "
                            "else before the next fold…", "warning")  # fmt: skip
        else:
            self.status.set("no audit is running: nothing to stop", "warning")

    def _begin(self, body: dict[str, Any]) -> bool:
        try:
            started = self.audits.start(body)
        except AppError as exc:
            self.status.set("cannot audit: " + "; ".join(exc.problems), "error")
            return False
        except Exception as exc:  # whatever it is, the card says it (the log has the trace)
            logger.exception("the audit did not start")
            self.status.set(f"the audit did not start: {type(exc).__name__}: {exc}", "error")
            return False
        self.last_id = started["audit_id"]
        self.status.set(f"audit {self.last_id}: {started['folds']} folds of "
                        f"{started['images']} images, fold 1 starting", "info")  # fmt: skip
        self.watcher = threading.Thread(target=self._watch, name="audit-card", daemon=True)
        self.watcher.start()
        return True

    def _watch(self) -> None:
        """The card follows the audit to its end (woken by the audit's thread ending, or each
        second to show its newest line)."""
        while True:
            state = self.audits.wait(timeout=1.0)
            self.status.set(*audit_summary(state))
            if state["state"] != "running":
                return
