"""TrainingSession: one run's Runner in a daemon thread (``src.training.session_base``), or its
ranks in several processes (``src.training.distributed``) when the run trains on several devices.
The session's states, status (``src.training.session_reports``) and the errors are re-exported here,
where callers look for them."""

from __future__ import annotations

from src.training.distributed import run_ranks
from src.training.session_base import SessionBase, SessionBusyError, warm_up_imports
from src.training.session_reports import SessionState, SessionStatus, _Recorder

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
