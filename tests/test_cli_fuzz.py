"""Fuzzing the command line (hypothesis, bounded): every command, with up to three of its own
options given edge values, ends with an exit code and at most a one-line reason — never an
uncaught exception, a traceback, or a file written outside the folders it was given. ``train``
always gets ``--dry-run`` (nothing trains here)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
VALUES = ["-1", "0", "1", "7", "100000", "1e308", "nan", "", "x", "../x", "/nowhere", "a,b",
          '["a", " b "]', "cuda:99", "auto", "model"]  # fmt: skip
# options whose value is a place the command writes or reads runs from: the test's own folders
PLACES = {"--app-data", "--team-files", "--out", "--cache-dir"}
COMMANDS = ["train", "export", "predict", "evaluate", "runs", "zoo"]


def _options(command: str) -> list[argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [
        a for a in sub.choices[command]._actions
        if a.option_strings and a.option_strings[0].startswith("--")
        and a.option_strings[0] not in PLACES | {"--help", "--dry-run", "--team-id"}
    ]  # fmt: skip


def _argv(draw, command: str) -> list[str]:
    options = _options(command)
    if not options:
        return []
    chosen = draw(st.lists(st.sampled_from(options), max_size=3, unique_by=id))
    argv: list[str] = []
    for action in chosen:
        argv.append(action.option_strings[0])
        if action.nargs != 0:
            argv.append(draw(st.sampled_from(VALUES)))
    return argv


@st.composite
def _command_line(draw, command: str) -> list[str]:
    return _argv(draw, command)


def _tree_snapshot() -> set[str]:
    return {str(p.relative_to(ROOT)) for p in ROOT.iterdir()}


@pytest.mark.parametrize("command", COMMANDS)
def test_any_options_end_in_an_exit_code_and_a_reason(command, demo_project, tmp_path, capsys):
    before = _tree_snapshot()
    places = ["--app-data", str(tmp_path / "app")]
    if command in ("train", "runs", "evaluate", "export"):
        places += ["--team-files", str(tmp_path / "team")]
    if command == "train":
        places += ["--project", str(demo_project), "--model", "rtmdet_tiny_8xb32-300e_coco",
                   "--from-scratch", "--dry-run"]  # fmt: skip
    if command == "predict":
        places = ["--onnx", str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "drawn"),
                  str(tmp_path / "missing.jpg")]  # fmt: skip
    if command in ("export", "evaluate"):
        places += ["run_that_is_not_there"]

    @settings(max_examples=12 if command == "train" else 25, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(_command_line(command))
    def check(options: list[str]) -> None:
        argv = [command, *options, *places]
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
        err = capsys.readouterr().err
        codes.append(code)
        assert code in (0, 2, 3), (argv, code, err[-2000:])
        assert "Traceback" not in err, (argv, err[-2000:])

    codes: list = []
    check()
    print(command, sorted(codes, key=str))
    assert _tree_snapshot() == before  # nothing written beside the repository's own files
