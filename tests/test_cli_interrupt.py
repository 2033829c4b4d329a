"""Ctrl-C during ``python -m src.cli train`` (docs/stop-resume.md): the first stops after the
current batch (a checkpoint is saved, the run is uploaded, exit 0 with the resume command);
"Ctrl-C twice aborts": the second ends the process at once (exit 130), without waiting for the
graceful stop's checkpoint and upload."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL = "rtmdet_tiny_8xb32-300e_coco"


class Output:
    """A process's stdout and stderr, read in threads as they come (a full pipe would block it);
    tqdm's bar redraws with carriage returns, so both are split on those as well as on newlines.
    ``wait_for`` blocks until a piece of one of them matches, or the deadline."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.pieces: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.changed = threading.Condition()
        self.readers = [
            threading.Thread(target=self._read, args=(stream, name), daemon=True)
            for name, stream in (("stdout", process.stdout), ("stderr", process.stderr))
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, stream, name: str) -> None:
        pending = ""
        while chunk := os.read(stream.fileno(), 4096).decode(errors="replace"):
            *done, pending = re.split(r"[\r\n]", pending + chunk)
            with self.changed:
                self.pieces[name] += done
                self.changed.notify_all()
        with self.changed:
            self.pieces[name].append(pending)
            self.pieces[name].append(None)  # the end of the stream
            self.changed.notify_all()

    def text(self, name: str) -> str:
        with self.changed:
            return "\n".join(p for p in self.pieces[name] if p is not None)

    def wait_for(self, name: str, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = [p for p in self.pieces[name] if p is not None and re.search(pattern, p)]
                if found:
                    return found[0]
                ended = None in self.pieces[name]
                left = deadline - time.monotonic()
                if ended or left <= 0:
                    break
                self.changed.wait(left)
        raise AssertionError(
            f"no {pattern!r} in the {name} of the CLI:\n--- stdout\n{self.text('stdout')[-3000:]}"
            f"\n--- stderr\n{self.text('stderr')[-3000:]}"
        )

    def join(self, timeout: float) -> None:
        for reader in self.readers:
            reader.join(timeout)


@pytest.mark.slow  # about a minute here (the CLI's start, the project's first read)
def test_a_second_ctrl_c_aborts_at_once(demo_project, tmp_path):
    app_data, team = tmp_path / "app", tmp_path / "team"
    process = subprocess.Popen(
        [sys.executable, "-m", "src.cli", "train", "--project", str(demo_project), "--model",
         MODEL, "--from-scratch", "--epochs", "50", "--batch-size", "2", "--input-size", "128",
         "--workers", "0", "--app-data", str(app_data), "--team-files", str(team),
         "--run-id", "twice"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    output = Output(process)
    try:
        output.wait_for("stderr", r"epoch \d+/50", timeout=300)  # the bar: it trains
        process.send_signal(signal.SIGINT)
        output.wait_for("stderr", "stopping after the current batch", timeout=60)
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    output.join(30)
    out, err = output.text("stdout"), output.text("stderr")
    assert code == 130, f"exit {code}\n--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}"
    assert err.rstrip().endswith("aborted"), err[-3000:]
    # not the graceful stop: no resume command, nothing uploaded
    assert "stopped at epoch" not in out and "resume with" not in out and "artifacts:" not in out
    assert not list(team.glob("mmdetection-3/twice_*")), list(team.rglob("*"))
