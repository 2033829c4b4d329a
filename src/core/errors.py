"""The app's user-facing errors, each with its HTTP status and CLI exit code, declared once.

Every error a user can act on derives from :class:`AppError` and carries its problems (one line
each). The HTTP API answers ``exc.http_status`` and the CLI exits ``exc.exit_code``: no entry
point keeps a table of its own. The CLI's codes:

- 0: done; 1: a run, an evaluation or an upload failed (:data:`FAILED`);
- 2: the command line or a request is wrong, nothing was run (:data:`USAGE`, argparse's own code);
- 3: ``export`` wrote some formats but not others (``src.cli.export``).
"""

from __future__ import annotations

FAILED = 1
USAGE = 2  # what argparse exits with for a bad command line
PARTIAL_EXPORT = 3


class ConfigError(ValueError):
    """A config or parameter problem, with the line number when it comes from config text."""

    def __init__(self, message: str, line: int | None = None):
        self.line = line
        super().__init__(f"line {line}: {message}" if line else message)


class AppError(Exception):
    """One or more problems a user can act on (a message each), with how each door reports
    them: ``http_status`` for the HTTP API, ``exit_code`` for the CLI.

    Args:
        problems: the problems, one line each (a single string: one problem).
    """

    http_status = 500
    exit_code = FAILED

    def __init__(self, problems: list[str] | tuple[str, ...] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class RequestError(AppError, ValueError):
    """A request (the UI's, the API's body, the command line) that cannot run as given."""

    http_status = 400
    exit_code = USAGE


class BusyError(AppError, RuntimeError):
    """A run is in progress (or being prepared): try again when it has ended."""

    http_status = 409
    exit_code = FAILED


class StartCancelled(RequestError):
    """Stop was asked for while a run was being prepared: the run is not started."""

    http_status = 409


class EvaluationError(AppError, RuntimeError):
    """An evaluation that ran and failed (the SDK's evaluator refused the predictions)."""

    http_status = 500
    exit_code = FAILED


class RunFailed(AppError, RuntimeError):
    """A training run (or its upload) that started and failed."""

    http_status = 500
    exit_code = FAILED


class PublishError(AppError, RuntimeError):
    """A copy made here (pre-labelled, audited) that could not be published on the platform;
    the local copy is kept and the message says where."""

    http_status = 502
    exit_code = FAILED
