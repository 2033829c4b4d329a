"""The protocol server refuses what the platform refuses, loudly: the real ``sly.Api`` client gets
the platform's error answer (a 4xx with ``{"error", "details"}``), never a 404 it would read as
"not found", and a test that leaves the server with a refusal it did not take, or a failure of
the server itself, fails."""

from __future__ import annotations

import pytest
import requests

from tests.sly_server import PROJECT_ID, TASK_ID, TEAM_ID, FakeSupervisely


@pytest.fixture
def server(tmp_path, demo_project):
    """Not entered with ``with``: each test leaves it itself, to see what leaving says."""
    fake = FakeSupervisely(tmp_path / "team_files")
    fake.__enter__()
    fake.state.add_project(demo_project, PROJECT_ID)
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def _refused(api, method: str, body: dict) -> requests.Response:
    with pytest.raises(requests.exceptions.HTTPError) as raised:
        api.post(method, body, retries=1, raise_error=True)
    return raised.value.response


def test_an_unknown_method_is_the_platforms_error_not_a_not_found(server):
    api = server.api(retry_count=1)
    response = _refused(api, "projects.infos", {"id": PROJECT_ID})
    assert response.status_code == 400  # a 404 the SDK's lookups would read as "no project"
    assert set(response.json()) == {"error", "details"}
    # the SDK's own lookup raises instead of answering None
    with pytest.raises(requests.exceptions.HTTPError):
        api.project._get_info_by_id(PROJECT_ID, "projects.infos")
    with pytest.raises(AssertionError, match=r"refused projects\.infos"):
        server.check_clean()
    assert [m for m, *_ in server.state.take_refusals()] == ["projects.infos"] * 2
    server.check_clean()  # taken: nothing left to say


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"node": {"type": "task", "id": TASK_ID}, "type": "project", "id": PROJECT_ID},
         "body.teamId is required"),
        ({"teamId": str(TEAM_ID), "node": {"type": "task", "id": TASK_ID}, "type": "project",
          "id": PROJECT_ID}, "body.teamId must be int"),
        ({"teamId": True, "node": {"type": "task", "id": TASK_ID}, "type": "project",
          "id": PROJECT_ID}, "body.teamId must be int"),  # JSON's true is no id
        ({"teamId": TEAM_ID, "node": {"type": "task"}, "type": "project", "id": PROJECT_ID},
         "body.node.id is required"),
        ({"teamId": TEAM_ID, "node": {"type": "task", "id": TASK_ID}, "type": "project",
          "id": 999}, "project 999 does not exist"),
        ({"teamId": TEAM_ID, "node": {"type": "task", "id": TASK_ID}, "type": "folder",
          "id": "/no/such/folder"}, "not in Team Files"),
        ({"teamId": TEAM_ID, "node": {"type": "task", "id": TASK_ID}, "type": "app_session"},
         "'app_session' is not an input type"),
        ({"teamId": TEAM_ID, "node": {"type": "task", "id": TASK_ID}, "type": "project",
          "id": PROJECT_ID, "meta": {"customNodeSettings": {"mainLink": {"url": "/x"}}}},
         "mainLink.title is required"),
        ({"teamId": 2, "node": {"type": "task", "id": TASK_ID}, "type": "project",
          "id": PROJECT_ID}, "no access to team 2"),
    ],
)  # fmt: skip
def test_a_workflow_input_the_platform_would_not_take_is_refused(server, body, why):
    response = _refused(server.api(retry_count=1), "workflow.node.add-input", body)
    assert response.status_code in (400, 403)
    assert why in response.json()["details"]["message"]
    assert server.state.workflow == []  # nothing recorded
    [(method, _, _)] = server.state.take_refusals()
    assert method == "workflow.node.add-input"


def test_the_sdks_own_workflow_calls_are_taken(server):
    """What ``api.app.workflow`` sends for a project and a folder passes the same checks."""
    api = server.api()
    api.app.workflow.enable()
    server.state.local("/runs/1").mkdir(parents=True)
    api.app.workflow.add_input_project(PROJECT_ID, task_id=TASK_ID)
    api.app.workflow.add_output_folder("/runs/1", task_id=TASK_ID)
    assert [(kind, node["type"]) for kind, node in server.state.workflow] == [
        ("input", "project"),
        ("output", "folder"),
    ]
    server.check_clean()


def test_a_failing_handler_is_a_500_and_fails_the_test_not_a_not_found(server, monkeypatch):
    """A bug of the server (a KeyError) must not read as "project not found" to the SDK."""
    handler = server.server.RequestHandlerClass
    monkeypatch.setattr(handler, "m_projects_info", lambda self, body: {}["version"])
    with pytest.raises(requests.exceptions.RequestException):
        server.api(retry_count=1).project.get_info_by_id(PROJECT_ID)  # not None
    assert "KeyError: 'version'" in server.state.server_errors[0]
    with pytest.raises(AssertionError, match="the test server failed"):
        server.check_clean()
