"""A run id names one run everywhere: a new run whose id is already a run in Team Files is
refused with the reason, before anything trains or uploads, even when app data no longer has it
(on the platform app data is emptied after each upload). Otherwise the new run's upload would
swap the earlier run's folder away. Resuming that run keeps working."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from src.cli import main
from tests.helpers import cli_on_platform
from tests.sly_server import TEAM_ID, FakeSupervisely

ROOT = Path(__file__).resolve().parent.parent
MODEL = "rtmdet_tiny_8xb32-300e_coco"
TINY = ["--from-scratch", "--epochs", "1", "--input-size", "64", "--batch-size", "2",
        "--no-evaluate"]  # fmt: skip


def _contents(folder: Path) -> dict[str, str]:
    """Every file of ``folder`` and a digest of its bytes: what a replacement would change."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


def _train(project: Path, app_data: Path, team_files: Path, *extra: str) -> int:
    return main(
        ["train", "--project", str(project), "--model", MODEL, *TINY, "--run-id", "dup1",
         "--app-data", str(app_data), "--team-files", str(team_files), *extra]
    )  # fmt: skip


@pytest.mark.train
def test_a_reused_run_id_is_refused_when_team_files_has_it(demo_project, tmp_path, capsys):
    team_files = tmp_path / "team_files"
    assert _train(demo_project, tmp_path / "app_data_1", team_files) == 0
    uploaded = team_files / "mmdetection-3" / f"dup1_{demo_project.name}"
    before = _contents(uploaded)
    assert "experiment_info.json" in before
    capsys.readouterr()

    # app data emptied (as on the platform after an upload): the dry run refuses already
    assert _train(demo_project, tmp_path / "app_data_2", team_files, "--dry-run") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "run dup1 already exists in" in line and str(uploaded) in line, line
    assert "pick another id" in line, line

    # so does the run itself, before it trains: the uploaded run stays as it was
    assert _train(demo_project, tmp_path / "app_data_3", team_files) == 2
    assert "run dup1 already exists in" in _one_error_line(capsys.readouterr().err)
    assert _contents(uploaded) == before
    assert not (tmp_path / "app_data_3" / "dup1").exists()

    # the same id on another project (another folder name) is that run's id too
    other = tmp_path / "other"
    shutil.copytree(demo_project, other)
    assert _train(other, tmp_path / "app_data_4", team_files, "--dry-run") == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "run dup1 already exists in" in line and str(uploaded) in line, line

    # resuming that run (fetched from Team Files into the empty app data) is not refused
    code = main(
        ["train", "--resume", "dup1", "--epochs", "2", "--dry-run",
         "--app-data", str(tmp_path / "app_data_5"), "--team-files", str(team_files)]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "resuming run dup1" in captured.out
    assert _contents(uploaded) == before


def _seed_run(team_files: Path, folder: str, run_id: str) -> Path:
    """A run folder in Team Files as this app uploads it (its id in ``experiment_info.json``)."""
    path = team_files / "mmdetection-3" / folder
    path.mkdir(parents=True)
    info = {"experiment_name": f"{run_id} RTMDet", "model_name": "RTMDet"}
    (path / "experiment_info.json").write_text(json.dumps(info), encoding="utf-8")
    return path


def test_only_a_run_of_that_id_takes_it(demo_project, tmp_path, capsys):
    """``a_b_<project>`` is run ``a_b``'s folder (its recorded id), not run ``a``'s: ``a`` is
    free; a folder that records id ``a`` under another project's name takes ``a``."""
    team_files = tmp_path / "team_files"
    _seed_run(team_files, "a_b_elsewhere", "a_b")
    args = ["train", "--project", str(demo_project), "--model", MODEL, *TINY, "--dry-run",
            "--app-data", str(tmp_path / "app_data"), "--team-files", str(team_files)]  # fmt: skip
    assert main([*args, "--run-id", "a"]) == 0, capsys.readouterr().err
    capsys.readouterr()

    taken = _seed_run(team_files, "a_elsewhere", "a")
    assert main([*args, "--run-id", "a"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "run a already exists in" in line and str(taken) in line, line


def _cli(fake: FakeSupervisely, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return cli_on_platform(fake.address, cwd, *args)


@pytest.mark.train
def test_a_reused_run_id_is_refused_on_the_platforms_team_files(demo_project, tmp_path):
    """Through the real ``sly.Api`` against the protocol server, app data emptied between runs:
    the second ``--run-id dup1`` is refused, nothing of the first run's folder is replaced."""
    with FakeSupervisely(tmp_path / "team_files") as fake:

        def train(app_data: str, *extra: str) -> subprocess.CompletedProcess:
            return _cli(
                fake, tmp_path, "train", "--project", str(demo_project), "--model", MODEL,
                *TINY, "--run-id", "dup1", "--team-id", str(TEAM_ID),
                "--app-data", str(tmp_path / app_data), *extra,
            )  # fmt: skip

        first = train("app_data_1")
        assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
        remote = f"/mmdetection-3/dup1_{demo_project.name}"
        before = _contents(fake.state.local(remote))
        assert "experiment_info.json" in before
        uploads = fake.state.calls.count("file-storage.bulk.upload")

        for extra in (["--dry-run"], []):
            again = train(f"app_data_2{''.join(extra)}", *extra)
            assert again.returncode == 2, (again.stdout + again.stderr)[-3000:]
            line = _one_error_line(again.stderr)
            assert f"run dup1 already exists in Team Files: {remote}" in line, line
        assert _contents(fake.state.local(remote)) == before
        assert fake.state.calls.count("file-storage.bulk.upload") == uploads


def test_the_api_refuses_a_run_id_that_team_files_has(demo_project, tmp_path):
    """``POST /api/train`` with the ``run_id`` of an uploaded run (app data empty): a 400 with
    the reason, before anything starts; a free id is not refused for it."""
    from src.runs.storage import LocalArtifactStore
    from src.training.controller import TrainingController
    from tests.helpers import api_client

    team_files = tmp_path / "team_files"
    taken = _seed_run(team_files, f"api1_{demo_project.name}", "api1")
    controller = TrainingController(tmp_path / "app_data", LocalArtifactStore(team_files))
    body = {"project": str(demo_project), "model": MODEL, "run_id": "api1",
            "hyperparameters": {"epochs": 1, "train_batch_size": 2, "input_size": 64,
                                "weights": "scratch"}}  # fmt: skip
    with api_client(controller) as client:
        refused = client.post("/api/train", json=body)
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert "run api1 already exists in" in error and str(taken) in error, error
        assert "\n" not in error
        assert client.get("/api/status").json()["state"] == "idle"
    assert not (tmp_path / "app_data" / "api1").exists()
