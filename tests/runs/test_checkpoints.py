"""Checkpoint safety: allowlisted loading, corrupt files reported, crash-safe writes."""

from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from src.runs.atomic_files import write_bytes_atomic
from src.runs.checkpoint_io import CheckpointError, export_for_inference, load_checkpoint_file
from src.runs.checkpoints import newest_resumable_checkpoint
from src.setup.prepare import RequestError
from src.setup.resume import resolve_resumable
from src.training.session import SessionState
from tests.helpers import run, small_cfg


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, demo_project):
    """A 2-epoch run in an app-data dir: epoch_1.pth, epoch_2.pth, config.py."""
    app = tmp_path_factory.mktemp("ckpt") / "app"
    _, status = run(small_cfg(demo_project, app / "r", epochs=2), "r")
    assert status.state == SessionState.FINISHED, status.traceback
    return app


@pytest.fixture(params=["safe_globals", "restricted_unpickler"])
def loader(request, monkeypatch):
    """Both ways the allowlist is enforced: torch's ``safe_globals`` (torch >= 2.4) and the
    restricted unpickler the production image's torch 2.1 uses (forced here on any torch)."""
    import src.runs.checkpoint_io

    monkeypatch.setattr(
        src.runs.checkpoint_io,
        "_FORCE_RESTRICTED_UNPICKLER",
        request.param == "restricted_unpickler",
    )
    return request.param


def test_mmengine_checkpoints_load_under_weights_only(trained_run, loader):
    checkpoint = load_checkpoint_file(trained_run / "r" / "epoch_2.pth")
    assert {"state_dict", "optimizer", "message_hub", "param_schedulers", "rng_state"} <= set(
        checkpoint
    )
    # plain torch.load (weights_only=True on torch >= 2.6) refuses it: the allowlist is needed,
    # and loading through it above left torch's own allowlist as it was
    refused = r"Unsupported global: GLOBAL mmengine\.logging\.history_buffer\.HistoryBuffer"
    with pytest.raises(pickle.UnpicklingError, match=refused):
        torch.load(trained_run / "r" / "epoch_2.pth", weights_only=True)


def test_a_foreign_global_is_refused_by_name(tmp_path, loader):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "meta": {"x": argparse.Namespace(a=1)}}, path)
    with pytest.raises(CheckpointError, match=r"argparse\.Namespace"):
        load_checkpoint_file(path)


def test_truncated_checkpoint_is_reported_and_the_previous_offered(trained_run, tmp_path, loader):
    import shutil

    app = tmp_path / "app"
    shutil.copytree(trained_run, app)
    newest = app / "r" / "epoch_2.pth"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"epoch_2\.pth is truncated or corrupt"):
        load_checkpoint_file(newest)
    checkpoint, meta, skipped = newest_resumable_checkpoint(app / "r")
    assert checkpoint.name == "epoch_1.pth" and meta["epoch"] == 1
    assert any("epoch_2.pth" in s for s in skipped)
    with pytest.raises(RequestError, match=r"newest good checkpoint of this run is .*epoch_1\.pth"):
        resolve_resumable(app, str(newest))


def test_inference_export_loads_with_plain_torch_load(trained_run, tmp_path):
    out = export_for_inference(trained_run / "r" / "epoch_2.pth", tmp_path / "model.pth")
    checkpoint = torch.load(out, weights_only=True)  # what mmdet's init_detector does
    assert set(checkpoint) == {"state_dict", "meta"}
    assert checkpoint["meta"]["dataset_meta"]["classes"] == ["square", "circle", "triangle"]
    full = load_checkpoint_file(trained_run / "r" / "epoch_2.pth")
    assert all(torch.equal(full["state_dict"][k], v) for k, v in checkpoint["state_dict"].items())


WRITER = """
import sys
sys.path.insert(0, {root!r})
from src.runs.atomic_files import write_bytes_atomic
write_bytes_atomic(b"x" * (600 * 1024 * 1024), {path!r})
"""


def test_sigkill_during_a_checkpoint_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "epoch_3.pth"
    write_bytes_atomic(b"previous complete checkpoint", target)
    root = str(Path(__file__).resolve().parents[2])
    proc = subprocess.Popen([sys.executable, "-c", WRITER.format(root=root, path=str(target))])
    deadline = time.time() + 60
    partial = None
    while time.time() < deadline and partial is None:
        partial = next((p for p in tmp_path.glob(".epoch_3.pth.tmp*") if p.stat().st_size), None)
        time.sleep(0.001)
    proc.kill()
    proc.wait(30)
    assert partial is not None, "the writer never started"
    assert partial.stat().st_size < 600 * 1024 * 1024  # killed mid-write
    assert target.read_bytes() == b"previous complete checkpoint"


def test_a_checkpoint_that_would_run_a_command_is_refused_by_name(tmp_path, loader):
    import os

    class RunsACommand:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "meta": {"x": RunsACommand()}}, path)
    with pytest.raises(CheckpointError, match=r"posix\.system, which is not among the types"):
        load_checkpoint_file(path)
    assert not (tmp_path / "pwned").exists()


def test_the_restricted_unpickler_is_what_runs_without_safe_globals(trained_run, monkeypatch):
    """A torch without ``safe_globals`` (2.1) takes the restricted unpickler, not a plain load."""
    import src.runs.checkpoint_io

    monkeypatch.delattr(torch.serialization, "safe_globals", raising=False)
    used = []
    real = src.runs.checkpoint_io._RestrictedUnpickler.find_class

    def spy(self, module, name):
        used.append(f"{module}.{name}")
        return real(self, module, name)

    monkeypatch.setattr(src.runs.checkpoint_io._RestrictedUnpickler, "find_class", spy)
    checkpoint = load_checkpoint_file(trained_run / "r" / "epoch_2.pth")
    assert "message_hub" in checkpoint
    assert "mmengine.logging.history_buffer.HistoryBuffer" in used


@pytest.fixture
def http_files(tmp_path):
    """A local HTTP server for checkpoint URLs (no network is used)."""
    import functools
    import http.server
    import threading

    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_checkpoints_by_url_are_downloaded_then_loaded_through_the_allowlist(
    trained_run, tmp_path, http_files, monkeypatch
):
    """Pretrained weights, --weights URLs and load_from in an edited config reach mmengine's
    URL loader, which trusted every pickle: now the file is downloaded and allowlisted."""
    import os
    import shutil

    from mmengine.runner.checkpoint import CheckpointLoader

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    root, base = http_files
    shutil.copy(trained_run / "r" / "epoch_2.pth", root / "good.pth")

    class RunsACommand:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"state_dict": {}, "meta": {"x": RunsACommand()}}, root / "evil.pth")
    good = CheckpointLoader.load_checkpoint(f"{base}/good.pth", map_location="cpu")
    assert "state_dict" in good
    assert (tmp_path / "torch_home" / "hub" / "checkpoints" / "good.pth").is_file()  # cached
    with pytest.raises(CheckpointError, match=r"posix\.system"):
        CheckpointLoader.load_checkpoint(f"{base}/evil.pth", map_location="cpu")
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(CheckpointError, match="cannot download"):
        CheckpointLoader.load_checkpoint(f"{base}/missing.pth", map_location="cpu")
    assert not list((tmp_path / "torch_home" / "hub" / "checkpoints").glob("*missing*"))


def test_a_stalled_checkpoint_download_times_out_and_leaves_nothing(tmp_path, monkeypatch):
    import socket

    import src.runs.checkpoint_io
    from src.runs.checkpoint_io import download_checkpoint

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)  # accepts the connection, never answers
    monkeypatch.setattr(src.runs.checkpoint_io, "DOWNLOAD_TIMEOUT_S", 0.5)
    url = f"http://127.0.0.1:{server.getsockname()[1]}/weights.pth"
    with pytest.raises(CheckpointError, match="cannot download"):
        download_checkpoint(url, tmp_path / "hub")
    assert not (tmp_path / "hub").exists() or not any((tmp_path / "hub").iterdir())
    server.close()
    with pytest.raises(CheckpointError, match="not an http"):
        download_checkpoint("file:///etc/passwd", tmp_path / "hub")
