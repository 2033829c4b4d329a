"""``SessionBase``: the mmengine Runner in a daemon worker thread, with a state machine

One run at a time per process. The worker builds the Runner from a composed config, registers our
hooks with their collaborators (sinks), trains, and records how it ended; an exception is captured
with its traceback and reported, never swallowed. Callers (CLI, UI, HTTP API) only call
``start``/``wait``/``status``.
"""

from __future__ import annotations

import copy
import gc
import logging
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mmengine.config import Config
from mmengine.hooks import Hook

from src.config.metadata import RunMetadata
from src.core.errors import BusyError
from src.engine.chatter import library_chatter_to_log
from src.hooks.metrics import MetricsHook, MetricsSink
from src.hooks.nonfinite import NonFiniteLossHook
from src.training.session_reports import SessionState, SessionStatus, _FanOut, _Recorder

logger = logging.getLogger(__name__)


SessionBusyError = BusyError  # a second run asked for while one runs in this process


_RUN_LOCK = threading.Lock()  # one run at a time per process


class _PhaseHook(Hook):
    """Tells the session when validation starts and ends."""

    priority = "VERY_HIGH"

    def __init__(self, session: SessionBase) -> None:
        self.session = session

    def before_val_epoch(self, runner) -> None:
        self.session._enter(SessionState.VALIDATING)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.session._enter(SessionState.TRAINING)


def warm_up_imports() -> None:
    """Import what the first run imports (about 1200 modules: mmdet's models pull in scikit-learn
    and scipy, the first optimizer step torch._dynamo). Run by the app in a background thread at
    start: imported during a run's start instead, C-extension initialisations held the GIL long
    enough to stall the page and the HTTP API for up to 350 ms (bench/ui_latency.py); so did
    full garbage collections over them, hence the ``gc.freeze()``."""
    import importlib

    for name in ("mmdet.models", "mmdet.datasets", "mmdet.evaluation", "mmdet.engine",
                 "mmdet.visualization", "torch._dynamo"):  # fmt: skip
        try:
            importlib.import_module(name)
        except Exception as exc:  # an optional extra missing: the run says so, not the app
            logger.debug("warm-up import of %s failed: %s", name, exc)
    # The million objects those modules hold are never garbage: out of the collector's sight,
    # a full collection (triggered by any allocation-heavy step, such as mmengine formatting the
    # config with yapf) takes milliseconds instead of a 300 ms hold of the GIL.
    gc.freeze()


class SessionBase:
    """Run one composed config in a daemon thread; stop it at any batch; resume it later.

    Args:
        cfg: a composed, validated config (``src.config.compose``).
        run_id: names the run. mmengine's logger, message hub and visualizer are process-wide
            instances looked up by name: each run gets its own and releases them at the end, so
            a second run in one process works.
        sinks: receive training progress and validation results.
        resume_from: a resumable checkpoint of this run to continue from.
        metrics_interval: report every N iterations.
        max_nonfinite: consecutive NaN/Inf losses (steps skipped) that end the run.
        console_log_level: level of mmengine's console output (its log file keeps INFO).
        app_data_root: every file of the run must be under it (default: work_dir's parent).
        extra_hooks: more hooks with their collaborators (e.g. the checkpoint sync).
        stop_signals: more predicates that stop the run gracefully (e.g. ``app.is_stopped``).
    """

    # the process that writes the run's files: this one, or rank 0 of several (a rank's session
    # sets False: src.training.distributed)
    primary = True

    def __init__(
        self,
        cfg: Config,
        run_id: str,
        sinks: Sequence[MetricsSink] = (),
        resume_from: str | Path | None = None,
        metrics_interval: int = 1,
        max_nonfinite: int = 5,
        console_log_level: str = "INFO",
        app_data_root: str | Path | None = None,
        extra_hooks: Sequence[Hook] = (),
        stop_signals: Sequence[Callable[[], bool]] = (),
    ) -> None:
        self.cfg = copy.deepcopy(cfg)
        self.extra_hooks = list(extra_hooks)
        self.stop_signals = list(stop_signals)
        self.app_data_root = Path(app_data_root or Path(cfg.work_dir).parent)
        self.run_id = run_id
        self.resume_from = str(resume_from) if resume_from else None
        self.recorder = _Recorder()
        self._sink = _FanOut([self.recorder, *sinks])
        self.metrics_interval = metrics_interval
        self.max_nonfinite = max_nonfinite
        self.console_log_level = console_log_level
        self._state = SessionState.IDLE
        self._state_lock = threading.Lock()
        self._stop_event = threading.Event()
        self._error: str | None = None
        self._traceback: str | None = None
        self._thread: threading.Thread | None = None
        self._started_at: float | None = None
        self._finished_at: float | None = None
        self._stopped_checkpoint: str | None = None
        self._ended_early: str | None = None
        self._nonfinite: NonFiniteLossHook | None = None
        self.notes: list[str] = []  # what the session chose for the run (src.engine.autosize)
        self.chosen: list[str] = []  # of those, the values chosen for settings left to auto
        self._gpu_stats = None  # src.engine.gpu_stats.GpuStats of a CUDA run
        self.runner = None  # while the run trains (mmengine's Runner)
        self.geometry_note: str | None = None  # how a resume on another geometry went on

    # ------------------------------------------------------------------ public API
    def start(self) -> None:
        """Start the run in a daemon thread; returns at once."""
        if self._state != SessionState.IDLE:
            raise SessionBusyError(f"this session already ran (state: {self._state.value})")
        if not _RUN_LOCK.acquire(blocking=False):
            raise SessionBusyError(
                "a training run is already in progress in this app: wait for it to finish "
                "or stop it first"
            )
        self._enter(SessionState.PREPARING)
        self._started_at = time.time()
        self._thread = threading.Thread(
            target=self._worker, name=f"train-{self.run_id}", daemon=True
        )
        self._thread.start()

    def request_stop(self) -> bool:
        """Ask the run to stop at the next batch boundary. False when nothing is running."""
        with self._state_lock:
            if not self._state.is_running:
                return False
            self._stop_event.set()
            if self._state != SessionState.STOPPING:
                self._state = SessionState.STOPPING
        logger.info("session %s: stop requested", self.run_id)
        return True

    def _should_stop(self) -> bool:
        """The stop predicate of the StopHook: Stop pressed, or an outside signal (the platform
        stopping the app) — which takes the same graceful path."""
        if not self._stop_event.is_set() and any(signal() for signal in self.stop_signals):
            logger.info("session %s: the app is stopping, stopping the run", self.run_id)
            self.request_stop()
        return self._stop_event.is_set()

    def should_stop(self) -> bool:
        """Whether the run is to stop (the ranks' relay asks it between messages)."""
        return self._should_stop()

    def relay(self, kind: str, payload: Any) -> None:
        """What a training rank reported, as if this session's own run had: ``train`` and
        ``val`` metrics, ``images`` (validation previews), ``state`` (a phase)."""
        if kind == "train":
            self._sink.on_train_iter(payload)
        elif kind == "val":
            self._sink.on_val(payload)
        elif kind == "images":
            for sink in self._sink.sinks:
                if hasattr(sink, "on_val_images"):
                    sink.on_val_images(payload)
        elif kind == "state":
            self._enter(SessionState(payload))

    def record_end(
        self,
        error: str | None = None,
        traceback: str | None = None,
        stopped_checkpoint: str | None = None,
        ended_early: str | None = None,
    ) -> None:
        """How the run ended where it trained (rank 0, or a failed rank): the status shows it."""
        self._error, self._traceback = error, traceback
        self._stopped_checkpoint, self._ended_early = stopped_checkpoint, ended_early

    def _run_ranks(self) -> SessionState:
        """Train in ``world_size`` processes (``src.training.session.TrainingSession``)."""
        raise NotImplementedError("this session trains in its own process only")

    def wait(self, timeout: float | None = None) -> SessionStatus:
        """Block until the run ends (or ``timeout`` seconds pass); returns the status."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.status()

    def status(self) -> SessionStatus:
        with self.recorder.lock:
            train = self.recorder.latest_train
            val = self.recorder.latest_val
        max_epochs = int(self.cfg.train_cfg.get("max_epochs", 0))
        return SessionStatus(
            state=self._state,
            run_id=self.run_id,
            work_dir=str(self.cfg.work_dir),
            epoch=train.epoch if train else 0,
            max_epochs=max_epochs,
            iteration=train.iteration if train else 0,
            max_iterations=train.max_iterations if train else 0,
            losses=dict(train.losses) if train else {},
            lr=train.lr if train else None,
            gpu=dict(train.gpu) if train else {},
            metrics=dict(val.metrics) if val else {},
            per_class_ap=dict(val.per_class_ap) if val else {},
            error=self._error,
            traceback=self._traceback,
            started_at=self._started_at,
            finished_at=self._finished_at,
            stopped_checkpoint=self._stopped_checkpoint,
            skipped_nonfinite_steps=self._nonfinite.skipped if self._nonfinite else 0,
            ended_early=self._ended_early,
        )

    @property
    def history(self) -> dict[str, list[dict[str, Any]]]:
        with self.recorder.lock:
            return copy.deepcopy(self.recorder.history)

    # ------------------------------------------------------------------ worker
    def _enter(self, state: SessionState) -> None:
        """Move to ``state``; a requested stop is not overridden by progress updates."""
        with self._state_lock:
            if self._state == SessionState.STOPPING and not state.is_final:
                return
            logger.debug("session %s: %s -> %s", self.run_id, self._state.value, state.value)
            self._state = state

    def _worker(self) -> None:
        from src.hooks.stop import TrainingStopped

        final = SessionState.FAILED
        # Data-loader workers are forked from this thread and inherit its signal mask: with SIGINT
        # blocked here, a terminal's Ctrl-C reaches only the main process (whose handler asks for
        # a graceful stop) instead of killing the workers mid-batch.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            from src.engine import patches
            from src.engine.devices import use_device

            patches.apply()  # before the sizing probe builds the model (and loads its weights)
            # the GPU the user chose (train_params.device); mmengine builds on the current one
            device = self._device()
            use_device(device)
            self._size_the_run(device)
            if self.world_size > 1:  # worker processes train; this thread relays
                final = self._run_ranks()
                return
            runner = self._build_runner()
            self.runner = runner
            self._enter(SessionState.TRAINING)
            if self._should_stop():
                raise TrainingStopped(self.resume_from, during_validation=False)
            # pycocotools' prints and torch's warnings to the run's log file, unless the console
            # shows everything (verbose)
            with library_chatter_to_log(runner.logger, self.console_log_level != "INFO"):
                runner.train()
            self._ended_early = _early_stop_reason(runner)
            final = SessionState.FINISHED
        except TrainingStopped as stop:
            self._stopped_checkpoint = stop.checkpoint or self._latest_checkpoint()
            final = SessionState.STOPPED
            logger.info("session %s stopped; resume from %s", self.run_id, self._stopped_checkpoint)
        except BaseException as exc:  # report everything, the thread must end cleanly
            self._error = f"{type(exc).__name__}: {exc}"
            self._traceback = traceback.format_exc()
            logger.error(
                "training run %s failed: %s\n%s", self.run_id, self._error, self._traceback
            )
        finally:
            self._finished_at = time.time()
            self._close_runner()
            self._enter(final)
            _RUN_LOCK.release()

    def _device(self) -> str:
        return RunMetadata.of(self.cfg).device

    def _size_the_run(self, device: str) -> None:
        """Batch size and workers the user left to the app, chosen on ``device`` before the
        Runner (or the ranks) are built; a resumed run keeps what its config says."""
        if self.resume_from:
            return
        from src.engine.autosize import size_the_run

        sized = size_the_run(self.cfg, device, processes=self.world_size)
        for note in sized.notes:
            logger.info("session %s: %s", self.run_id, note)
        self.notes.extend(sized.notes)
        self.chosen.extend(sized.chosen)

    @property
    def world_size(self) -> int:
        """Processes this run trains in: its GPUs, or ``nproc`` CPU processes (TrainParams)."""
        return RunMetadata.of(self.cfg).devices

    def _latest_checkpoint(self) -> str | None:
        from src.runs.checkpoints import last_checkpoint

        path = last_checkpoint(self.cfg.work_dir)
        return str(path) if path else None

    def prepared_config(self) -> Config:
        """The config as it trains: resume set, and saved as the run's ``config.py`` (for
        resuming it later, also after an app restart)."""
        from src.config.text import config_to_text
        from src.core.layout import RUN_CONFIG
        from src.runs.atomic_files import write_text_atomic

        cfg = self.cfg
        work_dir = Path(cfg.work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        if self.resume_from:
            cfg.resume = True
            cfg.load_from = self.resume_from
        if self.primary:
            write_text_atomic(work_dir / RUN_CONFIG, config_to_text(cfg))
        return cfg

    def _build_runner(self):
        import src.data.mmdet_dataset
        import src.engine.loops
        import src.engine.sliced_metric  # noqa: F401  (the resumable loop, sampler; the metric)
        from src.config.text import config_to_text
        from src.engine import patches
        from src.engine.runner import AppRunner
        from src.hooks.early_stopping import EarlyStoppingReplayHook
        from src.hooks.nonfinite import NonFiniteLossHook
        from src.hooks.predictions import BestPredictionsHook
        from src.hooks.resume_state import ResumeStateHook
        from src.hooks.stop import StopHook
        from src.hooks.val_preview import ValPreviewHook
        from src.hooks.workdir import WorkDirGuardHook
        from src.runs.checkpoints import logged_validations

        patches.apply()
        cfg = self.prepared_config()
        work_dir = Path(cfg.work_dir)
        cfg.experiment_name = f"{self.run_id}_{id(self):x}"
        # mmdet names its visualizer "visualizer": a process-wide instance that a second run
        # would reuse, writing its scalars into the first run's folder. One name per run.
        if isinstance(cfg.get("visualizer"), dict):
            cfg.visualizer["name"] = cfg.experiment_name
        # mmengine dumps the config under the name of the file it came from
        model_name = RunMetadata.of(cfg).model_name
        cfg = Config(
            cfg.to_dict(), cfg_text=config_to_text(cfg), filename=str(work_dir / f"{model_name}.py")
        )
        runner_cls = type(
            "SessionRunner", (AppRunner,), {"console_log_level": self.console_log_level}
        )
        runner = runner_cls.from_cfg(cfg)
        self._nonfinite = NonFiniteLossHook(self.max_nonfinite)
        runner.register_hook(WorkDirGuardHook(self.app_data_root))
        rng = ResumeStateHook()
        runner.register_hook(rng)
        runner.register_hook(self._nonfinite)
        runner.register_hook(_PhaseHook(self))
        gpu = None
        if self._device().startswith("cuda"):
            from src.engine.gpu_stats import GpuStats
            from src.hooks.gpu_memory import GpuMemoryHook

            stats = self._gpu_stats = GpuStats(self._device())
            runner.register_hook(GpuMemoryHook(stats))
            gpu = stats.snapshot
        runner.register_hook(MetricsHook(self._sink, interval=self.metrics_interval, gpu=gpu))
        runner.register_hook(StopHook(self._should_stop, before_save=rng.share_states))
        runner.register_hook(EarlyStoppingReplayHook(logged_validations))
        predictions = (cfg.get("val_evaluator") or {}).get("outfile_prefix")
        if predictions and self.primary:  # keep the best epoch's for the evaluation after training
            runner.register_hook(BestPredictionsHook(predictions))
            # and show a few of each validation's to the sinks that draw them (the UI)
            runner.register_hook(ValPreviewHook(self._sink.sinks, predictions))
        for hook in self.extra_hooks:
            runner.register_hook(hook)
        return runner

    def _close_runner(self) -> None:
        if self._gpu_stats is not None:  # a failed run never reaches the hook's after_run
            self._gpu_stats.stop()
        runner = self.runner
        if runner is None:
            return
        from src.engine.devices import release_cuda_cache
        from src.engine.runner import release_mmengine_instances, shut_down_loader_workers

        shut_down_loader_workers(runner)
        try:
            for backend in getattr(runner.visualizer, "_vis_backends", {}).values():
                backend.close()
        except Exception:
            logger.debug("closing visualizer backends failed", exc_info=True)
        release_mmengine_instances(runner.experiment_name)
        # the session keeps the run's notes, not its tensors: without the model, its optimizer
        # state and the EMA copy, a next run in this app sizes its batch on the whole card (issue
        # 34, item 2), and a CPU run gives its memory back
        self.geometry_note = getattr(runner, "geometry_note", None)  # (AppRunner has it)
        self.runner = None
        del runner
        release_cuda_cache()


def _early_stop_reason(runner: Any) -> str | None:
    """Why mmengine's EarlyStoppingHook ended the run before its last epoch (None: it did not)."""
    from mmengine.hooks import EarlyStoppingHook

    loop = runner.train_loop
    if not getattr(loop, "stop_training", False) or loop.epoch >= loop.max_epochs:
        return None
    hook = next((h for h in runner.hooks if isinstance(h, EarlyStoppingHook)), None)
    if hook is None:
        return f"stopped at epoch {loop.epoch} of {loop.max_epochs}"
    return (
        f"early stopping at epoch {loop.epoch} of {loop.max_epochs}: {hook.monitor} did not "
        f"improve by more than {hook.min_delta} in {hook.patience} validations "
        f"(best {hook.best_score:.3f})"
    )
