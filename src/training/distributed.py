"""Training on several devices: one worker process per GPU (or ``nproc`` CPU processes for tests
and CPU machines), DDP through mmengine's ``pytorch`` launcher; the app stays one process.

Why ``torch.multiprocessing`` (spawn) rather than ``torch.distributed.run``: the session's
thread starts the ranks itself and keeps a queue and an event shared with them, so progress,
metrics and the stop signal need no files, sockets or log parsing; the launcher would only add a
process between them. Each rank runs the app's own ``TrainingSession`` (the same hooks, stop,
RNG and checkpoint machinery) on the composed config plus the distributed settings, which are
not written into the run's ``config.py`` (a single-process resume and the serving app read it).

- Rank 0 relays losses, metrics, validation images and its phase over the queue; the session
  thread in the app hands them to the sinks (charts, CLI bar, ``metrics.json``).
- Stop: the app sets the event; every rank's stop predicate all-reduces it (MAX) after each
  batch, so all ranks stop after the same iteration and rank 0 writes one resumable checkpoint.
- A rank that dies (killed, out of memory) ends the run: the others are terminated (they would
  wait in a collective), the error is shown, the checkpoints written so far are kept. Ranks die
  with the app however it ends: a SIGKILL (``src.training.children.end_with_parent``: the kernel's
  signal when the session thread that started them, and so the app, is gone), Ctrl-C (at the
  interpreter's exit they are asked to stop, then ended, instead of multiprocessing's endless
  join of its children), and a process-group timeout bounds any wait.
- Each sample's augmentations depend on (seed, epoch, index) only (``src.data.sample_rng``) and
  each rank's sampler position is restored from the iteration, so a resume on the same number of
  processes is exact.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import datetime
import functools
import logging
import os
import queue as queue_module
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Iterator
from typing import Any

from mmengine.config import Config

from src.config.metadata import RunMetadata
from src.training.children import end_with_parent
from src.training.session_base import SessionBase
from src.training.session_reports import SessionState

logger = logging.getLogger(__name__)

PROCESS_GROUP_TIMEOUT_S = 600  # a collective waits at most this long for a rank
LOOPBACK = "lo"  # the ranks talk over the loopback interface: they are on one machine
TERMINATE_GRACE_S = 10.0


def distributed_config(cfg: Config, on_gpu: bool) -> Config:
    """``cfg`` for DDP ranks: the pytorch launcher; on GPUs SyncBN for models with BN; on CPUs
    plain BN (SyncBN has no CPU kernel) and a DDP wrapper without device ids."""
    cfg = copy.deepcopy(cfg)
    cfg.launcher = "pytorch"
    env = cfg.get("env_cfg") or {}
    env["dist_cfg"] = dict(backend="nccl" if on_gpu else "gloo")
    cfg.env_cfg = env
    if on_gpu:
        cfg.sync_bn = "torch"
    else:
        cfg.model = _without_sync_bn(cfg.model)
        if cfg.model.get("type") == "RTMDet":
            cfg.model["use_syncbn"] = False
        cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None)
    return cfg


def _without_sync_bn(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: ("BN" if k == "type" and v == "SyncBN" else _without_sync_bn(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_without_sync_bn(v) for v in node]
    return node


class _QueueSink:
    """Rank 0's sink: what the hooks report goes to the app process."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def on_train_iter(self, progress: Any) -> None:
        self.queue.put(("train", progress))

    def on_val(self, result: Any) -> None:
        self.queue.put(("val", result))

    def on_val_images(self, images: list[tuple[str, str]]) -> None:
        self.queue.put(("images", images))


class RankSession(SessionBase):
    """One rank's session: stops together with the other ranks, relays its phase."""

    def __init__(self, *args: Any, rank: int, queue: Any, stop_event: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.rank = rank
        self.queue = queue
        self.stop_event = stop_event
        self.primary = rank == 0

    @property
    def world_size(self) -> int:
        return 1  # this process trains (its session does not launch ranks)

    def prepared_config(self) -> Config:
        """The app process prepared and saved the config (``run_ranks``); here it only gets
        the distributed settings, in memory."""
        import torch

        return distributed_config(self.cfg, on_gpu=torch.cuda.is_available())

    def _device(self) -> str:
        """This rank's own GPU (gpus[rank]): the session's training thread makes it current
        (the current CUDA device is per thread), mmengine builds the model there, GpuStats
        watches it."""
        return RunMetadata.of(self.cfg).rank_device(self.rank)

    def _should_stop(self) -> bool:
        """The app's stop, agreed by all ranks after the same batch (one all-reduce)."""
        import torch
        import torch.distributed as dist

        local = self.stop_event.is_set() or self._stop_event.is_set()
        flag = torch.tensor([int(local)], device=self._device())  # NCCL: on this rank's GPU
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and not self._stop_event.is_set():
            self.request_stop()
        return bool(flag.item())

    def _enter(self, state: SessionState) -> None:
        super()._enter(state)
        if self.primary and not state.is_final:
            self.queue.put(("state", state.value))


def _rank_main(
    rank: int, world: int, store_file: str, job: dict[str, Any], queue: Any, stop: Any
) -> None:
    """A rank's process: join the group, train with a RankSession, report how it ended.

    The group meets through a file (``store_file``, in a folder only this user can read), not
    torch's TCP store, which listens on every network interface: nothing from the network can
    join or feed a run's collectives (``all_gather_object`` unpickles what peers send). The
    ranks' own connections (gloo; NCCL's bootstrap) stay on the loopback interface unless
    ``GLOO_SOCKET_IFNAME`` / ``NCCL_SOCKET_IFNAME`` say otherwise: the ranks are on one machine."""
    end_with_parent(job["app_pid"], signal.SIGKILL)  # however the app ends
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the app decides when to stop (the event)
    gpus = job["gpus"]
    # LOCAL_RANK is the card's index, not the rank's: mmengine and torch read it as the device
    # to bind (mmengine's DDP wrapper: device_ids=[LOCAL_RANK]; its init_dist and torch's
    # DeviceMesh: set_device(LOCAL_RANK)), which torchrun makes equal by giving rank r card r.
    # Here rank r trains on gpus[r] (``--gpus 2,5``: rank 1 on card 5), indices as torch counts
    # them in this process (after any CUDA_VISIBLE_DEVICES, which the ranks inherit).
    local = gpus[rank] if gpus else rank
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(local), WORLD_SIZE=str(world))
    os.environ.setdefault("GLOO_SOCKET_IFNAME", LOOPBACK)
    os.environ.setdefault("NCCL_SOCKET_IFNAME", LOOPBACK)
    if not gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    end: dict[str, Any] = {"rank": rank}
    try:
        _join_group(rank, world, store_file, local if gpus else None, job["timeout_s"])
        session = RankSession(
            Config(job["cfg"]), job["run_id"],
            sinks=[_QueueSink(queue)] if rank == 0 else [],
            resume_from=job["resume_from"], max_nonfinite=job["max_nonfinite"],
            console_log_level=job["console_log_level"] if rank == 0 else "ERROR",
            app_data_root=job["app_data_root"], rank=rank, queue=queue, stop_event=stop,
        )  # fmt: skip
        session.start()
        status = session.wait()
        end.update(
            state=status.state.value, error=status.error, traceback=status.traceback,
            stopped_checkpoint=status.stopped_checkpoint, ended_early=status.ended_early,
        )  # fmt: skip
    except BaseException as exc:
        end.update(state="failed", error=f"{type(exc).__name__}: {exc}",
                   traceback=traceback.format_exc())  # fmt: skip
    queue.put(("end", end))
    queue.close()
    queue.join_thread()  # the message is out before the process ends


def _join_group(rank: int, world: int, store_file: str, card: int | None, timeout_s: float) -> None:
    """Join the process group: NCCL bound to this rank's ``card`` (its collectives and
    ``barrier()`` run there; without the binding ``barrier()`` guesses card ``rank``), gloo on
    the CPU. The card is also made current in this (main) thread; the training thread makes it
    current in its own (the current device is per thread: ``TrainingSession._worker``)."""
    import torch
    import torch.distributed as dist

    bound: dict[str, Any] = {}
    if card is not None:
        torch.cuda.set_device(card)
        bound["device_id"] = torch.device("cuda", card)
    dist.init_process_group(
        "nccl" if card is not None else "gloo", init_method=f"file://{store_file}", rank=rank,
        world_size=world, timeout=datetime.timedelta(seconds=timeout_s), **bound,
    )  # fmt: skip


def _job(session: SessionBase) -> dict[str, Any]:
    """What each rank builds its session from (plain values: it is pickled to every rank)."""
    gpus = [int(g) for g in RunMetadata.of(session.cfg).train_params.get("gpus") or ()]
    cfg = session.prepared_config()  # saved as the run's config.py, without distributed keys
    return {
        "cfg": cfg.to_dict(), "run_id": session.run_id, "resume_from": session.resume_from,
        "gpus": gpus, "max_nonfinite": session.max_nonfinite, "timeout_s": PROCESS_GROUP_TIMEOUT_S,
        "console_log_level": session.console_log_level, "app_data_root": str(session.app_data_root),
        "app_pid": os.getpid(),
    }  # fmt: skip


def run_ranks(session: SessionBase) -> SessionState:
    """Train ``session``'s config in ``session.world_size`` processes; relay what rank 0
    reports into the session; return the final state (with the session's error, stopped
    checkpoint and early-stop reason set)."""
    import torch.multiprocessing as mp

    world, job = session.world_size, _job(session)
    if session.extra_hooks:
        logger.warning(
            "run %s trains in %d processes: the in-run checkpoint sync is off (the run is "
            "uploaded when it ends)", session.run_id, world,
        )  # fmt: skip
    ctx = mp.get_context("spawn")
    queue, stop = ctx.Queue(), ctx.Event()
    meeting = tempfile.mkdtemp(prefix="train-mmdet3-ranks-")  # mode 0700: this user only
    ranks = [
        ctx.Process(
            target=_rank_main,
            args=(r, world, os.path.join(meeting, "store"), job, queue, stop),
            name=f"{session.run_id}-rank{r}",
        )
        for r in range(world)
    ]
    ends: dict[int, dict[str, Any]] = {}
    dead: str | None = None
    failed_traceback: str | None = None
    with _running(ranks, stop, meeting):
        while len(ends) < world:
            if session.should_stop():
                stop.set()
            try:
                kind, payload = queue.get(timeout=0.2)
            except queue_module.Empty:
                dead = dead or _dead_rank(ranks, ends)
                if dead:
                    break
                continue
            if kind in ("train", "val", "images", "state"):
                session.relay(kind, payload)
            elif kind == "end":
                ends[payload["rank"]] = payload
                if payload["state"] == "failed":  # the others would wait for it
                    # a rank that died without a word makes the others fail ("connection
                    # closed"): name the cause, not the consequence
                    cause = _wait_for_dead_rank(ranks, ends, 2.0)
                    failed = f"rank {payload['rank']} failed: {payload['error']}"
                    dead = f"{cause}; then {failed}" if cause else failed
                    failed_traceback = payload.get("traceback")
                    break
    if dead:
        session.record_end(error=dead, traceback=failed_traceback)
        return SessionState.FAILED
    first = ends[0]
    session.record_end(
        error=first.get("error"), traceback=first.get("traceback"),
        stopped_checkpoint=first.get("stopped_checkpoint"), ended_early=first.get("ended_early"),
    )  # fmt: skip
    return SessionState(first["state"])


def _dead_rank(ranks: list[Any], ends: dict[int, dict]) -> str | None:
    """A rank that ended without reporting (killed, crashed in C code), if any."""
    for rank, process in enumerate(ranks):
        if rank not in ends and process.exitcode is not None:
            code = process.exitcode
            how = f"signal {-code} ({signal.Signals(-code).name})" if code < 0 else f"code {code}"
            return (
                f"rank {rank} of {len(ranks)} died ({how}); the checkpoints saved so far are kept"
            )
    return None


def _wait_for_dead_rank(ranks: list[Any], ends: dict[int, dict], seconds: float) -> str | None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        found = _dead_rank(ranks, ends)
        if found:
            return found
        time.sleep(0.05)
    return None


@contextlib.contextmanager
def _running(ranks: list[Any], stop: Any, meeting: str) -> Iterator[None]:
    """The ranks started for the block, and ended when it ends, or when the app exits while
    they run (Ctrl-C: the hook runs before multiprocessing's own, which would join them
    forever); their meeting folder removed."""
    for process in ranks:
        process.start()
    at_exit = functools.partial(_stop_and_end, ranks, stop)
    atexit.register(at_exit)
    try:
        yield
    finally:
        _end_all(ranks)
        atexit.unregister(at_exit)
        shutil.rmtree(meeting, ignore_errors=True)


def _stop_and_end(ranks: list[Any], stop: Any) -> None:
    """The app is exiting (Ctrl-C) while ranks train: ask them to stop (rank 0 saves where they
    are), then end them (:func:`_end_all`)."""
    stop.set()
    _end_all(ranks)


def _end_all(ranks: list[Any]) -> None:
    """Every rank process ended: joined when done, else terminated, then killed."""
    deadline = time.time() + TERMINATE_GRACE_S
    for process in ranks:
        process.join(max(0.0, deadline - time.time()))
    for process in ranks:
        if process.is_alive():
            process.terminate()
    for process in ranks:
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join(5)
