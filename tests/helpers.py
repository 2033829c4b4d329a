"""Small real runs for session, hook and resume tests."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest
import torch

from src.config import zoo
from src.config.compose import compose_from_zoo
from src.config.params import DatasetSpec, RunSpec, TrainParams
from src.runs.checkpoint_io import load_checkpoint_file
from src.training.session import SessionState, TrainingSession

CLASSES = ("square", "circle", "triangle")
# Every architecture's default model, as pytest params named task:architecture.
ALL_DEFAULTS = [
    pytest.param(entry, id=f"{entry.task}:{entry.architecture}")
    for task in zoo.TASKS
    for entry in zoo.default_models(task)
]
RTMDET = "rtmdet_tiny_8xb32-300e_coco"
FASTER_RCNN = "faster-rcnn_r50_fpn_1x_coco"


def small_cfg(project: Path, work_dir: Path, model: str = RTMDET, **overrides):
    """A seeded CPU config that trains in seconds: 128 px, batch 2, no workers, RandomFlip."""
    values = dict(
        classes=CLASSES,
        weights="scratch",
        input_size=(128, 128),
        epochs=2,
        train_batch_size=2,
        val_batch_size=2,
        num_workers=0,
        lr=0.002,
        augmentation="light",
        seed=3,
    )
    values.update(overrides)
    cfg = compose_from_zoo(
        zoo.get_model(model),
        TrainParams(**values),
        DatasetSpec(project_dir=str(project), train_datasets=["train"], val_datasets=["val"]),
        RunSpec(work_dir=str(work_dir)),
    )
    if model == FASTER_RCNN:  # a small backbone keeps the two-stage test fast
        cfg.model.backbone.depth = 18
        cfg.model.neck.in_channels = [64, 128, 256, 512]
    return cfg


class StopAt:
    """A metrics sink that asks its session to stop right after iteration ``k``."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.session: TrainingSession | None = None

    def on_train_iter(self, progress) -> None:
        if progress.iteration == self.k:
            self.session.request_stop()

    def on_val(self, result) -> None:
        pass


class Collect:
    """A metrics sink that keeps everything it is told."""

    def __init__(self) -> None:
        self.train = []
        self.val = []

    def on_train_iter(self, progress) -> None:
        self.train.append(progress)

    def on_val(self, result) -> None:
        self.val.append(result)


def untrained_run(project: Path, work: Path, checkpoint: str) -> object:
    """A run folder without training: ``small_cfg``'s config.py and RTMDet-tiny's initial weights
    (seeded, no pretrained backbone) saved as ``checkpoint`` (meta epoch 1); returns the config.
    For tests of what reads a run (evaluation, export, thresholds), where what the model learned
    does not matter."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    from src.config.text import config_to_text
    from src.engine import patches

    work.mkdir(parents=True)
    cfg = small_cfg(project, work, RTMDET)
    (work / "config.py").write_text(config_to_text(cfg), encoding="utf-8")
    patches.apply()
    init_default_scope("mmdet")
    model_cfg = cfg.model.copy()
    model_cfg["backbone"] = {**model_cfg["backbone"], "init_cfg": None}
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    torch.save({"state_dict": model.state_dict(), "meta": {"epoch": 1}}, work / checkpoint)
    return cfg


def run(cfg, run_id: str, **kwargs) -> tuple[TrainingSession, object]:
    session = TrainingSession(cfg, run_id, console_log_level="WARNING", **kwargs)
    for sink in kwargs.get("sinks", ()):
        if isinstance(sink, StopAt):
            sink.session = session
    session.start()
    status = session.wait(600)
    assert status.state.is_final, status
    return session, status


def run_with_stop_at(cfg, run_id: str, k: int):
    stopper = StopAt(k)
    session = TrainingSession(cfg, run_id, sinks=[stopper], console_log_level="WARNING")
    stopper.session = session
    session.start()
    return session, session.wait(600)


def stop_during_validation(cfg, run_id: str):
    """Start a run and request a stop as soon as it starts validating."""
    session = TrainingSession(cfg, run_id, console_log_level="WARNING")
    session.start()

    def watch() -> None:
        while not session.status().state.is_final:
            if session.status().state == SessionState.VALIDATING:
                session.request_stop()
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    status = session.wait(600)
    watcher.join(5)
    return session, status


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint_file(path)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)}/{len(wa)} tensors differ, e.g. {different[:3]}"


# What differs between two runs that trained identically: wall-clock times, where each run lives
# (its folder is in the config text and in the last checkpoint's path; other paths are compared
# relative to the run's folder) and how it was set up to load data (workers: the resumed run has
# two, the straight one none; the samples are the same).
# mmengine_version ends with the git commit of the working directory when the run started.
NOT_STATE = {"time", "data_time", "eta", "cfg", "experiment_name", "timestamp", "last_ckpt",
             "work_dir", "log_dir", "num_workers", "persistent_workers",
             "mmengine_version"}  # fmt: skip
# The parts of a checkpoint a resumed run depends on; each must be present in both.
RESUME_STATE = ("state_dict", "optimizer", "param_schedulers", "message_hub", "rng_state", "meta")


def assert_same_state(a: Path, b: Path) -> None:
    """Two checkpoints hold the same training state: model, EMA copy, optimizer, schedulers,
    message hub (losses, LR, runtime info), RNG states and the loop's position (epoch, iteration,
    batch geometry) — everything but ``NOT_STATE``. A bit-identical resume must pass it against
    an uninterrupted run."""
    ca, cb = load_checkpoint_file(a), load_checkpoint_file(b)
    for key in RESUME_STATE:
        assert key in ca and key in cb, f"{key} missing from a checkpoint"
    assert ca.keys() == cb.keys(), (sorted(ca), sorted(cb))
    differences: list[str] = []
    roots = (str(Path(a).parent.resolve()), str(Path(b).parent.resolve()))
    _compare(ca, cb, "checkpoint", differences, roots)
    assert not differences, f"{len(differences)} differences, e.g.\n" + "\n".join(differences[:8])


def _compare(x, y, where: str, out: list[str], roots: tuple[str, str]) -> None:
    import numpy as np
    from mmengine.logging import HistoryBuffer

    if isinstance(x, HistoryBuffer) and isinstance(y, HistoryBuffer):
        _compare(x._log_history, y._log_history, where + ".log", out, roots)
        _compare(x._count_history, y._count_history, where + ".count", out, roots)
    elif isinstance(x, dict) and isinstance(y, dict):
        keys = set(x) | set(y)
        for key in sorted(keys, key=str):
            if str(key).split("/")[-1] in NOT_STATE:
                continue
            if key not in x or key not in y:
                out.append(f"{where}[{key!r}] in one checkpoint only")
                continue
            _compare(x[key], y[key], f"{where}[{key!r}]", out, roots)
    elif isinstance(x, list | tuple) and isinstance(y, list | tuple):
        if len(x) != len(y):
            out.append(f"{where}: {len(x)} vs {len(y)} items")
        for i, (u, v) in enumerate(zip(x, y, strict=False)):
            _compare(u, v, f"{where}[{i}]", out, roots)
    elif isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
        if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x, y):
            out.append(f"{where}: tensors differ")
    elif isinstance(x, np.ndarray) and isinstance(y, np.ndarray):
        if x.shape != y.shape or not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
            out.append(f"{where}: arrays differ")
    elif isinstance(x, str) and isinstance(y, str):
        if x.replace(roots[0], "<run>") != y.replace(roots[1], "<run>"):
            out.append(f"{where}: {x!r} vs {y!r}")
    elif isinstance(x, float) and isinstance(y, float):
        if not (x == y or (x != x and y != y)):
            out.append(f"{where}: {x!r} vs {y!r}")
    elif type(x) is not type(y) or x != y:
        out.append(f"{where}: {x!r} vs {y!r}")


API_TOKEN = "test-token"


@contextlib.contextmanager
def api_client(controller, default_project=None, audits=None):
    """A TestClient on the app's HTTP API (routes and guard, as ``src.web.main`` mounts them),
    carrying the API token; ``audits``: the audit service (default: the API's own)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from src.web.access import guard_server
    from src.web.api import mount_api

    server = FastAPI()
    mount_api(server, controller, default_project=default_project, audits=audits)
    guard_server(server, API_TOKEN, on_platform=False)
    with TestClient(server, headers={"Authorization": f"Bearer {API_TOKEN}"}) as client:
        yield client


class FakeProcess:
    """What ``TensorBoard`` starts (its ``popen``), without a process: the command and the
    environment it was given, running until terminated."""

    def __init__(self, command, **kwargs) -> None:
        self.command = command
        self.env = kwargs.get("env") or {}
        self.returncode = None

    @property
    def logdir(self) -> Path:
        return Path(self.command[self.command.index("--logdir") + 1])

    def poll(self):
        return self.returncode

    def terminate(self) -> None:
        self.returncode = -15

    def wait(self, timeout=None):
        return self.returncode

    def kill(self) -> None:
        self.returncode = -9


def cli_on_platform(server_address: str, cwd: Path, *args: str):
    """``python -m src.cli ARGS`` in ``cwd`` (not the repository: a local stand-in for Team Files
    would land in the working directory) against the protocol server at ``server_address``."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = dict(
        os.environ,
        SERVER_ADDRESS=server_address,
        API_TOKEN="x" * 128,
        SUPERVISELY_PUBLIC_API_RETRY_SLEEP_SEC="0",
        XDG_CACHE_HOME=str(cwd / "cache"),
        PYTHONPATH=os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p),
    )
    return subprocess.run(
        [sys.executable, "-m", "src.cli", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=900,
    )  # fmt: skip


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppProcess:
    """``uvicorn src.web.main:app`` in a subprocess (the app ends its process on shutdown, and is a
    per-process singleton); its output is read in a thread (a full pipe would block it) and kept
    in ``lines``."""

    def __init__(self, env: dict[str, str], host: str, port: int) -> None:
        import os
        import subprocess
        import sys

        root = Path(__file__).resolve().parent.parent
        command = [sys.executable, "-m", "uvicorn", "src.web.main:app", "--host", host,
                   "--port", str(port)]  # fmt: skip
        self.process = subprocess.Popen(
            command, cwd=root, env={**os.environ, **env}, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, text: str, timeout: float = 180) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = [line for line in self.lines if text in line]
            if found:
                return found[0]
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"the app printed no {text!r}:\n" + "\n".join(self.lines[-40:]))

    def token(self) -> str:
        """The token the app generated and printed at start."""
        return self.wait_for_line("HTTP API token").rsplit(": ", 1)[1].strip()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)


def found_at_iou_50(model, project: Path, score_thr: float = 0.3) -> tuple[int, int]:
    """How many of ``project``'s val objects an mmdet ``model`` (from ``init_detector``, as the
    serving app loads a run) finds: a prediction of the same class with score >= ``score_thr``
    at IoU >= 0.5; ``(found, total)``. The end-to-end test asserts it and ``bench/demo.py``
    quotes it, measured the same way."""
    from mmdet.apis import inference_detector

    from src.data.reader import read_instances

    classes = list(model.dataset_meta["classes"])
    val, _ = read_instances(project, classes, "object-detection", datasets=["val"])
    found = total = 0
    for info in val:
        pred = inference_detector(model, info["img_path"]).pred_instances
        keep = pred.scores.numpy() >= score_thr
        boxes, labels = pred.bboxes.numpy()[keep], pred.labels.numpy()[keep]
        for gt in info["instances"]:
            total += 1
            same = [b for b, lab in zip(boxes, labels, strict=True) if lab == gt["bbox_label"]]
            found += any(_iou(gt["bbox"], b) >= 0.5 for b in same)
    return found, total


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
