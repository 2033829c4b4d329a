"""A run id can never point the app's writes, renames or deletions at app data itself or
outside it: not from the CLI, the HTTP API, nor a ``state.json`` in Team Files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from src.core.layout import RunIdError, check_run_id, is_run_dir, run_dir
from tests.helpers import api_client

ROOT = Path(__file__).resolve().parents[2]
BAD_IDS = [".", "..", "../../x", "/abs/dir", "a/b", "", ".hidden", "x" * 101, "a b", "é"]


@pytest.mark.parametrize("run_id", ["4242", "4242_2", "20261127_101500", "e2e", "my.run-1"])
def test_plain_run_ids_name_a_folder_inside_app_data(run_id, tmp_path):
    assert check_run_id(run_id) == run_id
    assert run_dir(tmp_path, run_id) == (tmp_path / run_id).resolve()
    assert is_run_dir(tmp_path, tmp_path / run_id)


@pytest.mark.parametrize("run_id", [*BAD_IDS, 5, None])
def test_unsafe_run_ids_are_refused_with_what_is_allowed(run_id, tmp_path):
    with pytest.raises(RunIdError, match="letters, digits"):
        run_dir(tmp_path, run_id)


def test_app_data_itself_and_outside_are_never_a_run_folder(tmp_path):
    assert not is_run_dir(tmp_path, tmp_path)
    assert not is_run_dir(tmp_path, tmp_path / "a" / "b")
    assert not is_run_dir(tmp_path / "app", tmp_path / "other")
    (tmp_path / "link").symlink_to(tmp_path.parent)
    with pytest.raises(RunIdError, match="outside"):
        run_dir(tmp_path, "link")


@pytest.mark.parametrize("run_id", [".", "../../escaped", "/tmp/absolute_run"])
def test_cli_refuses_an_unsafe_run_id_before_writing_anything(run_id, demo_project, tmp_path):
    app_data = tmp_path / "deep" / "app_data"
    result = subprocess.run(
        [sys.executable, "-m", "src.cli", "train", "--project", str(demo_project),
         "--model", "rtmdet_tiny_8xb32-300e_coco", "--from-scratch", "--dry-run",
         "--run-id", run_id, "--app-data", str(app_data)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout
    assert f"run id {run_id!r} is not allowed" in result.stderr
    assert not app_data.exists() or not any(app_data.iterdir())
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/absolute_run").exists()


def test_api_answers_400_to_an_unsafe_run_id_and_keeps_app_data(demo_project, tmp_path):
    from src.runs.storage import LocalArtifactStore
    from src.training.controller import TrainingController

    app_data = tmp_path / "app_data"
    (app_data / "other_run").mkdir(parents=True)
    (app_data / "other_run" / "epoch_1.pth").write_bytes(b"another run's checkpoint")
    controller = TrainingController(
        app_data, LocalArtifactStore(tmp_path / "team"), cleanup_after_upload=True
    )
    body = {
        "project": str(demo_project),
        "model": "rtmdet_tiny_8xb32-300e_coco",
        "hyperparameters": {"weights": "scratch", "epochs": 1},
    }
    with api_client(controller) as client:
        for run_id in (".", "../x", "/abs"):
            response = client.post("/api/train", json=dict(body, run_id=run_id))
            assert response.status_code == 400, response.text
            assert any("is not allowed" in p for p in response.json()["problems"])
        assert client.get("/api/status").json()["state"] == "idle"
    assert (app_data / "other_run" / "epoch_1.pth").is_file()


@pytest.mark.parametrize(
    ("field", "value"), [("run_id", "."), ("run_id", "../../x"), ("checkpoint", "../evil.pth")]
)
def test_team_files_state_with_a_path_in_it_is_skipped(field, value, tmp_path, caplog):
    from src.runs.remote import find_remote_runs
    from src.runs.storage import LocalArtifactStore

    store_root = tmp_path / "team"
    for name, state in (
        ("1_good", {"run_id": "1", "checkpoint": "epoch_1.pth"}),
        ("2_bad", {"run_id": "2", "checkpoint": "epoch_1.pth", field: value}),
    ):
        resume = store_root / "mmdetection-3" / name / "resume"
        resume.mkdir(parents=True)
        (resume / "state.json").write_text(json.dumps(state))
    runs = find_remote_runs(LocalArtifactStore(store_root))
    assert [r.run_id for r in runs] == ["1"]
    assert "unreadable run state" in caplog.text
