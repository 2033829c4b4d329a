"""The app's entry point (``uvicorn src.main:app``): the only module that reads the environment.

Locally (``make app``): ``PROJECT_DIR`` is the Supervisely project to train on, ``TEAM_FILES_DIR``
the folder standing in for Team Files (default ``artifacts/team_files``), ``SLY_APP_DATA_DIR``
the synced app-data folder (default ``artifacts/app_data``). The app stays up for the next run.
On the platform (``ENV=production``) the project download and Team Files upload are not built yet.
"""

from __future__ import annotations

import os

import supervisely as sly

from src.api import build_router
from src.controller import TrainingController
from src.project import open_local_project
from src.storage import LocalArtifactStore
from src.ui.app_ui import AppUI


def create_app() -> sly.Application:
    if sly.is_production():
        raise RuntimeError(
            "running on the Supervisely platform needs the project download and Team Files "
            "upload, which this version does not have yet; run it locally (make app)"
        )
    os.environ.setdefault("SLY_APP_DATA_DIR", os.path.abspath("artifacts/app_data"))
    project_dir = os.environ.get("PROJECT_DIR")
    if not project_dir:
        raise RuntimeError("set PROJECT_DIR to a local Supervisely project (make app does)")
    app_data = sly.app.get_synced_data_dir()
    cache_dir = os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "train-mmdet3", "datasets"
    )
    store = LocalArtifactStore(os.environ.get("TEAM_FILES_DIR", "artifacts/team_files"))
    controller = TrainingController(app_data, store, cache_dir=cache_dir)
    ui = AppUI(open_local_project(project_dir), controller)
    application = sly.Application(layout=ui.layout)
    application.get_server().include_router(build_router(controller))
    application.call_before_shutdown(controller.shutdown)
    application.ui = ui  # for tests and debugging
    application.controller = controller
    return application


app = create_app()
