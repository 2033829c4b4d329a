"""Library chatter to the run's log (src/engine/chatter.py): by thread, nothing else touched."""

from __future__ import annotations

import io
import logging
import sys
import threading
import warnings

from src.engine.chatter import is_chatter, library_chatter_to_log


def test_the_routed_threads_prints_and_warnings_go_to_the_log_others_print(monkeypatch):
    console = io.StringIO()
    monkeypatch.setattr(sys, "stdout", console)
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    records = io.StringIO()
    logger = logging.getLogger("test-chatter")
    logger.setLevel(logging.INFO)
    logger.addHandler(logging.StreamHandler(records))

    def other_thread() -> None:
        print("from the server thread")

    with warnings.catch_warnings(), library_chatter_to_log(logger):
        warnings.simplefilter("always")  # (an import of the suite ignores UserWarning)
        print("loading annotations into memory...")
        sys.stdout.write("index ")
        sys.stdout.write("created!\n")
        warnings.warn("torch.meshgrid: pass indexing", UserWarning, stacklevel=1)
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        assert callable(sys.stdout.getvalue)  # what the stream has beyond write: the console's
    print("after the run")
    assert console.getvalue().splitlines() == ["from the server thread", "after the run"]
    logged = records.getvalue().splitlines()
    assert logged[:2] == ["[stdout] loading annotations into memory...", "[stdout] index created!"]
    assert logged[2].startswith("[warning] UserWarning: torch.meshgrid: pass indexing")
    assert all(is_chatter(line) for line in logged)
