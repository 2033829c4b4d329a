"""``scripts/gpu_setup.sh`` on a CUDA machine without nvcc (issue 34, item 9): with a prebuilt
mmcv wheel for the machine it installs that and needs no compiler; without one it stops before
compiling, saying nvcc is missing. The machine is a stand-in: ``$PY`` is a script answering the
setup's questions as Python 3.12 with torch 2.11+cu130 on an H100 would, and running nothing
(pip included); no nvcc on ``PATH`` or under ``CUDA_HOME``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = "torch2.11.0-cu130-cuda13.0-sm90"
STUB = """#!/usr/bin/env bash
case "$*" in
  -V) echo "Python 3.12.3" ;;
  *"-m pip"*) exit 0 ;;
  *get_device_capability*) echo "13.0 9.0 NVIDIA_H100_80GB_HBM3" ;;
  *replace*) echo "2.11.0-cu130" ;;
  *"torch.__version__"*) echo "2.11.0+cu130" ;;
  *sysconfig*) echo "-O2" ;;
  *) cat >/dev/null ;;
esac
"""


def _setup(tmp_path: Path, prebuilt: bool) -> subprocess.CompletedProcess:
    whl = tmp_path / "whl"
    (whl / "mmcv-cuda" / KEY).mkdir(parents=True)
    (whl / "mmcv-2.1.0.tar.gz").write_bytes(b"")
    (whl / "mmengine-0.10.7-py3-none-any.whl").write_bytes(b"")
    if prebuilt:
        (whl / "mmcv-cuda" / KEY / "mmcv-2.1.0-cp312-cp312-linux_x86_64.whl").write_bytes(b"")
    python = tmp_path / "python3.12"
    python.write_text(STUB, encoding="utf-8")
    python.chmod(0o755)
    bare_path = "/usr/bin:/bin"  # no nvcc here (checked below)
    env = {"PATH": bare_path, "HOME": str(tmp_path), "PY": str(python), "WHL_DIR": str(whl),
           "SITE": str(tmp_path / "site"), "CUDA_HOME": str(tmp_path / "no-cuda")}  # fmt: skip
    assert subprocess.run(["bash", "-c", "command -v nvcc"], env=env).returncode != 0
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_setup.sh")], env=env, capture_output=True,
        text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip


def test_a_prebuilt_wheel_installs_without_nvcc(tmp_path):
    """Before the fix: "torch has CUDA but nvcc is not on PATH", exit 1, in the first step."""
    done = _setup(tmp_path, prebuilt=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"prebuilt wheel for {KEY}" in done.stdout and "nvcc" not in done.stderr
    assert "gpu-setup done" in done.stdout


def test_without_a_prebuilt_wheel_it_stops_before_compiling_for_want_of_nvcc(tmp_path):
    done = _setup(tmp_path, prebuilt=False)
    assert done.returncode == 1
    assert "nvcc is not on PATH" in done.stderr and "compiling" not in done.stdout
    assert not os.path.exists(tmp_path / "site.mmcv-9.0" / "build.log")
