"""Headless CLI: bad input gets one clear line and writes nothing; dry run builds everything."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

ROOT = Path(__file__).resolve().parent.parent
MODEL = "rtmdet_tiny_8xb32-300e_coco"


def run_cli(*args: str, cwd: Path = ROOT, env_app_data: Path | None = None):
    """``python -m src.cli ARGS``'s exit code, stdout and stderr (a ``CompletedProcess``), from
    the CLI's ``main`` in this worker: the same code without a process start (about 8 s of CPU
    importing torch, mmdet and the SDK each). The environment (``env_app_data`` is its
    ``SLY_APP_DATA_DIR``; the CLI hides the GPUs for a CPU run) and the working folder are put
    back after. A test that signals the CLI starts a process of its own."""
    import os

    from src.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    try:
        if env_app_data is not None:
            os.environ["SLY_APP_DATA_DIR"] = str(env_app_data)
        os.chdir(cwd)
        logged = logging.StreamHandler(err)  # what the CLI logs, as a process's stderr has it
        logging.getLogger().addHandler(logged)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            finally:
                logging.getLogger().removeHandler(logged)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
    return subprocess.CompletedProcess(["src.cli", *args], code, out.getvalue(), err.getvalue())


def run_cli_process(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python -m src.cli ARGS`` in a process of its own: for what a process shows once (a
    library's warning, the logging set up at its start)."""
    return subprocess.run([sys.executable, "-m", "src.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)  # fmt: skip


def test_demo_project_is_deterministic(tmp_path):
    for name in ("a", "b"):
        result = run_cli("demo-project", str(tmp_path / name), "--images", "6", "--seed", "5")
        assert result.returncode == 0, result.stderr
    for ann in sorted((tmp_path / "a").rglob("*.json")):
        twin = tmp_path / "b" / ann.relative_to(tmp_path / "a")
        assert ann.read_text() == twin.read_text()
    assert (tmp_path / "a" / "train" / "img").is_dir() and (tmp_path / "a" / "val" / "ann").is_dir()


def test_dry_run_prints_summary_and_dumps_a_self_contained_config(demo_project, tmp_path):
    dump = tmp_path / "cfg.py"
    result = run_cli(
        "train",
        "--project",
        str(demo_project),
        "--model",
        MODEL,
        "--from-scratch",
        "--input-size",
        "256",
        "--dry-run",
        "--dump-config",
        str(dump),
        env_app_data=tmp_path / "app_data",
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "M parameters" in out
    assert "train        12 images" in out and "val          4 images" in out
    assert "nothing was trained" in out
    assert not (tmp_path / "app_data").exists() or not any((tmp_path / "app_data").rglob("*.pth"))
    # self-contained: loads by path and its dataset builds through mmdet's registry
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    import src.data.mmdet_dataset  # noqa: F401

    cfg = Config.fromfile(str(dump))
    init_default_scope(cfg.default_scope)
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    assert len(dataset) == 12
    assert cfg.sly_metadata.model_name == MODEL

    # that config beside a checkpoint: --weights alone finds it (no --model, no --config)
    run_dir = tmp_path / "earlier_run"
    run_dir.mkdir()
    shutil.copy(dump, run_dir / "config.py")
    (run_dir / "epoch_3.pth").write_bytes(b"weights")  # a dry run does not load them
    result = run_cli(
        "train", "--project", str(demo_project), "--weights", str(run_dir / "epoch_3.pth"),
        "--input-size", "256", "--dry-run", env_app_data=tmp_path / "app_data",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"model        {MODEL}" in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_project", "does not exist"),
        ("no_images", "has no images"),
        ("bad_classes", "match nothing"),
        ("unknown_model", "unknown model"),
        ("bad_config", "line 2"),
        ("bad_patience", "early_stopping_patience must be from 0 to 1000"),
        ("no_such_gpu", "cuda:9 does not exist here"),
        ("bad_augmentation", "transform 2 (RandomFlipp) is not an mmdet or mmcv transform"),
        ("no_augmentation_file", "augmentation file"),
    ],
)
def test_bad_input_fails_with_a_clear_message(case, expected, demo_project, tmp_path):
    project = str(demo_project)
    extra: list[str] = []
    model = MODEL
    if case == "missing_project":
        project = str(tmp_path / "nowhere")
    elif case == "no_images":
        empty = tmp_path / "empty"
        empty.mkdir()
        shutil.copy(demo_project / "meta.json", empty / "meta.json")
        project = str(empty)
    elif case == "bad_classes":
        extra = ["--classes", "cat,dog"]
    elif case == "unknown_model":
        model = "yolo_v99"
    elif case == "bad_config":
        bad = tmp_path / "bad.py"
        bad.write_text("model = dict(type='RTMDet')\noptim_wrapper = dict(\n")
        extra = ["--config", str(bad)]
    elif case == "bad_patience":
        extra = ["--early-stopping-patience", "-3"]
    elif case == "no_such_gpu":
        extra = ["--device", "cuda:9"]
    elif case == "bad_augmentation":
        pipeline = tmp_path / "augment.yaml"
        pipeline.write_text("- {type: RandomFlip, prob: 0.5}\n- {type: RandomFlipp}\n")
        extra = ["--augmentation-file", str(pipeline)]
    elif case == "no_augmentation_file":
        extra = ["--augmentation-file", str(tmp_path / "nowhere.yaml")]
    app_data = tmp_path / "app_data"
    result = run_cli(
        "train",
        "--project",
        project,
        "--model",
        model,
        "--from-scratch",
        *extra,
        env_app_data=app_data,
    )
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not app_data.exists() or not any(app_data.rglob("*"))


def test_zero_epochs_is_refused_not_replaced_by_the_default(demo_project, tmp_path):
    result = run_cli(
        "train", "--project", str(demo_project), "--model", MODEL, "--from-scratch",
        "--epochs", "0", "--dry-run", env_app_data=tmp_path / "app_data",
    )  # fmt: skip
    assert result.returncode == 2, result.stdout
    assert "epochs must be from 1 to 100000, got 0" in result.stderr


def test_a_missing_weights_file_fails_the_dry_run(demo_project, tmp_path):
    missing = tmp_path / "nowhere" / "epoch_3.pth"
    result = run_cli(
        "train", "--project", str(demo_project), "--model", MODEL, "--weights", str(missing),
        "--dry-run", env_app_data=tmp_path / "app_data",
    )  # fmt: skip
    assert result.returncode == 2, result.stdout
    assert f"checkpoint {missing} does not exist" in result.stderr


def test_train_defaults_are_the_apps():
    """CLI, app and API train the same "by default": the parser's defaults are TrainParams'."""
    from src.cli import build_parser
    from src.cli.train_options import train_params
    from src.config.params import TrainParams

    args = build_parser().parse_args(["train", "--project", "p", "--from-scratch"])
    assert train_params(args) == TrainParams(weights="scratch")


def test_input_size_model_is_the_zoo_models_own(tmp_path):
    from src.cli import build_parser
    from src.cli.train import _use_the_models_input_size
    from src.cli.train_options import train_params
    from src.runs.storage import LocalArtifactStore
    from src.training.controller import TrainingController

    controller = TrainingController(tmp_path, LocalArtifactStore(tmp_path / "store"))
    parse = build_parser().parse_args
    args = parse(["train", "--project", "p", "--model", "faster-rcnn_r50_fpn_1x_coco",
                  "--input-size", "model"])  # fmt: skip
    assert _use_the_models_input_size(controller, args) is None
    assert train_params(args).input_size == (1333, 800)  # mmdet's test scale for it
    args = parse(["train", "--project", "p", "--model", "ssd300_coco", "--input-size", "model"])
    assert _use_the_models_input_size(controller, args) is None and args.input_size == (300, 300)
    args = parse(["train", "--project", "p", "--model", "no_such_model", "--input-size", "model"])
    assert "no_such_model" in _use_the_models_input_size(controller, args)
    args = parse(["train", "--project", "p", "--input-size", "model"])
    assert "needs --model" in _use_the_models_input_size(controller, args)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--from-scratch", "--weights", "missing.pth", "--dry-run"],
         ["--from-scratch", "--weights"]),
        (["--resume", "some_run", "--lr", "0.1"], ["--resume", "--lr"]),
        (["--resume", "--batch-size", "8", "--augmentation", "heavy"],
         ["--resume", "--batch-size", "--augmentation"]),
    ],
)  # fmt: skip
def test_contradicting_options_are_refused_in_one_line(argv, named, tmp_path, capsys):
    """Two options that cannot both hold: refused before anything runs, one line naming both
    (the weights were silently ignored, and a resume silently kept its own settings)."""
    from src.cli import main

    code = main(["train", "--project", str(tmp_path), "--app-data", str(tmp_path / "a"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "contradict" in err[0] and all(option in err[0] for option in named), err[0]


def test_a_resume_may_change_its_epochs_and_devices():
    from src.cli import build_parser
    from src.cli.train_options import contradiction

    args = build_parser().parse_args(["train", "--resume", "r", "--epochs", "9", "--nproc", "2",
                                      "--device", "cpu", "--no-evaluate"])  # fmt: skip
    assert contradiction(args) is None


CHATTER = ("loading annotations", "index created", "Average Precision", "is duplicate",
           "FileClient", "HardDiskBackend", "meshgrid", "Traceback")  # fmt: skip


def test_the_console_shows_the_apps_lines_and_the_log_file_the_libraries(demo_project, tmp_path):
    """A short run's console: progress, one line per validation, the summary, the evaluation —
    none of pycocotools' prints, mmengine's registry or deprecation warnings, torch's warnings;
    those are in the run's log file, complete (score_thr 0: the model predicts, so pycocotools
    prints its whole table)."""
    app = tmp_path / "app"
    result = run_cli_process(
        "train", "--project", str(demo_project), "--model", MODEL, "--from-scratch",
        "--epochs", "1", "--batch-size", "4", "--input-size", "128", "--score-thr", "0",
        "--app-data", str(app), "--team-files", str(tmp_path / "team"), "--run-id", "quiet",
    )  # fmt: skip
    console = result.stdout + result.stderr
    assert result.returncode == 0, console[-3000:]
    assert [c for c in CHATTER if c in console] == [], console[-3000:]
    for line in ("validation after epoch 1: bbox_mAP", "training finished in",
                 "final validation:", "evaluation of", "report:", "artifacts:"):  # fmt: skip
        assert line in result.stdout, result.stdout
    log = next((app / "quiet").glob("*/*.log")).read_text()
    assert "[stdout] " in log and "Average Precision" in log and "is duplicate" in log
    assert "[warning] UserWarning: torch.meshgrid" in log
