"""Platform integration over real HTTP: the real ``sly.Api`` client against a local server that
speaks the SDK's endpoints (``tests/sly_server.py``). Project download and its cache, Team Files
uploads with retries, the task output, checkpoint sync while training, resuming a run from Team
Files after the app data is gone, and fine-tuning from a run's weights in Team Files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from src.checkpoints import load_checkpoint_file
from src.config_builder import TrainParams
from src.controller import SyncPolicy, TrainingController
from src.platform_services import platform_services
from src.project import Split, download_project
from src.remote_runs import find_remote_runs
from src.service import TrainRequest
from src.storage import (
    LocalArtifactStore,
    RemoteFile,
    TeamFilesArtifactStore,
    UploadError,
    install_request_timeouts,
)
from tests.sly_server import FakeSupervisely

PROJECT_ID, TEAM_ID, TASK_ID = 77, 1, 4242


@pytest.fixture
def fake(tmp_path, hard_project):
    """Serves the project with nested datasets and hard cases."""
    with FakeSupervisely(tmp_path / "team_files") as server:
        server.state.add_project(hard_project, PROJECT_ID)
        yield server


@pytest.fixture
def fake_demo(tmp_path, demo_project):
    """Serves the small demo project (train / val datasets) for training flows."""
    with FakeSupervisely(tmp_path / "team_files") as server:
        server.state.add_project(demo_project, PROJECT_ID)
        yield server


def _files(root: Path) -> dict[str, bytes]:
    """The images of a project, by path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("img/*"))}


def _anns(root: Path) -> dict[str, dict]:
    """Annotations and meta, parsed."""
    found = {
        p.relative_to(root).as_posix(): json.loads(p.read_text())
        for p in sorted(root.rglob("ann/*.json"))
    }
    return {**found, "meta": json.loads((root / "meta.json").read_text())}


# --------------------------------------------------------------------------- project download


def test_download_then_cache_then_changed_project(fake, tmp_path, hard_project):
    api = fake.api()
    done = []
    project = download_project(api, PROJECT_ID, tmp_path / "cache", progress=done.append)
    assert project.project_id == PROJECT_ID and project.name == hard_project.name
    assert project.images == 28 and sum(done) == 28
    assert project.datasets == ["train", "train/extra", "val"]
    assert _files(project.directory) == _files(hard_project)
    assert _anns(project.directory) == _anns(hard_project)

    fake.state.calls.clear()
    again = download_project(api, PROJECT_ID, tmp_path / "cache")
    assert again.directory == project.directory
    assert fake.state.calls == ["projects.info"]  # nothing downloaded

    changed = fake.state.projects[PROJECT_ID].images[0]
    fake.state.touch_project(PROJECT_ID, changed.name, b"new bytes")
    fake.state.calls.clear()
    updated = download_project(api, PROJECT_ID, tmp_path / "cache")
    assert updated.directory != project.directory and not project.directory.exists()
    assert fake.state.calls.count("images.bulk.download") == 1  # only the changed image
    img = next(updated.directory.rglob(f"img/{changed.name}"))
    assert img.read_bytes() == b"new bytes"


def test_interrupted_download_is_never_used_and_resumes(fake, tmp_path, hard_project):
    api = fake.api(retry_count=1)
    fake.state.fail("images.bulk.download", 403, after=1)  # the second dataset's images fail
    with pytest.raises(Exception, match="403"):
        download_project(api, PROJECT_ID, tmp_path / "cache")
    leftovers = [p.name for p in (tmp_path / "cache").iterdir()]
    assert len(leftovers) == 1 and leftovers[0].endswith(".partial")  # never a usable folder

    fake.state.calls.clear()
    project = download_project(api, PROJECT_ID, tmp_path / "cache")
    n_datasets_with_images = len({i.dataset_id for i in fake.state.projects[PROJECT_ID].images})
    assert fake.state.calls.count("images.bulk.download") == n_datasets_with_images - 1
    assert _files(project.directory) == _files(hard_project)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [project.directory.name]


# --------------------------------------------------------------------------- uploads


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


# --------------------------------------------------------------------------- training flows

HYPER = dict(
    epochs=3,
    train_batch_size=4,
    val_batch_size=4,
    num_workers=0,
    input_size=(128, 128),
    lr=0.002,
    weights="scratch",
    seed=3,
    augmentation="light",
    checkpoint_interval=1,
    keep_checkpoints=3,
)


def _request(project, **params) -> TrainRequest:
    values = dict(HYPER, **params)
    return TrainRequest(
        project_dir=str(project.directory),
        project_id=project.project_id,
        project_name=project.name,
        app_data_dir="",
        model="rtmdet_tiny_8xb32-300e_coco",
        classes=list(project.classes),
        params=TrainParams(**values),
        split=Split(train_datasets=["train"], val_datasets=["val"]),
    )


class _AtIteration:
    """A metrics sink that runs ``action`` once, in the training thread, after iteration k."""

    def __init__(self, k: int, action) -> None:
        self.k, self.action, self.done = k, action, False

    def on_train_iter(self, progress) -> None:
        if progress.iteration == self.k and not self.done:
            self.done = True
            self.action()

    def on_val(self, result) -> None:
        pass


def _platform_controller(fake, app_data: Path, **kwargs) -> TrainingController:
    services = platform_services(
        fake.api(), TEAM_ID, TASK_ID, app_data.parent / "projects", backoff_s=0
    )
    services.store.attempts = 3
    return TrainingController(
        app_data,
        services.store,
        project_resolver=services.resolve_project,
        after_upload=services.set_output,
        cleanup_after_upload=True,
        **kwargs,
    )


def _final_weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint_file(path)["state_dict"]


@pytest.mark.slow
def test_agent_dies_then_run_resumes_from_team_files_bit_exactly(fake_demo, tmp_path):
    """Sync every epoch; the final upload fails and the agent's disk is lost; a new app session
    resumes the run from Team Files and ends with the weights of an uninterrupted run."""
    fake = fake_demo
    project = download_project(fake.api(), PROJECT_ID, tmp_path / "projects")

    reference = TrainingController(tmp_path / "ref_data", LocalArtifactStore(tmp_path / "ref_tf"))
    reference.start(_request(project))
    assert reference.wait(600)["outcome"]["state"] == "finished"
    reference_run = reference.status()["run_id"]
    iters_per_epoch = len(reference.history()["train"]) // HYPER["epochs"]
    expected = _final_weights(
        tmp_path / "ref_data" / reference_run / f"epoch_{HYPER['epochs']}.pth"
    )

    first = _platform_controller(fake, tmp_path / "agent1", sync=SyncPolicy(every_epochs=1))

    def after_two_epochs_the_network_goes_down_and_stop() -> None:
        deadline = time.time() + 120
        while (first._syncer.status.synced_iteration or 0) < 2 * iters_per_epoch:
            assert time.time() < deadline, first._syncer.status
            time.sleep(0.05)
        fake.state.fail("file-storage.bulk.upload", 500, times=1000)
        first.stop()

    first.sinks.append(
        _AtIteration(2 * iters_per_epoch + 1, after_two_epochs_the_network_goes_down_and_stop)
    )
    run_id = first.start(_request(project))
    outcome = first.wait(600)["outcome"]
    assert outcome["state"] == "stopped"
    assert outcome["upload_error"] and outcome["local_dir"]
    assert Path(outcome["local_dir"]).is_dir()  # not verified: the local files stay
    assert TASK_ID not in fake.state.outputs

    fake.state.heal()
    import shutil

    shutil.rmtree(tmp_path / "agent1")  # the agent is gone, and its disk with it
    shutil.rmtree(tmp_path / "projects")

    second = _platform_controller(fake, tmp_path / "agent2")
    listed = [r for r in second.runs() if r["run_id"] == run_id]
    assert listed and listed[0]["where"] == "Team Files"
    assert listed[0]["iteration"] == 2 * iters_per_epoch  # the epoch-2 sync
    second.resume(run_id)
    outcome = second.wait(600)["outcome"]
    assert outcome["state"] == "finished" and outcome["upload_error"] is None

    remote_dir = find_remote_runs(second.store)[0].remote_dir
    remote = fake.state.local(remote_dir)
    final = _final_weights(remote / f"epoch_{HYPER['epochs']}.pth")
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[k], expected[k]) for k in expected)

    config_text = (remote / "config.py").read_text()
    assert config_text.rstrip().splitlines()[-1].startswith("sly_metadata") or (
        "sly_metadata" in config_text.rstrip().rsplit("\n\n", 1)[-1]
    )
    output = fake.state.outputs[TASK_ID]["experiment"]["data"]
    assert output["artifacts_dir"] == remote_dir.rstrip("/") + "/"
    assert output["task_id"] == TASK_ID and output["framework_name"] == "MMDetection 3.0"
    assert not (tmp_path / "agent2" / run_id).exists()  # verified upload: app data freed
    state = json.loads((remote / "resume" / "state.json").read_text())
    assert state["epoch"] == HYPER["epochs"]


@pytest.mark.slow
def test_fine_tune_from_team_files_weights_with_other_classes(fake_demo, tmp_path):
    fake = fake_demo
    project = download_project(fake.api(), PROJECT_ID, tmp_path / "projects")
    first = _platform_controller(fake, tmp_path / "agent")
    first.start(_request(project, epochs=1))
    outcome = first.wait(600)["outcome"]
    assert outcome["state"] == "finished", outcome
    remote_dir = outcome["artifacts"].split(": ", 1)[1]
    weights = f"{remote_dir}/epoch_1.pth"

    second = _platform_controller(fake, tmp_path / "agent_b")
    request = _request(project, epochs=1, weights="custom", weights_path=weights)
    request.model, request.base_config_file = None, f"{remote_dir}/config.py"
    request.classes = ["square", "circle"]
    second.start(request)
    outcome = second.wait(600)["outcome"]
    assert outcome["state"] == "finished", outcome

    log = next(fake.state.local(outcome["artifacts"].split(": ", 1)[1]).glob("logs/*.log"))
    text = log.read_text()
    assert text.count("was trained for other classes (3 classes there, 2 here)") == 1
    assert "size mismatch" not in text
    assert "re-initialised" in text


def test_manifest_has_the_platform_fields():
    manifest = json.loads((Path(__file__).parent.parent / "config.json").read_text())
    for key in ("type", "name", "description", "categories", "entrypoint", "port",
                "docker_image", "context_menu", "task_location", "instance_version"):  # fmt: skip
        assert manifest.get(key), f"config.json lacks {key}"
    assert manifest["type"] == "app"
    assert {"train", "object detection", "instance segmentation", "images"} <= set(
        manifest["categories"]
    )
    assert manifest["entrypoint"] == "python -m uvicorn src.main:app --host 0.0.0.0 --port 8000"
    assert manifest["port"] == 8000
    assert "images_project" in manifest["context_menu"]["target"]
    assert manifest.get("gpu") == "preferred"
