"""A full disk (a file-size limit stands in for it) leaves no partial or temporary file: the
checkpoint writer, the inference export, the dataset cache and JSON writes all clean up."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# In a child: writes limited to 256 bytes per file (RLIMIT_FSIZE; SIGXFSZ ignored so the write
# fails with EFBIG, as on a full disk), then each writer tried; prints what each raised. Only the
# errors a full disk gives are caught: anything else (a bug in a writer) ends the child with its
# traceback.
CHILD = """
import json, resource, signal, sys
sys.path.insert(0, {root!r})
import torch
from src.runs.atomic_files import write_bytes_atomic, write_json_atomic
from src.runs.checkpoint_io import export_for_inference
from src.data.reader import load_split

out = {out!r}
torch.save({{"state_dict": {{"w": torch.zeros(4096)}}, "meta": {{}}}}, out + "/full.pth")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (256, 256))
for name, call in [
    ("checkpoint", lambda: write_bytes_atomic(b"x" * 10000, out + "/epoch_1.pth")),
    ("json", lambda: write_json_atomic(["x" * 10000], out + "/coco_gt_val.json")),
    ("export", lambda: export_for_inference(out + "/full.pth", out + "/best.pth")),
    ("cache", lambda: load_split({project!r}, ["square", "circle", "triangle"],
                                 "object-detection", cache_dir=out + "/cache")),
]:
    try:
        call()
        print(json.dumps([name, "wrote"]))
    except (OSError, RuntimeError) as exc:  # OSError (EFBIG); torch.save says RuntimeError
        print(json.dumps([name, type(exc).__name__, getattr(exc, "errno", None), str(exc)]))
"""


def test_failed_writes_leave_no_partial_files(tmp_path, demo_project):
    out = tmp_path / "out"
    out.mkdir()
    code = CHILD.format(root=str(ROOT), out=str(out), project=str(demo_project))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    raised = {name: tuple(rest) for name, *rest in map(json.loads, result.stdout.splitlines())}
    assert set(raised) == {"checkpoint", "json", "export", "cache"}, result.stdout
    too_large = ("OSError", errno.EFBIG, os.strerror(errno.EFBIG))  # the file-size limit's error
    for name in ("checkpoint", "json", "cache"):
        assert raised[name][:2] == too_large[:2] and too_large[2] in raised[name][2], raised
    # torch.save writes through its own zip writer, which reports the failed write in its words
    kind, _, message = raised["export"]
    assert kind == "RuntimeError", raised
    assert re.search(r"inline_container|PytorchStreamWriter|File too large", message), raised
    left = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert left == ["full.pth"], left  # no epoch_1.pth, no .*.tmp*, no half cache
