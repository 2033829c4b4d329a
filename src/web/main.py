"""The app's entry point (``uvicorn src.web.main:app``): the only module that reads the environment.

On the platform (``ENV=production``): the project the app was started from is downloaded (cached
by project id and update time), artifacts go to Team Files, the newest checkpoint is copied there
every ``CHECKPOINT_SYNC_EPOCHS`` epochs (default 1) and/or ``CHECKPOINT_SYNC_MINUTES`` minutes,
and after a run is uploaded the task output is set; a finished run ends the app (``app.stop()``),
a run stopped with the Stop button stays offered for resume until the platform stops the app.
Started from the Experiments page (``modal.state.trainTaskId``, ``modal.state.trainMode``), every
step comes up filled with that task's experiment (``src.setup.app_state``; its project when the
context has none). Each run's TensorBoard is served under ``/tensorboard/`` (both places).

Locally (``make app``): ``PROJECT_DIR`` is the Supervisely project to train on, ``TEAM_FILES_DIR``
the folder standing in for Team Files (default ``artifacts/team_files``), ``SLY_APP_DATA_DIR``
the synced app-data folder (default ``artifacts/app_data``); checkpoint sync is off unless one of
the two variables above is set. The app stays up for the next run. Its token
(``TRAIN_MMDET3_API_TOKEN``, or one generated at start and printed; not the SDK's ``API_TOKEN``,
which is a platform credential) guards the HTTP API, and every route of the page too once the
server listens beyond this machine (``src.web.access``); once it listens, the app prints where and
the URL to open.
"""

from __future__ import annotations

import os
import secrets
import threading
from typing import Any

import supervisely as sly

from src.audit.service import AuditService
from src.core.layout import TENSORBOARD_LOG
from src.data.project import LocalProject, open_local_project
from src.engine.devices import CUDA_ALLOC_CONF
from src.publish.platform import Experiment, platform_services
from src.publish.platform_project import PlatformCopies
from src.runs.storage import LocalArtifactStore
from src.training.controller import SyncPolicy, TrainingController
from src.training.session import warm_up_imports
from src.ui.app_ui import AppUI
from src.web.access import guard_server, start_lines, wait_until_listening
from src.web.api import mount_api
from src.web.lifecycle import audit_ended, run_ended
from src.web.tensorboard import PREFIX, TensorBoard, mount_tensorboard


def _sync_policy(default_epochs: int | None) -> SyncPolicy | None:
    epochs = os.environ.get("CHECKPOINT_SYNC_EPOCHS")
    minutes = os.environ.get("CHECKPOINT_SYNC_MINUTES")
    every_epochs = int(epochs) if epochs else (None if minutes else default_epochs)
    every_minutes = float(minutes) if minutes else None
    if every_epochs is None and every_minutes is None:
        return None
    return SyncPolicy(every_epochs=every_epochs or None, every_minutes=every_minutes)


def _cache_dir(name: str) -> str:
    root = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
    return os.path.join(root, "train-mmdet3", name)


def _route_logs_to_the_task_log() -> None:
    """The app's own log lines (download progress, sync, uploads) through the SDK's logger
    handlers, so they appear in the platform's task log in its format."""
    import logging

    ours = logging.getLogger("src")
    ours.setLevel(logging.INFO)
    ours.handlers = list(sly.logger.handlers)  # still propagates: test log capture sees them


API_TOKEN_VARIABLE = "TRAIN_MMDET3_API_TOKEN"


def _app_token() -> str | None:
    """The app's token: none on the platform unless set (its proxy authenticates every request
    to the app); locally the variable's value, or a fresh one, printed for the user."""
    given = os.environ.get(API_TOKEN_VARIABLE)
    if sly.is_production():
        return given or None
    if given:
        return given
    token = secrets.token_urlsafe(24)
    print(
        f"HTTP API token (send 'Authorization: Bearer <token>' to /api/*, and to every route when "
        f"the server listens beyond this machine; set {API_TOKEN_VARIABLE} to choose it): {token}",
        flush=True,
    )
    return token


def _announce_when_listening(token: str | None) -> None:
    """Once uvicorn listens (it binds after this module is imported): where, and the URL to
    open, with the token when the page needs it."""
    for line in start_lines(wait_until_listening(), token):
        print(line, flush=True)


TRAIN_TASK_VARIABLE = "modal.state.trainTaskId"  # the Experiments page's "train again"
TRAIN_MODE_VARIABLE = "modal.state.trainMode"  # "new" or "continue" (its best checkpoint)


def _train_mode() -> str:
    return os.environ.get(TRAIN_MODE_VARIABLE) or "new"


def _experiment_to_start_from(services) -> tuple[Experiment | None, str]:
    """The experiment the platform's Experiments page started the app from (its training task
    in ``modal.state.trainTaskId``), or why it cannot be read (the app starts without it)."""
    from src.core.errors import RequestError

    task = os.environ.get(TRAIN_TASK_VARIABLE)
    if not task:
        return None, ""
    try:
        return services.experiment_of_task(int(task)), ""
    except (ValueError, RequestError) as exc:
        problems = getattr(exc, "problems", [str(exc)])
        return None, f"cannot start from task {task}'s experiment: {'; '.join(problems)}"


def _tensorboard_link(api: sly.Api, task_id: int) -> str:
    """Where the page's TensorBoard button points on the platform: this session's address
    (``/net/<session token>``, as the SDK's TrainApp builds it)."""
    try:
        token = api.task.get_info_by_id(task_id)["meta"]["sessionToken"]
        return f"{api.server_address}/net/{token}{PREFIX}/"
    except Exception:  # an older instance: the link relative to the page
        return PREFIX.lstrip("/") + "/"


def _end_with_the_app(
    application: sly.Application, controller: TrainingController, board: TensorBoard
) -> None:
    """The run and TensorBoard end with the app. The SDK's shutdown (the platform's Stop,
    ``/sly/shutdown``, ``app.stop()``) stops the run gracefully first; Ctrl-C or SIGTERM to
    uvicorn end the server without the SDK's callbacks, so the server's own shutdown stops
    TensorBoard too. A SIGKILL runs neither: the children end by the kernel's signal
    (``src.training.children``)."""
    application.call_before_shutdown(controller.shutdown)
    application.call_before_shutdown(board.stop)
    application.get_server().router.add_event_handler("shutdown", board.stop)


def _platform_app(
    app_data: str, board: TensorBoard, holder: dict[str, Any]
) -> tuple[TrainingController, LocalProject, AppUI, AuditService]:
    """On the platform: the controller with the platform's services, the project the app was
    started from (or the experiment's), the UI, filled from an experiment when the
    Experiments page started the app (``holder["app"]``: the application, once built), and the
    audit service; pre-labelled and audited copies are published as projects."""
    api = sly.Api.from_env()
    task_id = sly.env.task_id()
    services = platform_services(api, sly.env.team_id(), task_id, _cache_dir("projects"))
    copies = PlatformCopies(api, sly.env.team_id(), task_id)
    experiment, experiment_problem = _experiment_to_start_from(services)
    project_id = sly.env.project_id(raise_not_found=False)
    if project_id is None and experiment is not None:  # the Experiments page: its project
        project_id = experiment.project_id
    project = services.resolve_project(project_id, "")

    controller = TrainingController(
        app_data,
        services.store,
        cache_dir=_cache_dir("datasets"),
        project_resolver=services.resolve_project,
        sync=_sync_policy(default_epochs=1),
        after_upload=services.set_output,
        record_inputs=services.record_inputs,
        on_run_start=board.serve,
        cleanup_after_upload=True,
        stop_signals=[lambda: holder["app"].is_stopped()],
        run_context=lambda: holder["app"].handle_stop(graceful=True),
        on_run_end=lambda outcome: run_ended(
            holder["app"], holder["audits"].running, outcome, holder["ui"].prelabel.after_run
        ),
        run_id_base=str(task_id),
        task_id=task_id,
        copies=copies,
    )

    audits = AuditService(
        controller, copies, on_end=lambda state: audit_ended(holder["app"], state),
        run_context=lambda: holder["app"].handle_stop(graceful=True),
    )  # fmt: skip
    holder["audits"] = audits
    ui = AppUI(project, controller, team_id=sly.env.team_id(),
               tensorboard_link=_tensorboard_link(api, task_id), audits=audits,
               on_platform=True)  # fmt: skip
    holder["ui"] = ui
    if experiment is not None:  # started from the Experiments page: every step filled
        ui.load_experiment(folder=experiment.folder, best=experiment.best_checkpoint,
                           mode=_train_mode())  # fmt: skip
    elif experiment_problem:
        ui.experiment.show_problem(experiment_problem)
    return controller, project, ui, audits


def _local_app(
    app_data: str, board: TensorBoard
) -> tuple[TrainingController, LocalProject, AppUI, AuditService]:
    """Off the platform: the project of ``PROJECT_DIR``, a local folder as Team Files."""
    project_dir = os.environ.get("PROJECT_DIR")
    if not project_dir:
        raise RuntimeError("set PROJECT_DIR to a local Supervisely project (make app does)")
    store = LocalArtifactStore(os.environ.get("TEAM_FILES_DIR", "artifacts/team_files"))
    controller = TrainingController(
        app_data, store, cache_dir=_cache_dir("datasets"), sync=_sync_policy(None),
        on_run_start=board.serve,
    )  # fmt: skip
    project = open_local_project(project_dir)
    audits = AuditService(controller)
    ui = AppUI(project, controller, local_folder=os.getcwd(), tensorboard_link=PREFIX + "/",
               audits=audits)  # fmt: skip
    return controller, project, ui, audits


def create_app() -> sly.Application:
    _route_logs_to_the_task_log()
    # before CUDA initialises (the allocator reads it once); a user's own setting is kept
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", CUDA_ALLOC_CONF)
    os.environ.setdefault("SLY_APP_DATA_DIR", os.path.abspath("artifacts/app_data"))
    app_data = sly.app.get_synced_data_dir()
    holder: dict[str, Any] = {}
    board = TensorBoard(log_file=os.path.join(app_data, TENSORBOARD_LOG))
    if sly.is_production():
        controller, project, ui, audits = _platform_app(app_data, board, holder)
    else:
        controller, project, ui, audits = _local_app(app_data, board)
    application = sly.Application(layout=ui.layout)
    holder["app"] = application
    token = _app_token()
    mount_api(application.get_server(), controller, default_project=project, audits=audits)
    mount_tensorboard(application.get_server(), board)
    guard_server(application.get_server(), token, on_platform=sly.is_production())
    if not sly.is_production():
        threading.Thread(
            target=_announce_when_listening, args=(token,), name="announce", daemon=True
        ).start()
    _end_with_the_app(application, controller, board)
    threading.Thread(target=warm_up_imports, name="warm-up", daemon=True).start()
    application.ui = ui  # for tests and debugging
    application.controller = controller
    return application


app = create_app()
