"""HTTP API for headless use, served by the app's own server (FastAPI).

    POST /api/train   {project, task, model, classes, split, hyperparameters, config, resume}
                      -> {"run_id": ...}; with "from_run": RUN_ID (an uploaded run of this
                      app) a new run with that run's settings, the body's fields overriding
                      them ("from_run_mode": "continue" starts from its best checkpoint):
                      the answer's "from_run" says what was loaded and what was dropped
                      -> {"run_id": ...}; with "resume": RUN_ID (or "" for the newest) it
                      continues that run (optionally with hyperparameters.epochs, and
                      gpus, nproc or device to continue on other devices: status.notes then
                      says what that changes; src.config.params.RESUME_CHANGES)
    GET  /api/status  -> state, progress, latest losses and metrics, the last run's outcome
                      (with the evaluation after training: outcome.evaluation's key metrics
                      and report, or outcome.evaluation_error); state is idle/finished/stopped/
                      failed only once a new POST /api/train can succeed: preparing, training,
                      validating, stopping, evaluating and uploading before
    POST /api/stop    -> {"stopping": true} (409 when nothing runs); a run still being prepared
                      is not started (its /api/train answers 409); an audit stops at its fold
                      in training, or before its next fold
    GET  /api/runs    -> resumable runs (app data, then Team Files)
    POST /api/audit   {project, model, out, folds, hyperparameters, confident, low,
                      learning_curve, audit_id, to_platform} or {resume: AUDIT_ID} ->
                      {"audit_id", "folds", "images"} at once; the label-error audit
                      (docs/after-training.md) runs in the background, each fold a run that
                      /api/status shows and /api/stop stops (the audit then ends at that fold:
                      resume it)
    GET  /api/audit   -> the audit's state (running, done, stopped, failed), its log and, when
                      done, its outputs, counts per kind, learning curve and (to_platform) the
                      tagged project published on the platform
    POST /api/prelabel  {run_id, project, out, datasets, overwrite_labelled, score_thr,
                      to_platform} -> what was written (docs/after-training.md): a copy of the
                      project with the run's predictions (to_platform: also a new project on
                      the platform); answered when done, at most 500 images a call (400
                      beyond), 409 while a run trains, 502 when publishing failed

Errors are JSON ``{"error": message, "problems": [...]}`` with a 4xx status: 400 for a bad
request, 401 without the API token, 409 when a run is already in progress (or nothing runs to
stop); each error type's status is declared once, in ``src.core.errors``.

A request's ``config`` is Python that mmengine executes with the app's rights, so off the platform
every ``/api/*`` call needs the app's own token (``Authorization: Bearer <token>``), checked by
``src.web.access`` in front of every route of the server, the page's included; on the platform the
app is reached only through the platform's proxy, which authenticates the user, and no token is
set.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware

from src.audit.service import AuditService
from src.core.errors import AppError, BusyError, RequestError
from src.data.project import LocalProject, open_local_project
from src.data.reader import DatasetError
from src.prelabel.prelabel import prelabel_request
from src.setup.app_state import LoadedState, from_run_fields, request_from_state
from src.setup.requests import ResumeRequest, request_from_body
from src.training.controller import TrainingController

BAD_REQUEST = RequestError.http_status
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # ASCII control characters


def _error(status: int, message: str, problems: list[str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "problems": problems or [message]}, status_code=status)


def mount_api(
    server: FastAPI,
    controller: TrainingController,
    default_project: LocalProject | None = None,
    audits: AuditService | None = None,
) -> None:
    """Add the routes to ``server`` (who may call them is ``src.web.access.guard_server``'s
    concern; ``audits``: the app's one audit service, shared with the page's Audit card, else a
    new one): a POST whose body is not a JSON object (or nests past Python's stack) is answered
    400 here, before the SDK's middleware (which expects an object) turns it into a plain-text
    500; so is a path with a control character, on every route of the server.

    The check goes in as a user middleware and the server's middleware stack is dropped so that
    its next request rebuilds it (``add_middleware`` refuses once the stack is built; see
    ``guard_server``)."""

    async def check_body(request: Request, call_next: Any) -> Any:
        if _CONTROL.search(request.scope["path"]):  # (TensorBoard's forwarding could not send it)
            return _error(BAD_REQUEST, "the path holds a control character: no route takes one")
        if not request.url.path.startswith("/api/"):
            return await call_next(request)
        if request.method == "POST":
            raw = await request.body()
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError:
                return _error(BAD_REQUEST, "the request body is not valid JSON")
            except RecursionError:
                return _error(BAD_REQUEST, "the request body is nested too deeply to be a request")
            if not isinstance(body, dict):
                return _error(BAD_REQUEST, "the request body must be a JSON object")
            request.state.json_body = body  # the route reads it from here: parsed once
        return await call_next(request)

    server.user_middleware.insert(0, Middleware(BaseHTTPMiddleware, dispatch=check_body))
    server.middleware_stack = None
    server.include_router(_router(controller, default_project, audits or AuditService(controller)))


def _router(
    controller: TrainingController, default_project: LocalProject | None, audits: AuditService
) -> APIRouter:
    """The routes; ``default_project`` trains when a request names no project (on the platform:
    the project the app was started from)."""
    router = APIRouter(prefix="/api")

    @router.post("/train")
    async def train(request: Request) -> Any:
        body = request.state.json_body  # a JSON object: check_body parsed it
        try:
            # parsing the project and executing the config take seconds: off the event loop,
            # so /sly/state, /api/status and /api/stop keep answering meanwhile
            run_id = await run_in_threadpool(_start, controller, body, default_project)
        except AppError as exc:  # its status: src.core.errors, the one table
            return _error(exc.http_status, "; ".join(exc.problems), exc.problems)
        if isinstance(run_id, tuple):  # from_run: with what was loaded, and what was not
            run_id, loaded = run_id
            return {"run_id": run_id, "from_run": {"source": loaded.source, "mode": loaded.mode,
                                                   "notes": loaded.notes}}  # fmt: skip
        return {"run_id": run_id}

    @router.get("/status")
    def status() -> Any:
        return controller.status().to_json()

    @router.post("/stop")
    def stop() -> Any:
        if not (audits.stop() or controller.stop()):  # an audit: between its folds too
            return _error(BusyError.http_status, "no training run is in progress: nothing to stop")
        return {"stopping": True}

    @router.get("/runs")
    def runs() -> Any:
        return {"runs": controller.catalog.runs()}

    @router.post("/audit")
    async def audit(request: Request) -> Any:
        try:  # fold 1 is composed first (seconds): off the event loop
            return await run_in_threadpool(audits.start, request.state.json_body)
        except AppError as exc:
            return _error(exc.http_status, "; ".join(exc.problems), exc.problems)

    @router.get("/audit")
    def audit_status() -> Any:
        return audits.status()

    @router.post("/prelabel")
    async def prelabel(request: Request) -> Any:
        try:  # minutes: off the event loop, so status and stop keep answering
            asked = prelabel_request(request.state.json_body)
            result = await run_in_threadpool(controller.prelabel, asked)
        except AppError as exc:
            return _error(exc.http_status, "; ".join(exc.problems), exc.problems)
        return result.to_json()

    return router


def _start(
    controller: TrainingController, body: dict[str, Any], default_project: LocalProject | None
) -> str:
    """A new run or a resumed one, as the body asks; RequestError names every bad field."""
    if "from_run" in body:
        return _start_from_run(controller, body, default_project)
    request = request_from_body(body, str(controller.app_data_dir), default_project)
    if isinstance(request, ResumeRequest):
        return controller.resume(
            request.target,
            epochs=request.epochs,
            gpus=request.gpus,
            nproc=request.nproc,
            device=request.device,
        )
    return controller.start(request)


def _start_from_run(
    controller: TrainingController, body: dict[str, Any], default_project: LocalProject | None
) -> tuple[str, LoadedState]:
    """``from_run``: a new run with an uploaded run's settings (``app_state.json``), the body's
    other fields overriding them; the run id and what was loaded (notes: what was dropped)."""
    run_id, mode, overrides = from_run_fields(body)
    if overrides.get("project") is not None:
        if not isinstance(overrides["project"], str):
            raise RequestError(["project must be a local Supervisely project directory"])
        try:
            project = open_local_project(overrides["project"])
        except DatasetError as exc:
            raise RequestError([str(exc)]) from None
    elif default_project is not None:
        project = default_project
    else:
        raise RequestError(["project is required: a local Supervisely project directory"])
    loaded = controller.from_run(run_id, project, mode)
    request = request_from_state(
        loaded, overrides, str(controller.app_data_dir), project, controller.compose
    )
    return controller.start(request), loaded
