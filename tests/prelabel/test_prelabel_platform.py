"""Pre-labelling on the platform (``to_platform``, ``src.publish.platform_project``): the project
the app downloaded is pre-labelled into app data and published as a new project, through the
real ``sly.Api`` over HTTP against the protocol server (``tests/sly_server.py``, which refuses
what the platform would). The run is the no-training one of ``conftest.py``."""

from __future__ import annotations

import json

import pytest

from src.core.errors import PublishError, RequestError
from src.core.layout import ARTIFACTS_ROOT
from src.data.project import download_project
from src.data.reader import list_items
from src.prelabel.labels import CONFIDENCE_TAG
from src.prelabel.prelabel import PrelabelRequest
from src.publish.platform_project import PlatformCopies
from src.runs.storage import LocalArtifactStore
from src.training.controller import TrainingController
from tests.prelabel.conftest import UNLABELLED
from tests.sly_server import PROJECT_ID, TASK_ID, TEAM_ID, FakeSupervisely

TASK_NODE = {"type": "task", "id": TASK_ID}


@pytest.fixture
def platform(tmp_path, project):
    """The partly unlabelled project served as PROJECT_ID, downloaded as the app downloads it."""
    with FakeSupervisely(tmp_path / "team_files") as fake:
        fake.state.add_project(project, PROJECT_ID)
        api = fake.api()
        api.app.workflow.enable()  # off outside ENV=production; the platform's app has it on
        local = download_project(api, PROJECT_ID, tmp_path / "projects")
        yield fake, api, local


def _controller(app_data, tmp_path, api) -> TrainingController:
    return TrainingController(
        app_data, LocalArtifactStore(tmp_path / "store"),
        copies=PlatformCopies(api, TEAM_ID, TASK_ID),
    )  # fmt: skip


def _remote(fake, project_id: int) -> dict[str, tuple[bytes, dict]]:
    """``dataset path/name`` -> (bytes, annotation) of a served project."""
    project = fake.state.projects[project_id]
    by_id = {d.id: d for d in project.datasets}

    def path(dataset_id: int) -> str:
        ds = by_id[dataset_id]
        return f"{path(ds.parent_id)}/{ds.name}" if ds.parent_id else ds.name

    return {f"{path(i.dataset_id)}/{i.name}": (i.data, i.ann) for i in project.images}


def test_the_copy_is_published_as_a_new_project_with_the_same_images_and_its_predictions(
    platform, app_data, tmp_path
):
    """A user's view: a new project beside theirs, named for the run, with the same datasets
    (nested too) and images, the predictions on the images that had none, each with its
    confidence tag; their own project as it was; the workflow shows the new project as this
    task's output."""
    fake, api, local = platform
    source_before = _remote(fake, PROJECT_ID)
    request = PrelabelRequest("r1", str(local.directory), str(tmp_path / "out"), to_platform=True)
    result = _controller(app_data, tmp_path, api).prelabel(request)

    published = result.platform_project
    assert published["name"] == f"{local.name} (pre-labelled by r1)"
    assert published["link"] == f"{fake.address}/projects/{published['id']}/datasets"
    copy = _remote(fake, published["id"])
    assert published["images"] == len(copy) == len(source_before)
    assert any(name.startswith("train/extra/") for name in copy)  # the nested dataset
    local_copy = {name: json.loads(p.read_text()) for name, p in list_items(result.out_dir)}
    predicted = 0
    for name, (data, ann) in copy.items():
        assert data == source_before[name][0]  # the same image (added by id)
        objects = local_copy[name]["objects"]
        assert [o["classTitle"] for o in ann["objects"]] == [o["classTitle"] for o in objects]
        if name.startswith(UNLABELLED):
            predicted += len(ann["objects"])
            for obj in ann["objects"]:
                assert [t["name"] for t in obj["tags"]] == [CONFIDENCE_TAG]
    assert predicted > 0
    assert _remote(fake, PROJECT_ID) == source_before  # the user's project is untouched
    meta = fake.state.projects[published["id"]].meta
    assert CONFIDENCE_TAG in [t["name"] for t in meta["tags"]]
    assert ("output", {"teamId": TEAM_ID, "node": TASK_NODE, "type": "project",
                       "id": published["id"]}) in fake.state.workflow  # fmt: skip


def test_a_failed_publication_leaves_no_half_project_and_says_where_the_copy_is(
    platform, app_data, tmp_path
):
    fake, api, local = platform
    fake.state.fail("annotations.bulk.add", 500, times=20)
    out = tmp_path / "out"
    request = PrelabelRequest("r1", str(local.directory), str(out), to_platform=True)
    with pytest.raises(PublishError, match=f"the copy is in {out}"):
        _controller(app_data, tmp_path, api).prelabel(request)
    assert set(fake.state.projects) == {PROJECT_ID}  # the half-made project was removed
    assert len(list_items(out)) == len(list_items(local.directory))  # the copy is kept
    fake.state.heal()


def test_a_project_not_from_the_platform_is_refused_before_the_model_loads(
    platform, app_data, tmp_path, project
):
    fake, api, _ = platform
    request = PrelabelRequest("r1", str(project), str(tmp_path / "out"), to_platform=True)
    with pytest.raises(RequestError, match="only a project downloaded from the platform"):
        _controller(app_data, tmp_path, api).prelabel(request)
    assert not (tmp_path / "out").exists()
    assert "projects.add" not in fake.state.calls


def test_off_the_platform_to_platform_is_refused(app_data, tmp_path, project):
    controller = TrainingController(app_data, LocalArtifactStore(tmp_path / "store"))
    request = PrelabelRequest("r1", str(project), str(tmp_path / "out"), to_platform=True)
    with pytest.raises(RequestError, match="not on the platform"):
        controller.prelabel(request)


def test_pre_labelling_with_an_uploaded_run_names_its_weights_as_the_copys_input(
    platform, app_data, tmp_path
):
    """The run is uploaded to Team Files (its experiment_info.json names its best checkpoint):
    the controller looks the weights up there, and the workflow shows them as the model-weight
    input of the new project, which is the task's output."""
    import shutil

    from src.runs.storage import TeamFilesArtifactStore

    fake, api, local = platform
    folder = fake.state.local(f"{ARTIFACTS_ROOT}/r1_{local.name}")
    folder.mkdir(parents=True)
    for name in ("config.py", "best_coco_bbox_mAP_epoch_1.pth"):
        shutil.copy(app_data / "r1" / name, folder / name)
    info = {"experiment_name": "r1 demo", "best_checkpoint": "best_coco_bbox_mAP_epoch_1.pth"}
    (folder / "experiment_info.json").write_text(json.dumps(info))
    store = TeamFilesArtifactStore(api, TEAM_ID, backoff_s=0)
    controller = TrainingController(app_data, store, copies=PlatformCopies(api, TEAM_ID, TASK_ID))
    request = PrelabelRequest("r1", str(local.directory), str(tmp_path / "out"), to_platform=True)
    published = controller.prelabel(request).platform_project
    weights = api.file.get_info_by_path(
        TEAM_ID, f"{ARTIFACTS_ROOT}/r1_{local.name}/best_coco_bbox_mAP_epoch_1.pth"
    )
    assert fake.state.workflow == [
        ("input", {"teamId": TEAM_ID, "node": TASK_NODE, "type": "model_weight",
                   "id": weights.id}),
        ("output", {"teamId": TEAM_ID, "node": TASK_NODE, "type": "project",
                    "id": published["id"]}),
    ]  # fmt: skip
