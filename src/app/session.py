"""TrainingSession: one run's Runner in a daemon thread (``src.app.session_base``), or its
ranks in several processes (``src.app.distributed``) when the run trains on several devices.
The session's states, status (``src.app.session_reports``) and the errors are re-exported here,
where callers look for them."""

from __future__ import annotations

from src.app.distributed import run_ranks
from src.app.session_base import SessionBase, SessionBusyError, warm_up_imports
from src.app.session_reports import SessionState, SessionStatus, _Recorder

__all__ = [
    "SessionBusyError",
    "SessionState",
    "SessionStatus",
    "TrainingSession",
    "_Recorder",
    "warm_up_imports",
]


class TrainingSession(SessionBase):
    """A run's session (:class:`SessionBase`) that trains in ``world_size`` processes when its
    config asks for several devices: the ranks train, this thread relays what rank 0 reports."""

    def _run_ranks(self) -> SessionState:
        return run_ranks(self)
