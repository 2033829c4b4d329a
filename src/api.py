"""HTTP API for headless use, served by the app's own server (FastAPI).

    POST /api/train   {project, task, model, classes, split, hyperparameters, config, resume}
                      -> {"run_id": ...}; with "resume": RUN_ID (or "" for the newest) it
                      continues that run (optionally with hyperparameters.epochs)
    GET  /api/status  -> state, progress, latest losses and metrics, the last run's outcome
    POST /api/stop    -> {"stopping": true} (409 when nothing runs)
    GET  /api/runs    -> resumable runs (app data, then Team Files)

Errors are JSON ``{"error": message, "problems": [...]}`` with a 4xx status: 400 for a bad
request, 409 when a run is already in progress (or nothing runs to stop).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from src.controller import TrainingController, request_from_json
from src.project import LocalProject
from src.service import RequestError
from src.trainer import SessionBusyError


def _error(status: int, message: str, problems: list[str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "problems": problems or [message]}, status_code=status)


def build_router(
    controller: TrainingController, default_project: LocalProject | None = None
) -> APIRouter:
    """The routes; ``default_project`` trains when a request names no project (on the platform:
    the project the app was started from)."""
    router = APIRouter(prefix="/api")

    @router.post("/train")
    async def train(request: Request) -> Any:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the request body is not valid JSON")
        try:
            if isinstance(body, dict) and "resume" in body:
                epochs = (body.get("hyperparameters") or {}).get("epochs")
                run_id = controller.resume(body.get("resume") or None, epochs=epochs)
            else:
                request = request_from_json(body, str(controller.app_data_dir), default_project)
                run_id = controller.start(request)
        except SessionBusyError as exc:
            return _error(409, str(exc))
        except RequestError as exc:
            return _error(400, "; ".join(exc.problems), exc.problems)
        return {"run_id": run_id}

    @router.get("/status")
    def status() -> Any:
        return controller.status()

    @router.post("/stop")
    def stop() -> Any:
        if not controller.stop():
            return _error(409, "no training run is in progress: nothing to stop")
        return {"stopping": True}

    @router.get("/runs")
    def runs() -> Any:
        return {"runs": controller.runs()}

    return router
