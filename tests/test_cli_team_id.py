"""The headless CLI with ``--team-id``: a run goes to that team's Team Files on the platform
(``SERVER_ADDRESS``/``API_TOKEN``), through the real ``sly.Api`` over real HTTP against the
protocol server, and ``runs --team-id`` lists it from there; another team's files are refused
by the platform, and the listing says so (a warning; it still lists app data, exit 0)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers import cli_on_platform
from tests.sly_server import TEAM_ID, FakeSupervisely

ROOT = Path(__file__).resolve().parent.parent
MODEL = "rtmdet_tiny_8xb32-300e_coco"


def _cli(fake: FakeSupervisely, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return cli_on_platform(fake.address, cwd, *args)


@pytest.mark.train
def test_a_cli_run_with_team_id_goes_to_that_teams_team_files(demo_project, tmp_path):
    with FakeSupervisely(tmp_path / "team_files") as fake:
        result = _cli(
            fake, tmp_path, "train", "--project", str(demo_project), "--model", MODEL,
            "--from-scratch", "--epochs", "1", "--batch-size", "4", "--input-size", "128",
            "--no-evaluate", "--app-data", str(tmp_path / "app_data"), "--team-id",
            str(TEAM_ID), "--run-id", "cli",
        )  # fmt: skip
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        remote = f"/mmdetection-3/cli_{demo_project.name}"
        folder = fake.state.local(remote)
        for name in ("config.py", "epoch_1.pth", "experiment_info.json", "app_state.json"):
            assert (folder / name).is_file(), name
        assert not (tmp_path / "artifacts").exists()  # not the local stand-in
        assert "file-storage.bulk.upload" in fake.state.calls
        # headless: no task, so no task output, no project version and no workflow
        assert fake.state.outputs == {} and fake.state.workflow == []
        assert "projects.versions.reserve" not in fake.state.calls

        listed = _cli(fake, tmp_path, "runs", "--team-id", str(TEAM_ID),
                      "--app-data", str(tmp_path / "empty"))  # fmt: skip
        assert listed.returncode == 0, listed.stderr[-3000:]
        [row] = [line for line in listed.stdout.splitlines() if line.startswith("cli ")]
        assert f"Team Files: {remote}" in row

        # another team's Team Files: the platform refuses, the listing says so (a warning
        # naming the refusal) and lists nothing from there
        other = _cli(fake, tmp_path, "runs", "--team-id", "2",
                     "--app-data", str(tmp_path / "empty"))  # fmt: skip
        assert "cannot list the runs in Team Files" in other.stderr
        assert "no access to team 2" in other.stderr
        assert "cli " not in other.stdout
        refused = fake.state.take_refusals()
        assert refused and {status for _, status, _ in refused} == {403}
