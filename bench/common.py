"""Shared by the benchmarks: run one measurement in a fresh child process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_child(script: str, *args: str) -> dict:
    """``python script --child ...`` in a new process; its last stdout line is the JSON result.

    A fresh process per measurement keeps peak memory and OpenMP thread pools its own."""
    out = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return json.loads(out.strip().splitlines()[-1])
