"""One table of user-facing errors (src.core.errors): each type's HTTP status is what the API
answers, and its exit code what the CLI exits with; a usage error exits 2, a failure 1."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import src.cli
import src.cli.demo_project
import src.cli.train_output
import src.web.api
from src.core.errors import (
    AppError,
    BusyError,
    EvaluationError,
    PublishError,
    RequestError,
    RunFailed,
    StartCancelled,
)

# (error, the API's status, the CLI's exit code): the contract, written out here on purpose
MAPPING = [
    (RequestError, 400, 2),
    (BusyError, 409, 1),
    (StartCancelled, 409, 2),
    (EvaluationError, 500, 1),
    (RunFailed, 500, 1),
    (PublishError, 502, 1),
]


@pytest.mark.parametrize(
    ("error", "status", "code"), MAPPING, ids=lambda v: getattr(v, "__name__", v)
)
def test_the_api_answers_each_error_with_its_status(monkeypatch, error, status, code):
    def refuse(*args):
        raise error(["first problem", "second problem"])

    monkeypatch.setattr(src.web.api, "_start", refuse)
    server = FastAPI()
    src.web.api.mount_api(server, controller=None)
    answer = TestClient(server).post("/api/train", json={})
    assert answer.status_code == status
    assert answer.json()["problems"] == ["first problem", "second problem"]


@pytest.mark.parametrize(
    ("error", "status", "code"), MAPPING, ids=lambda v: getattr(v, "__name__", v)
)
def test_the_cli_exits_each_error_with_its_code(monkeypatch, capsys, tmp_path, error, status, code):
    def refuse(args):
        raise error(["first problem", "second problem"])

    monkeypatch.setattr(src.cli.demo_project, "cmd_demo_project", refuse)
    assert src.cli.main(["demo-project", str(tmp_path / "p")]) == code
    assert capsys.readouterr().err.splitlines() == ["error: first problem", "error: second problem"]


def test_every_app_error_is_in_the_table():
    def subclasses(cls):
        return {cls} | {s for c in cls.__subclasses__() for s in subclasses(c)}

    declared = {c for c in subclasses(AppError) if c.__module__ == "src.core.errors"}
    assert declared - {AppError} == {error for error, _, _ in MAPPING}


def test_a_bad_command_line_exits_2_as_argparse_does(capsys):
    with pytest.raises(SystemExit) as exited:
        src.cli.main(["train", "--no-such-option"])
    assert exited.value.code == 2


def test_a_failed_training_exits_1_not_the_usage_code(capsys, tmp_path):
    status = SimpleNamespace(run_state="failed", error="loss is NaN", outcome=None)
    controller = SimpleNamespace(status=lambda: status, traceback=None)
    prepared = SimpleNamespace(work_dir=tmp_path)
    args = argparse.Namespace(verbose=False)
    assert src.cli.train_output.report(controller, prepared, args, 1.0) == 1
    assert "training failed: loss is NaN" in capsys.readouterr().err


def test_a_failed_evaluation_exits_1_a_missing_run_2(monkeypatch, capsys, tmp_path):
    from src.training.controller import TrainingController

    def failing(self, *args, **kwargs):
        raise EvaluationError("the SDK evaluator cannot evaluate epoch_1.pth: boom")

    app = str(tmp_path / "app")
    assert src.cli.main(["evaluate", "nope", "--app-data", app]) == 2  # no such run: usage
    monkeypatch.setattr(TrainingController, "evaluate", failing)
    assert src.cli.main(["evaluate", "nope", "--app-data", app]) == 1
    assert "boom" in capsys.readouterr().err
