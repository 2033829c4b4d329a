"""An audit through the HTTP API (``POST /api/audit``, ``GET /api/audit``): the CLI's audit
(``src.audit.flow``) in a background thread, each fold a run of the app's controller built from
the request's JSON as ``POST /api/train`` builds one, so ``/api/status`` shows the fold
training and ``/api/stop`` stops it (the audit then ends at that fold; ``{"resume": AUDIT_ID}``
continues it).

The body: ``{"project", "model", "out", "folds" (5), "audit_id", "hyperparameters" (as
/api/train's), "confident", "low" (0.1), "learning_curve" (false)}``. What the audit cannot
start with (a missing project, too few images, a bad setting, an ``out`` inside the project) is
a 400 before anything starts: fold 1's run is composed first.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from src.audit.flow import AuditOutcome, run_audit
from src.audit.outputs import check_out_dir
from src.audit.plan import (
    AuditPlan,
    audit_dir,
    audit_thresholds,
    load_plan,
    make_folds,
    new_audit_id,
    plan_run_ids,
)
from src.audit.suspects import counts
from src.core.errors import AppError, BusyError, RequestError, StartCancelled
from src.core.layout import run_dir
from src.data.project import open_local_project
from src.data.reader import DatasetError
from src.publish.platform_project import PlatformCopies
from src.setup.prepare import TrainRequest
from src.setup.requests import json_problem, request_from_json
from src.training.controller import TrainingController

logger = logging.getLogger(__name__)

DEFAULT_FOLDS, DEFAULT_LOW = 5, 0.1
_OWN = ("out", "folds", "audit_id", "confident", "low", "learning_curve", "to_platform")
AUDITS_FOLDER = "/mmdetection-3-audits"  # Team Files: each published audit's report, suspects
_NOT_IN_AN_AUDIT = ("split", "run_id", "resume", "from_run")  # the audit chooses them


class ApiFoldTrainer:
    """A fold's run through the controller: the plan's request (its JSON, as ``/api/train``
    reads it) on the fold's split, or the stopped run resumed; waits for its end and upload.
    ``stopping``: a stop asked for between two folds (the next one does not start)."""

    def __init__(
        self, controller: TrainingController, stopping: Callable[[], bool] = lambda: False
    ) -> None:
        self.controller = controller
        self.stopping = stopping

    def __call__(self, plan: AuditPlan, fold: int, resume: bool, share: int = 100) -> str:
        run_id = plan.run_id(fold, share)
        if self.stopping():
            return "stopped"
        try:
            if resume:
                self.controller.resume(run_id)
            else:
                self.controller.start(fold_request(plan, self.controller, fold, share))
        except StartCancelled:  # /api/stop while the fold's run was being prepared
            return "stopped"
        return str(self.controller.wait().run_state)  # finished, stopped or failed


def fold_request(
    plan: AuditPlan, controller: TrainingController, fold: int, share: int = 100
) -> TrainRequest:
    """Fold ``fold``'s new run from the audit's request (``AuditPlan.fold_request``)."""
    return plan.fold_request(
        request_from_json(plan.request, str(controller.app_data_dir)), fold, share
    )


def _typed(body: dict[str, Any], key: str, default: Any, hint: Any) -> Any:
    """``body[key]`` (``default`` when absent) checked as the API checks every field."""
    value = body.get(key, default)
    if problem := json_problem(key, value, hint):
        raise RequestError(problem)
    return value


def new_plan(
    body: dict[str, Any], controller: TrainingController, copies: PlatformCopies | None = None
) -> AuditPlan:
    """The plan of a new audit from a ``POST /api/audit`` body; every problem a ``RequestError``
    before anything is written. ``copies``: where ``to_platform`` publishes (the platform's)."""
    if wrong := [k for k in _NOT_IN_AN_AUDIT if k in body]:
        raise RequestError(f"{', '.join(wrong)}: not in an audit (it chooses its folds, run ids)")
    if not isinstance(body.get("project"), str) or not isinstance(body.get("out"), str):
        raise RequestError("project and out are required: local folders (out: where the audit "
                           "writes suspects.json, report.html and project/)")  # fmt: skip
    folds = _typed(body, "folds", DEFAULT_FOLDS, int)
    confident = _typed(body, "confident", None, float | None)
    try:
        thresholds = audit_thresholds(confident, _typed(body, "low", DEFAULT_LOW, float))
    except ValueError as exc:
        raise RequestError(str(exc)) from None
    try:
        open_local_project(body["project"])  # a clear 400 for a missing or empty project
    except DatasetError as exc:
        raise RequestError(str(exc)) from None
    check_out_dir(body["out"], body["project"], "out")
    to_platform = _typed(body, "to_platform", False, bool)
    if to_platform and copies is None:
        raise RequestError("to_platform: the app is not on the platform (the outputs are local)")
    if to_platform:
        copies.check(body["project"])
    train_body = {k: v for k, v in body.items() if k not in _OWN}
    hyper = train_body.get("hyperparameters")
    if isinstance(hyper, dict):  # the folds are not evaluated unless asked, as the CLI's
        train_body["hyperparameters"] = {"evaluate": False, **hyper}
    elif hyper is None:
        train_body["hyperparameters"] = {"evaluate": False}
    request = request_from_json(train_body, str(controller.app_data_dir))  # its 400s
    root = controller.app_data_dir
    if not isinstance(body.get("audit_id", ""), str | None) or not isinstance(
        body.get("learning_curve", False), bool
    ):
        raise RequestError("audit_id must be a string and learning_curve true or false")
    audit_id = body.get("audit_id") or new_audit_id(root)
    if audit_dir(root, audit_id).exists():
        raise RequestError(f'audit {audit_id} exists: continue it with {{"resume": ...}}')
    folds_made = make_folds(body["project"], folds, request.params.seed, "folds")
    curve = bool(body.get("learning_curve"))
    if taken := [r for r in plan_run_ids(audit_id, folds, curve) if run_dir(root, r).exists()]:
        raise RequestError(f"runs {', '.join(taken)} exist in {root}: give another audit_id")
    return AuditPlan(
        audit_id=audit_id, project_dir=str(Path(body["project"]).resolve()),
        out_dir=str(Path(body["out"]).resolve()), folds=folds_made, seed=request.params.seed,
        thresholds=thresholds, curve=curve, request=train_body, to_platform=to_platform,
    )  # fmt: skip


class AuditService:
    """The API's one audit at a time: started, followed, its outcome kept until the next.

    While an audit runs it owns the device (``TrainingController.reserved``): between its folds
    too, another run or a pre-labelling is refused; a stop asked for between folds ends it
    before the next one.

    Args: the controller its folds train through; ``copies``: publishes an audit asked
    ``to_platform`` (the platform's, else None); ``on_end``: told the state of each audit
    that ended (on the platform: the app stops when its work is done); ``run_context``: the
    context the audit runs in (on the platform ``app.handle_stop(graceful=True)``: a platform
    stop waits for the audit's end)."""

    def __init__(
        self,
        controller: TrainingController,
        copies: PlatformCopies | None = None,
        on_end: Callable[[dict[str, Any]], None] | None = None,
        run_context: Callable[[], AbstractContextManager] | None = None,
    ) -> None:
        self.controller = controller
        self.copies = copies
        self.on_end = on_end
        self.run_context = run_context or contextlib.nullcontext
        self._stopping = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._state: dict[str, Any] = {"state": "idle"}

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, body: dict[str, Any]) -> dict[str, Any]:
        """Plan (or load, with ``resume``) and start an audit; what it is (its id, folds)."""
        with self._lock:
            if self.running or self.controller.busy:
                raise BusyError("an audit or a training run is in progress: wait or stop it")
            if "resume" in body:
                if set(body) != {"resume"} or not isinstance(body["resume"], str):
                    raise RequestError("resume takes an audit id and nothing else (an audit "
                                       "keeps its settings)")  # fmt: skip
                plan = load_plan(self.controller.app_data_dir, body["resume"])
                if not plan.request:
                    raise RequestError(f"audit {plan.audit_id} was started from the command "
                                       "line: continue it there (python -m src.cli audit "
                                       f"--resume {plan.audit_id})")  # fmt: skip
            else:
                plan = new_plan(body, self.controller, self.copies)
                self.controller.compose(fold_request(plan, self.controller, 1))  # its 400s now
            own = set(plan_run_ids(plan.audit_id, plan.k, plan.curve))
            reservation = self.controller.reserved(f"audit {plan.audit_id}", own.__contains__)
            reservation.__enter__()  # left by the audit's thread, at its end
            self._stopping = False
            self._state = {"state": "running", "audit_id": plan.audit_id, "folds": plan.k,
                           "images": sum(map(len, plan.folds)), "log": []}  # fmt: skip
            self._thread = threading.Thread(
                target=self._run, args=(plan, reservation), name=f"audit-{plan.audit_id}",
                daemon=True,
            )  # fmt: skip
            self._thread.start()
            return {k: v for k, v in self._state.items() if k != "log"}

    def stop(self) -> bool:
        """Stop the audit: its fold in training at the next batch, or the next fold before it
        starts; False when no audit runs."""
        if not self.running:
            return False
        self._stopping = True
        self.controller.stop()
        return True

    def status(self) -> dict[str, Any]:
        return dict(self._state)

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.status()

    def _run(self, plan: AuditPlan, reservation: AbstractContextManager) -> None:
        try:
            with self.run_context():
                self._state.update(self._audit(plan))
        finally:
            reservation.__exit__(None, None, None)
            if self.on_end is not None:
                self.on_end(self.status())

    def _audit(self, plan: AuditPlan) -> dict[str, Any]:
        """The audit to its end, and its publication when asked: what its state becomes."""
        try:
            signals = self.controller.stop_signals
            trainer = ApiFoldTrainer(
                self.controller, lambda: self._stopping or any(s() for s in signals)
            )
            outcome = run_audit(
                plan, self.controller.app_data_dir, trainer, self._state["log"].append
            )
        except AppError as exc:  # a fold that could not start (busy, its data gone): said
            logger.warning("audit %s failed: %s", plan.audit_id, exc)
            return {"state": "failed", "error": str(exc)}
        except Exception as exc:  # the audit's end, whatever it is, is what a client sees
            logger.exception("audit %s failed", plan.audit_id)
            return {"state": "failed", "error": str(exc)}
        ended = _ended(outcome)
        if plan.to_platform and self.copies is not None and "project" in outcome.outputs:
            ended.update(self._publish(plan, outcome.outputs))
        return ended

    def _publish(self, plan: AuditPlan, outputs: dict[str, str]) -> dict[str, Any]:
        """The tagged copy as a new project and the other outputs into Team Files
        (``AUDITS_FOLDER/<audit id>/``); a failure is said, the local outputs stand."""
        remote = f"{AUDITS_FOLDER}/{plan.audit_id}/"
        try:
            for key, path in outputs.items():
                if key != "project":
                    self.controller.store.upload_file(path, remote + Path(path).name)
            project = self.copies.audited(outputs["project"], plan.audit_id)
        except Exception as exc:  # an upload that failed: its error says what
            logger.warning("audit %s was not published: %s", plan.audit_id, exc)
            return {"platform_problem": str(exc)}
        self._state["log"].append(f"published as project {project['name']}: {project['link']}")
        return {"platform_project": project, "team_files": remote}


def _ended(outcome: AuditOutcome) -> dict[str, Any]:
    """What ``GET /api/audit`` says of an audit that has ended (done or not)."""
    if not outcome.done:
        state = "stopped" if outcome.ended == "stopped" else "failed"
        ended = {"state": state, "stopped_at": outcome.stopped_at, "ended": outcome.ended}
        if outcome.curve_share is not None:  # the suspects and the report are written
            ended.update(curve_share=outcome.curve_share, outputs=outcome.outputs)
        return ended
    return {"state": "done", "outputs": outcome.outputs, "counts": counts(outcome.suspects),
            "seconds": round(outcome.seconds, 1), "learning_curve": outcome.curves}  # fmt: skip
