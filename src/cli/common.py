"""What several commands share: where runs and Team Files are, how a problem is reported, the
artifact store, names given on the command line.

Kept apart from the commands so that a command's module holds only that command: the paths and
the error policy (src.core.errors: 2 a usage error, 1 a failure) are written once here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from src.core.errors import USAGE, AppError, RequestError

DESCRIPTION = "Headless entry point: ``python -m src.cli {demo-project,zoo,train,runs,probe}``."
DEFAULT_APP_DATA = "artifacts/app_data"
DEFAULT_TEAM_FILES = "artifacts/team_files"
DEFAULT_CACHE = os.path.join(
    os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "train-mmdet3", "datasets"
)
APP_DATA_HELP = "app data dir (default: $SLY_APP_DATA_DIR or ./artifacts/app_data)"


class CliError(RequestError):
    """A problem with the command line's own input (a missing file or option)."""


def fail(message: str, code: int = USAGE) -> int:
    """``message`` on stderr; the exit code (src.core.errors: 2 a usage error, 1 a failure)."""
    print(f"error: {message}", file=sys.stderr)
    return code


def fail_with(exc: AppError) -> int:
    """An app error: a line per problem, and its own exit code (src.core.errors)."""
    for problem in exc.problems:
        print(f"error: {problem}", file=sys.stderr)
    return exc.exit_code


def app_data(args: argparse.Namespace) -> str:
    """The app data folder: ``--app-data``, else ``$SLY_APP_DATA_DIR``, else ./artifacts."""
    return str(
        Path(args.app_data or os.environ.get("SLY_APP_DATA_DIR") or DEFAULT_APP_DATA).resolve()
    )


def store(args: argparse.Namespace):
    """(artifact store, project resolver): Team Files of ``--team-id`` through the API
    (``SERVER_ADDRESS``/``API_TOKEN``), else the local folder standing in for it."""
    from src.runs.storage import LocalArtifactStore
    from src.setup.prepare import local_project_resolver

    if getattr(args, "team_id", None) is None:
        return LocalArtifactStore(args.team_files or DEFAULT_TEAM_FILES), local_project_resolver
    import supervisely as sly

    from src.publish.platform import platform_services

    projects = Path(DEFAULT_CACHE).parent / "projects"
    services = platform_services(sly.Api.from_env(), args.team_id, None, projects)
    return services.store, services.resolve_project


def local_controller(args: argparse.Namespace):
    """The controller over app data (``--app-data``) and the local folder that stands in for
    Team Files: what ``evaluate`` and ``export`` work through."""
    from src.runs.storage import LocalArtifactStore
    from src.training.controller import TrainingController

    return TrainingController(app_data(args), LocalArtifactStore(DEFAULT_TEAM_FILES))


def names(text: str | None, option: str) -> list[str]:
    """Class or tag names: comma-separated (each stripped), or a JSON list taken as written, for
    names with a comma or surrounding spaces (``'["car, parked", " person"]'``)."""
    if not text:
        return []
    if not text.lstrip().startswith("["):
        return [name.strip() for name in text.split(",") if name.strip()]
    try:
        given = json.loads(text)
    except ValueError:
        given = None
    if not (isinstance(given, list) and all(isinstance(n, str) and n for n in given)):
        raise CliError(
            f"{option} {text}: give comma-separated names, or a JSON list of names for names "
            """with a comma or spaces around them, e.g. '["car, parked", "person"]'"""
        )
    return given


def run_or_checkpoint(target: str) -> tuple[str, str | None]:
    """A RUN_ID in app data, or a checkpoint (.pth) of such a run: (run id, checkpoint or None)."""
    path = Path(target)
    if path.suffix == ".pth":
        return path.resolve().parent.name, str(path.resolve())
    return target, None


def print_evaluation(evaluation: dict) -> None:
    """An evaluation's line, its notes and its report: what ``evaluate`` and ``train`` print."""
    from src.evaluation.evaluate import key_metrics_line

    print(f"evaluation of {evaluation['checkpoint']}: {key_metrics_line(evaluation['metrics'])}")
    for note in evaluation.get("notes") or []:
        print(f"  {note}")
    print(f"report: {evaluation['report']}")
