"""Where artifacts go: Team Files over real HTTP (``tests/sly_server.py``) with verified uploads,
retries, timeouts and swap-in re-uploads; and the local folder store with the same methods."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.runs.storage import (
    LocalArtifactStore,
    RemoteFile,
    TeamFilesArtifactStore,
    UploadError,
    install_request_timeouts,
)
from tests.sly_server import TEAM_ID


def _local_run(tmp_path: Path) -> Path:
    local = tmp_path / "local_run"
    (local / "logs").mkdir(parents=True)
    (local / "config.py").write_text("x = 1\n")
    (local / "weights.pth").write_bytes(b"w" * 5000)
    (local / "logs" / "run.log").write_text("log\n")
    return local


def test_upload_verified_and_stale_files_removed(fake, tmp_path):
    store = TeamFilesArtifactStore(fake.api(), TEAM_ID, backoff_s=0)
    remote = "/mmdetection-3/1_p"
    (fake.state.local(remote)).mkdir(parents=True)
    (fake.state.local(remote) / "old.pth").write_bytes(b"old")  # from an earlier upload
    assert store.upload_dir(_local_run(tmp_path), remote) == remote
    assert {f.path: f.size for f in store.list(remote)} == {
        f"{remote}/config.py": 6,
        f"{remote}/weights.pth": 5000,
        f"{remote}/logs/run.log": 4,
    }


def test_local_store_has_the_same_methods_as_team_files(tmp_path):
    """The headless stand-in: one file up, listed with its size, down again, removed."""
    store = LocalArtifactStore(tmp_path / "team")
    source = tmp_path / "w.pth"
    source.write_bytes(b"w" * 300)
    store.upload_file(source, "/mmdetection-3/1_p/resume/w.pth")
    assert store.list("/mmdetection-3/1_p") == [RemoteFile("/mmdetection-3/1_p/resume/w.pth", 300)]
    back = store.download("/mmdetection-3/1_p/resume/w.pth", tmp_path / "back" / "w.pth")
    assert back.read_bytes() == b"w" * 300
    store.remove("/mmdetection-3/1_p/resume/w.pth")
    assert not store.exists("/mmdetection-3/1_p/resume/w.pth")
    with pytest.raises(FileNotFoundError):
        store.download("/mmdetection-3/1_p/resume/w.pth", tmp_path / "again.pth")
    with pytest.raises(ValueError, match="outside"):
        store.upload_file(source, "/../escape.pth")


def test_upload_retries_after_server_errors(fake, tmp_path):
    store = TeamFilesArtifactStore(fake.api(), TEAM_ID, backoff_s=0)
    fake.state.fail("file-storage.bulk.upload", 500, times=2)
    store.upload_dir(_local_run(tmp_path), "/mmdetection-3/2_p")
    assert fake.state.calls.count("file-storage.bulk.upload") == 3 + 2
    assert fake.state.local("/mmdetection-3/2_p/weights.pth").read_bytes() == b"w" * 5000


def test_a_stalled_request_times_out_and_is_retried(fake, tmp_path):
    """The SDK sends its requests with no timeout; ours have one, so a connection that stops
    moving fails and the retry fires instead of hanging forever."""
    import threading

    store = TeamFilesArtifactStore(fake.api(), TEAM_ID, backoff_s=0, timeout_s=(5.0, 1.0))
    fake.state.stall("file-storage.bulk.upload", seconds=120)
    done = threading.Thread(
        target=store.upload_dir, args=(_local_run(tmp_path), "/mmdetection-3/5_p"), daemon=True
    )
    done.start()
    done.join(60)
    assert not done.is_alive(), "the upload hangs on a stalled connection"
    assert fake.state.local("/mmdetection-3/5_p/weights.pth").read_bytes() == b"w" * 5000
    install_request_timeouts()  # the app's defaults again for the other tests


def test_a_reupload_never_removes_a_file_before_its_replacement_is_in(fake, tmp_path):
    """Team Files cannot rename: a changed file goes to .incoming/ first; if putting it in
    place fails, Team Files still holds a complete copy of it (old or new)."""
    store = TeamFilesArtifactStore(fake.api(), TEAM_ID, attempts=1, backoff_s=0)
    remote = "/mmdetection-3/6_p"
    local = _local_run(tmp_path)
    store.upload_dir(local, remote)
    (local / "config.py").write_text("x = 2  # the resumed run's\n")
    calls = fake.state.calls.count("file-storage.bulk.upload")
    # the upload into .incoming works, the one into place fails
    fake.state.fail("file-storage.bulk.upload", 500, times=50, after=1)
    with pytest.raises(UploadError):
        store.upload_dir(local, remote)
    copies = [
        fake.state.local(f"{remote}/{name}").read_text()
        for name in ("config.py", ".incoming/config.py")
        if fake.state.local(f"{remote}/{name}").is_file()
    ]
    assert "x = 2  # the resumed run's\n" in copies or "x = 1\n" in copies
    fake.state.heal()
    store.upload_dir(local, remote)
    assert fake.state.local(f"{remote}/config.py").read_text() == "x = 2  # the resumed run's\n"
    assert not fake.state.local(f"{remote}/.incoming/config.py").exists()
    uploads = fake.state.calls.count("file-storage.bulk.upload") - calls
    # failed try: config.py into .incoming and into place; retry: config.py (its old copy is
    # gone: straight into place), logs/run.log swapped in (2); the unchanged checkpoint (same
    # name, same size) is not sent again
    assert uploads == 2 + 1 + 2, fake.state.calls


def test_permanent_upload_failure_says_where_the_files_are(fake, tmp_path):
    store = TeamFilesArtifactStore(fake.api(), TEAM_ID, attempts=3, backoff_s=0)
    fake.state.fail("file-storage.bulk.upload", 503, times=50)
    local = _local_run(tmp_path)
    with pytest.raises(UploadError, match="after 3 tries") as err:
        store.upload_dir(local, "/mmdetection-3/3_p")
    assert str(local) in str(err.value)
    assert fake.state.calls.count("file-storage.bulk.upload") == 3
    fake.state.heal()
    forbidden = TeamFilesArtifactStore(fake.api(), TEAM_ID, attempts=3, backoff_s=0)
    fake.state.fail("file-storage.bulk.upload", 403, times=5)
    with pytest.raises(UploadError, match="after 1 tries"):  # not transient: no retry
        forbidden.upload_dir(local, "/mmdetection-3/3_p")
