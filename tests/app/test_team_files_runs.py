"""Training flows through Team Files over real HTTP (``tests/sly_server.py``): checkpoint sync
while training, resuming bit-exactly after the agent and its app data are gone, and fine-tuning
from a run's weights in Team Files with other classes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from src.config.params import TrainParams
from src.data.project import Split, download_project
from src.publish.platform import platform_services
from src.runs.checkpoint_io import load_checkpoint_file
from src.runs.remote import find_remote_runs
from src.runs.storage import (
    LocalArtifactStore,
)
from src.setup.prepare import TrainRequest
from src.training.controller import SyncPolicy, TrainingController
from tests.sly_server import PROJECT_ID, TASK_ID, TEAM_ID

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
    assert reference.wait(600).outcome.state == "finished"
    reference_run = reference.status().run_id
    iters_per_epoch = len(reference.history()["train"]) // HYPER["epochs"]
    expected = _final_weights(
        tmp_path / "ref_data" / reference_run / f"epoch_{HYPER['epochs']}.pth"
    )

    first = _platform_controller(fake, tmp_path / "agent1", sync=SyncPolicy(every_epochs=1))

    def after_two_epochs_the_network_goes_down_and_stop() -> None:
        deadline = time.time() + 120
        while (first._slot.syncer.status.synced_iteration or 0) < 2 * iters_per_epoch:
            assert time.time() < deadline, first._slot.syncer.status
            time.sleep(0.05)
        fake.state.fail("file-storage.bulk.upload", 500, times=1000)
        first.stop()

    first.sinks.append(
        _AtIteration(2 * iters_per_epoch + 1, after_two_epochs_the_network_goes_down_and_stop)
    )
    run_id = first.start(_request(project))
    outcome = first.wait(600).outcome
    assert outcome.state == "stopped"
    assert outcome.upload_error and outcome.local_dir
    assert Path(outcome.local_dir).is_dir()  # not verified: the local files stay
    assert TASK_ID not in fake.state.outputs

    fake.state.heal()
    import shutil

    shutil.rmtree(tmp_path / "agent1")  # the agent is gone, and its disk with it
    shutil.rmtree(tmp_path / "projects")

    second = _platform_controller(fake, tmp_path / "agent2")
    listed = [r for r in second.catalog.runs() if r["run_id"] == run_id]
    assert listed and listed[0]["where"] == "Team Files"
    assert listed[0]["iteration"] == 2 * iters_per_epoch  # the epoch-2 sync
    second.resume(run_id)
    outcome = second.wait(600).outcome
    assert outcome.state == "finished" and outcome.upload_error is None

    remote_dir = find_remote_runs(second.store)[0].folder
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
    outcome = first.wait(600).outcome
    assert outcome.state == "finished", outcome
    remote_dir = outcome.artifacts.split(": ", 1)[1]
    weights = f"{remote_dir}/epoch_1.pth"

    second = _platform_controller(fake, tmp_path / "agent_b")
    request = _request(project, epochs=1, weights="custom", weights_path=weights)
    request.model, request.base_config_file = None, f"{remote_dir}/config.py"
    request.classes = ["square", "circle"]
    second.start(request)
    outcome = second.wait(600).outcome
    assert outcome.state == "finished", outcome

    log = next(fake.state.local(outcome.artifacts.split(": ", 1)[1]).glob("logs/*.log"))
    text = log.read_text()
    assert text.count("was trained for other classes (3 classes there, 2 here)") == 1
    assert "size mismatch" not in text
    assert "re-initialised" in text
