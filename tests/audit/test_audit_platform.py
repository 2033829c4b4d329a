"""An audit on the platform (``to_platform``): the project the app downloaded is audited as
anywhere else, then its tagged copy is published as a new project beside the user's and its
report and suspects go to Team Files, through the real ``sly.Api`` over HTTP against the
protocol server (``tests/sly_server.py``, which refuses what the platform would). The app is told
when the audit ends (on the platform it stops then)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from src.audit.outputs import SCORE_TAG, SUSPECT_TAG
from src.audit.service import AUDITS_FOLDER, AuditService
from src.core.layout import ARTIFACTS_ROOT
from src.data.project import download_project
from src.publish.platform_project import PlatformCopies
from src.runs.storage import TeamFilesArtifactStore
from src.training.controller import TrainingController
from tests.audit.test_audit_api import _body
from tests.helpers import api_client
from tests.sly_server import PROJECT_ID, TASK_ID, TEAM_ID, FakeSupervisely


@pytest.fixture(scope="module")
def platform_project(tmp_path_factory):
    from src.data.demo import DemoOptions, make_demo_project

    root = tmp_path_factory.mktemp("audit_platform")
    return make_demo_project(root / "project", DemoOptions(images=8, seed=6, nested=True))


@pytest.mark.train
def test_a_platform_audit_publishes_its_tagged_copy_and_report_and_tells_the_app(
    tmp_path, platform_project
):
    with FakeSupervisely(tmp_path / "team_files") as fake:
        fake.state.add_project(platform_project, PROJECT_ID)
        api = fake.api()
        api.app.workflow.enable()
        local = download_project(api, PROJECT_ID, tmp_path / "projects")
        store = TeamFilesArtifactStore(api, TEAM_ID, backoff_s=0)
        set_as_output: list[str] = []  # the platform's after_upload: the task's output
        controller = TrainingController(
            tmp_path / "app_data", store, after_upload=set_as_output.append,
            cleanup_after_upload=True,
        )  # fmt: skip
        ended = []
        audits = AuditService(controller, PlatformCopies(api, TEAM_ID, TASK_ID), ended.append)
        with api_client(controller, audits=audits) as client:
            body = _body(local.directory, tmp_path / "out", audit_id="p1", to_platform=True)
            body["hyperparameters"]["epochs"] = 1
            started = client.post("/api/audit", json=body)
            assert started.status_code == 200, started.text
            deadline = time.monotonic() + 900
            while (state := client.get("/api/audit").json())["state"] == "running":
                assert time.monotonic() < deadline, state
                time.sleep(0.1)
        assert state["state"] == "done", state
        assert ended == [state]  # told once, with the audit's end
        assert set_as_output == []  # a fold's run is not the task's output
        uploaded = {Path(f.path).parent.name for f in store.list(ARTIFACTS_ROOT)}
        for fold in (1, 2):  # uploaded, and kept in app data (the audit predicted with it)
            assert any(name.startswith(f"p1_fold{fold}_") for name in uploaded), uploaded
            assert (tmp_path / "app_data" / f"p1_fold{fold}" / "config.py").is_file()

        published = state["platform_project"]
        assert published["name"] == f"{local.name} (label audit p1)"
        remote = fake.state.projects[published["id"]]
        assert len(remote.images) == 8
        tags = {t["name"] for t in remote.meta["tags"]}
        assert {SUSPECT_TAG, SCORE_TAG} <= tags
        suspects = json.loads((tmp_path / "out" / "suspects.json").read_text())["suspects"]
        marked = [
            tag["value"]
            for image in remote.images
            for obj in image.ann["objects"]
            for tag in obj.get("tags", [])
            if tag["name"] == SUSPECT_TAG
        ]
        assert marked and sorted(marked) == sorted(s["kind"] for s in suspects)  # each tagged
        assert state["team_files"] == f"{AUDITS_FOLDER}/p1/"
        for name in ("suspects.json", "report.html"):
            uploaded = fake.state.local(f"{AUDITS_FOLDER}/p1/{name}")
            assert uploaded.read_bytes() == (tmp_path / "out" / name).read_bytes()
        assert ("input", {"teamId": TEAM_ID, "node": {"type": "task", "id": TASK_ID},
                          "type": "project", "id": PROJECT_ID}) in fake.state.workflow  # fmt: skip
