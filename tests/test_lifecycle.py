"""When the app ends on the platform (``src.web.lifecycle``): what ``app.stop()`` and the graceful
wait are told at each end of work, with an app that records the calls (the real
``sly.Application`` ends the process: tests/test_app_shutdown.py has that)."""

from __future__ import annotations

import pytest

from src.training.end_of_run import RunOutcome
from src.web.lifecycle import audit_ended, run_ended

STOP, RELEASE = "stop", "release"  # app.stop(); app.handle_stop(graceful=False)


class RecordingApp:
    def __init__(self, stopped: bool = False) -> None:
        self.stopped, self.calls = stopped, []

    def stop(self) -> None:
        self.calls.append(STOP)

    def is_stopped(self) -> bool:
        return self.stopped

    def handle_stop(self, graceful: bool = True) -> None:
        assert graceful is False, "only the runs' own context waits gracefully"
        self.calls.append(RELEASE)


def no_follow_up(run_id, then) -> bool:
    return False


@pytest.mark.parametrize(
    ("state", "stopped", "audit_running", "expected"),
    [
        ("finished", False, False, [STOP]),  # the app's work is done
        ("stopped", False, False, [RELEASE]),  # Stop: offered for resume, the app stays
        ("failed", False, False, [RELEASE]),  # its error on screen
        ("stopped", True, False, [STOP]),  # the platform is stopping the app
        ("finished", False, True, []),  # an audit's fold: the audit's end decides
        ("stopped", True, True, []),  # ... even when the platform stops it (the audit ends)
    ],
)  # fmt: skip
def test_a_runs_end(state, stopped, audit_running, expected):
    app = RecordingApp(stopped)
    run_ended(app, audit_running, RunOutcome(run_id="r", state=state), no_follow_up)
    assert app.calls == expected


def test_a_finished_run_with_its_pre_labelling_stops_the_app_when_that_ends():
    app, started = RecordingApp(), []

    def follow_up(run_id, then) -> bool:
        started.append((run_id, then))
        return True

    run_ended(app, False, RunOutcome(run_id="r7", state="finished"), follow_up)
    assert app.calls == [] and [r for r, _ in started] == ["r7"]  # not yet: it pre-labels
    started[0][1]()  # the pre-labelling ended
    assert app.calls == [STOP]


def test_no_pre_labelling_follows_a_run_the_platform_stopped():
    app = RecordingApp(stopped=True)
    run_ended(app, False, RunOutcome(run_id="r", state="finished"), lambda r, t: 1 / 0)
    assert app.calls == [STOP]


PROJECT = {"id": 9, "name": "p (label audit a)", "link": "x", "images": 3}


@pytest.mark.parametrize(
    ("state", "stopped", "expected"),
    [
        ({"state": "done", "platform_project": PROJECT}, False, [STOP]),
        ({"state": "done", "platform_problem": "upload failed"}, False, [RELEASE]),
        ({"state": "done"}, False, [RELEASE]),  # not published: its outputs are only here
        ({"state": "stopped", "stopped_at": 2}, False, [RELEASE]),  # offered to continue
        ({"state": "failed", "error": "x"}, False, [RELEASE]),
        ({"state": "stopped", "stopped_at": 2}, True, [STOP]),  # the platform stops the app
    ],
)  # fmt: skip
def test_an_audits_end(state, stopped, expected):
    app = RecordingApp(stopped)
    audit_ended(app, state)
    assert app.calls == expected
