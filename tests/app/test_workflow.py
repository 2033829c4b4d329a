"""Where a model came from, on the platform (``src.publish.workflow``): the project version made
before a run and the workflow's input and output nodes, through the SDK's own
``api.project.version`` and ``api.app.workflow`` over real HTTP against the protocol server, which
refuses any body the platform would not take (``tests/sly_server.py``; leaving it fails the test on
a refusal)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from src.publish.platform import platform_services
from src.publish.workflow import APP_NAME, PlatformWorkflow
from tests.sly_server import CURRENT_VERSION, PROJECT_ID, TASK_ID, TEAM_ID, FakeSupervisely

WEIGHTS = "/my-models/detector/best.pth"  # custom weights the user chose in Team Files
TASK_NODE = {"type": "task", "id": TASK_ID}


def _api(fake: FakeSupervisely):
    api = fake.api()
    api.app.workflow.enable()  # off outside ENV=production; the platform's app has it on
    return api


@pytest.fixture
def never_versioned(tmp_path, demo_project):
    """The platform with a project that has no version yet, and custom weights in Team Files."""
    with FakeSupervisely(tmp_path / "team_files") as fake:
        fake.state.add_project(demo_project, PROJECT_ID, version=None)
        weights = fake.state.local(WEIGHTS)
        weights.parent.mkdir(parents=True)
        weights.write_bytes(b"weights")
        yield fake


def test_a_project_without_a_version_gets_one_and_it_is_the_runs_input_with_the_weights(
    never_versioned, tmp_path
):
    """The run's inputs as the platform's entry records them before training (the weights as
    the run's settings name them): a new version of the project, committed with its backup in
    Team Files, is the workflow's input and the version id the run keeps; the Team Files
    weights are a model-weight input."""
    fake = never_versioned
    api = _api(fake)
    services = platform_services(api, TEAM_ID, TASK_ID, tmp_path / "projects", backoff_s=0)
    prepared = SimpleNamespace(
        project=SimpleNamespace(project_id=PROJECT_ID),
        app_state={"hyperparameters": {"weights_path": WEIGHTS}},
    )
    version_id = services.record_inputs(prepared)

    [commit] = fake.state.bodies_of("projects.versions.commit")
    assert version_id == commit["id"]  # what the run's app_state and experiment will name
    assert commit["title"] == APP_NAME
    assert commit["description"].endswith(f"before the {APP_NAME} task with ID: {TASK_ID}")
    backup = fake.state.file_path(commit["teamFileId"])  # the SDK's packed project
    assert backup.startswith(f"/system/versions/{PROJECT_ID}/") and backup.endswith(".tar.zst")
    assert api.project.get_info_by_id(PROJECT_ID).version == {"id": version_id, "version": 1}
    weights_id = api.file.get_info_by_path(TEAM_ID, WEIGHTS).id
    assert fake.state.workflow == [
        ("input", {"teamId": TEAM_ID, "node": TASK_NODE, "type": "project_version",
                   "id": version_id}),
        ("input", {"teamId": TEAM_ID, "node": TASK_NODE, "type": "model_weight",
                   "id": weights_id}),
    ]  # fmt: skip


def test_an_unchanged_project_keeps_its_version_and_no_new_one_is_made(fake):
    """Nothing changed since the project's current version: the platform says so when a
    version is reserved, none is committed, and the current one is the run's input."""
    version_id = PlatformWorkflow(_api(fake), TEAM_ID, TASK_ID).record_inputs(PROJECT_ID, None)
    assert version_id == CURRENT_VERSION["id"]
    assert "projects.versions.reserve" in fake.state.calls
    assert fake.state.bodies_of("projects.versions.commit") == []
    assert fake.state.workflow == [
        ("input", {"teamId": TEAM_ID, "node": TASK_NODE, "type": "project_version",
                   "id": CURRENT_VERSION["id"]}),
    ]  # fmt: skip


def test_the_uploaded_run_folder_is_the_output_with_its_card(fake):
    remote_dir = f"/mmdetection-3/{TASK_ID}_project"
    folder = fake.state.local(remote_dir)
    folder.mkdir(parents=True)
    (folder / "best.pth").write_bytes(b"w")
    api = _api(fake)
    PlatformWorkflow(api, TEAM_ID, TASK_ID).record_output(remote_dir, "best.pth")
    best = api.file.get_info_by_path(TEAM_ID, f"{remote_dir}/best.pth").id
    [(kind, node)] = fake.state.workflow
    assert (kind, node["type"], node["id"], node["node"]) == ("output", "folder", remote_dir,
                                                               TASK_NODE)  # fmt: skip
    assert node["meta"] == {
        "customRelationSettings": {
            "title": "<h4>Checkpoints</h4>",
            "icon": {"icon": "zmdi-folder", "color": "#FFA500", "backgroundColor": "#FFE8BE"},
            "mainLink": {"url": f"/files/{best}/true", "title": "Open Folder"},
        },
        "customNodeSettings": {
            "title": f"<h4>{APP_NAME}</h4>",
            "mainLink": {"url": f"/apps/555/sessions/{TASK_ID}", "title": "Show Results"},
        },
    }
