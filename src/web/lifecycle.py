"""When the app ends on the platform: its work done, it calls ``app.stop()`` (the platform's rule:
``seed/training-apps-overview.md``), and never while work that a user would lose is going on.

Three kinds of work end the app: a finished training run, the pre-labelling chosen to follow it
(the Pre-label card's "when training finishes"), and an audit (its folds are runs too: a fold's
end is not the app's). A platform stop (``app.is_stopped()``) waits for the work in progress (the
runs and the audit run inside ``app.handle_stop(graceful=True)``) and then ends the app. Work
that ended without its result reaching the platform (a run stopped with Stop, a failed one, an
audit stopped or not published) keeps the app up, offered to resume, with the graceful wait
released so that a later platform stop is not held by work that is over.

``app`` is the ``sly.Application`` (``stop``, ``is_stopped``, ``handle_stop``); only
``src.web.main`` calls these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from src.training.end_of_run import RunOutcome

# told a finished run's id and what to call when its follow-up is over; True: it started one
AfterRun = Callable[[str, Callable[[], None]], bool]


def run_ended(app: Any, audit_running: bool, outcome: RunOutcome, after_run: AfterRun) -> None:
    """A training run ended (``on_run_end``)."""
    if audit_running:  # an audit's fold: the audit's end decides (the graceful wait holds)
        return
    if outcome.state == "finished" and not app.is_stopped() and after_run(outcome.run_id, app.stop):
        return  # its pre-labelling stops the app when it ends
    if outcome.state == "finished" or app.is_stopped():
        app.stop()
    else:
        app.handle_stop(graceful=False)  # the wait is satisfied; nothing is raised


def audit_ended(app: Any, state: dict[str, Any]) -> None:
    """An audit ended (``AuditService.on_end``): done and published (or the platform stopping
    the app) ends the app; otherwise its outputs are only in this app's data, so it stays up."""
    published = state.get("platform_project") and not state.get("platform_problem")
    if (state["state"] == "done" and published) or app.is_stopped():
        app.stop()
    else:
        app.handle_stop(graceful=False)
