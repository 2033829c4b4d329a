"""Each rank of a multi-GPU run trains on its own card (issue 34, item 1), on a CPU-only machine:
``torch.cuda`` is a stand-in whose current device is per thread, as the real one's is
(``tests/fake_cuda.py``); the process group is recorded, not joined; the Runner is a stand-in
whose ``train`` runs mmengine's own ``Runner.wrap_model`` (with a recording DDP and a model that
notes where ``.to`` sends it) in the session's training thread, where the real one would build
and wrap the model."""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from mmengine.config import Config

from tests.fake_cuda import FakeCuda
from tests.helpers import small_cfg

GPUS = (2, 5)  # not 0, 1: a rank index and a card index differ


class _Queue:
    """The rank's queue to the app, in memory (one process here)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []

    def put(self, item: tuple[str, Any]) -> None:
        self.items.append(item)

    def close(self) -> None:
        pass

    def join_thread(self) -> None:
        pass


class _Model(torch.nn.Module):
    """Notes the card ``.to`` sends it to, resolved in the calling thread as CUDA does."""

    def __init__(self, cuda: FakeCuda) -> None:
        super().__init__()
        self.cuda_ = cuda
        self.card: int | None = None

    def to(self, device: Any) -> _Model:  # type: ignore[override]
        self.card = self.cuda_.index_of(device)
        return self


class _RecordingDDP:
    """Records what mmengine passes to DDP; the real one requires the module on device_ids[0]."""

    def __init__(self, module: _Model, device_ids: list[int], **_: Any) -> None:
        self.module, self.device_ids = module, device_ids


def _stand_in_runner(cuda: FakeCuda, seen: dict[int, dict], monkeypatch) -> Any:
    """``AppRunner.from_cfg``'s stand-in: its ``train`` does what mmengine does with the device
    in the thread that trains, and records it under the rank (from RANK)."""
    from mmengine.runner import runner as mm_runner

    monkeypatch.setattr(mm_runner, "get_device", lambda: "cuda")  # what a CUDA machine says
    monkeypatch.setattr(mm_runner, "MMDistributedDataParallel", _RecordingDDP)

    def from_cfg(cls, cfg: Config) -> Any:
        def train() -> None:
            owner = SimpleNamespace(distributed=True, cfg=cfg, logger=logging.getLogger("t"))
            wrapped = mm_runner.Runner.wrap_model(owner, cfg.get("model_wrapper_cfg"), _Model(cuda))
            seen[int(os.environ["RANK"])] = {
                "thread_card": cuda.current_device(),
                "local_rank": int(os.environ["LOCAL_RANK"]),
                "model_card": wrapped.module.card,
                "device_ids": wrapped.device_ids,
            }

        return SimpleNamespace(
            train=train, logger=logging.getLogger("t"), experiment_name=cfg.experiment_name,
            register_hook=lambda hook: None, train_loop=SimpleNamespace(stop_training=False),
        )  # fmt: skip

    return classmethod(from_cfg)


@pytest.fixture
def rank_env(monkeypatch):
    """What a rank changes in its process (the environment, SIGINT) restored after the test."""
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
        monkeypatch.setenv(name, "unset")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


def test_ranks_on_gpus_2_and_5_each_build_train_and_watch_their_own_card(
    rank_env, monkeypatch, tmp_path
):
    """Rank r of ``--gpus 2,5`` trains on card gpus[r] in its training thread: the model there,
    DDP's device_ids from LOCAL_RANK the same card, the process group bound to it, GpuStats
    watching it. Before the fix rank 1 trained on card 2 with LOCAL_RANK 1."""
    import torch.distributed as dist

    import src.engine.gpu_stats as gpu_stats
    import src.training.distributed as distributed
    from src.engine.runner import AppRunner

    cuda = FakeCuda(count=8).install(monkeypatch)
    seen: dict[int, dict] = {}
    groups: dict[int, dict] = {}
    watched: dict[str, int] = {}
    monkeypatch.setattr(AppRunner, "from_cfg", _stand_in_runner(cuda, seen, monkeypatch))
    monkeypatch.setattr(
        dist, "init_process_group", lambda *a, **kw: groups.update({kw["rank"]: kw})
    )
    monkeypatch.setattr(distributed, "end_with_parent", lambda *a: None)
    # the ranks' agreed stop all-reduces a CUDA tensor, which a CPU build cannot make
    monkeypatch.setattr(distributed.RankSession, "_should_stop", lambda self: False)

    class _Stats(gpu_stats.GpuStats):
        def __init__(self, device: str, **kwargs: Any) -> None:
            super().__init__(device, **kwargs)
            watched[os.environ["RANK"]] = self.index

    monkeypatch.setattr(gpu_stats, "GpuStats", _Stats)
    cfg = small_cfg(tmp_path / "project", tmp_path / "app" / "run", gpus=GPUS)
    job = {
        "cfg": cfg.to_dict(), "run_id": "run", "resume_from": None, "gpus": list(GPUS),
        "max_nonfinite": 5, "timeout_s": 60, "console_log_level": "ERROR",
        "app_data_root": str(tmp_path / "app"), "app_pid": os.getpid(),
    }  # fmt: skip
    for rank in range(len(GPUS)):
        queue = _Queue()
        distributed._rank_main(
            rank, len(GPUS), str(tmp_path / "store"), job, queue, threading.Event()
        )
        end = dict(queue.items)["end"]
        assert end["state"] == "finished", end.get("traceback")
    for rank, card in enumerate(GPUS):
        assert seen[rank] == {
            "thread_card": card, "local_rank": card, "model_card": card, "device_ids": [card],
        }, rank  # fmt: skip
        assert groups[rank]["device_id"] == torch.device("cuda", card)
        assert watched[str(rank)] == card
    # each rank's training thread chose its own card, once
    assert [index for name, index in cuda.calls if name.startswith("train-")] == list(GPUS)


class _Timed:
    """The model the speed test times: notes where ``.to`` puts it."""

    def __init__(self) -> None:
        self.device: str | None = None

    def to(self, device: str) -> _Timed:
        self.device = device
        return self

    def eval(self) -> _Timed:
        return self


@pytest.mark.parametrize(
    ("gpus", "cards", "expected"),
    [((2, 5), 8, "cuda:2"),  # where the run trained (its rank 0), not cuda:0
     ((5,), 2, "cuda:0")],  # that card is not on this machine: the first one there is
)  # fmt: skip
def test_the_speed_test_after_training_times_on_the_runs_gpu(
    gpus, cards, expected, monkeypatch, tmp_path
):
    """Before the fix it timed on cuda:0 whatever the run's GPUs (another job's card, maybe)."""
    import numpy as np

    import src.engine.speed as speed
    import src.export.formats as export
    import src.export.onnx_export as onnx_export
    from src.config.text import config_to_text
    from src.core.layout import RUN_CONFIG
    from src.evaluation.evaluate import speed_test_run

    FakeCuda(count=cards).install(monkeypatch)
    work = tmp_path / "run"
    work.mkdir()
    cfg = small_cfg(tmp_path / "project", work, gpus=gpus)
    (work / RUN_CONFIG).write_text(config_to_text(cfg), encoding="utf-8")
    model, timed = _Timed(), {}
    monkeypatch.setattr(export, "validation_images", lambda cfg: [np.zeros((8, 8, 3), np.uint8)])
    monkeypatch.setattr(onnx_export, "load_model", lambda cfg, path: model)

    def benchmark(model, images, device, hardware):
        timed.update(device=device, hardware=hardware)
        return {"model_info": {}, "speedtest": []}

    monkeypatch.setattr(speed, "benchmark_speedtest", benchmark)
    speed_test_run(work, checkpoint=work / "best.pth")
    index = int(expected.split(":")[1])
    assert (model.device, timed) == (
        expected,
        {"device": expected, "hardware": f"Stand-in GPU {index}"},
    )
