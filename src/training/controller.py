"""The app's training controller: one run at a time, started, watched, stopped, resumed, uploaded.

What the widgets UI, the HTTP API and the CLI call to train. Its use cases (compose, start,
resume, export, evaluate) prepare a run and build its ``TrainingSession``; the run in flight, its
end (evaluate, export, upload, in a watcher thread, so no request handler ever waits on training)
and the status a client sees are its ``RunSlot``'s (``run_slot``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.config import zoo
from src.config.compose_model import native_input_size
from src.config.params import TrainParams
from src.core.errors import BusyError, RequestError
from src.core.layout import RUN_CONFIG, SYNC_STAGING
from src.data.project import LocalProject
from src.export.formats import ExportResult, export_run
from src.export.onnx_export import ExportError
from src.hooks.metrics import MetricsSink
from src.prelabel.prelabel import PrelabelRequest, PrelabelResult, Progress
from src.publish.platform_project import PlatformCopies
from src.runs.checkpoint_io import CheckpointError
from src.runs.checkpoint_sync import CheckpointSync
from src.runs.info import RunInfo
from src.runs.storage import ArtifactStore, artifacts_dir
from src.setup.app_state import (
    LoadedState,
    app_state_of,
    load_app_state,
    record_epochs,
    write_app_state,
)
from src.setup.augment_preview import AugmentationPreview, AugmentationPreviewer
from src.setup.catalog import RunCatalog
from src.setup.data_check import check_data, dry_run
from src.setup.prepare import (
    Prepared,
    ProjectResolver,
    TrainRequest,
    local_project_resolver,
    prepare,
    setting_notes,
)
from src.setup.resume import locate_run, prepare_resume
from src.setup.run_ids import new_run_id
from src.training.end_of_run import RunEnding, RunOutcome
from src.training.run_slot import ControllerStatus, RunSlot
from src.training.session import TrainingSession

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncPolicy:
    """When a running run's state is copied to the store (see ``src.runs.checkpoint_sync``)."""

    every_epochs: int | None = 1
    every_minutes: float | None = None


class TrainingController:
    """Start, watch, stop and resume runs; upload each run's artifacts when it ends.

    Args:
        app_data_dir: the synced app-data folder (runs live in ``<app_data_dir>/<run_id>``).
        store: where artifacts go (Team Files or a local folder).
        cache_dir: parsed-annotation cache.
        sinks: more receivers of the session's progress (the UI's charts).
        project_resolver: finds a resumed run's project (downloads it on the platform).
        sync: copy the newest checkpoint to the store while training (None: off).
        after_upload: called with the remote dir after a verified upload (sets the task output
            on the platform, builds its report: returns the report's link); an error there is
            reported, the upload stands.
        cleanup_after_upload: remove the run's app-data folder once its upload is verified (on
            the platform: the agent's disk is not kept; the run resumes from Team Files).
        stop_signals: predicates that stop a run gracefully (the platform stopping the app).
        run_context: a context each run's wait-and-upload runs in (``app.handle_stop``, so the
            platform's shutdown waits for the upload).
        on_run_end: called with the outcome after the upload (``app.stop()`` on the platform).
        run_id_base: how new runs are named (on the platform: the task id, so artifacts go to
            ``/mmdetection-3/<task_id>_<project>``); default a timestamp.
        task_id: the app's task on the platform, recorded in each run's ``experiment_info.json``.
        max_nonfinite: NaN/Inf losses in a row that end a run.
        on_fetch: told before a run that is only in the store is downloaded to be resumed.
        record_inputs: called before a new run trains (on the platform: the project version
            and the workflow's inputs); returns the project version id its settings record.
        on_run_start: told each run's folder once it trains (a resume too): TensorBoard.
        copies: publishes pre-labelled copies as projects (``PlatformCopies``: the platform).
        verbose: the console shows the libraries' output too (mmengine's log at INFO,
            pycocotools' prints, Python warnings); else only errors of mmengine reach it and the
            rest goes to the run's log file (``src.engine.chatter``).
    """

    def __init__(
        self,
        app_data_dir: str | Path,
        store: ArtifactStore,
        cache_dir: str | None = None,
        sinks: Sequence[MetricsSink] = (),
        project_resolver: ProjectResolver = local_project_resolver,
        sync: SyncPolicy | None = None,
        after_upload: Callable[[str], str | None] | None = None,
        cleanup_after_upload: bool = False,
        stop_signals: Sequence[Callable[[], bool]] = (),
        run_context: Callable[[], AbstractContextManager] | None = None,
        on_run_end: Callable[[RunOutcome], None] | None = None,
        run_id_base: str | None = None,
        task_id: int | None = None,
        max_nonfinite: int = 5,
        verbose: bool = False,
        on_fetch: Callable[[RunInfo], None] | None = None,
        record_inputs: Callable[[Prepared], int | None] | None = None,
        on_run_start: Callable[[Path], None] | None = None,
        copies: PlatformCopies | None = None,
    ) -> None:
        self.copies = copies
        self.record_inputs = record_inputs
        self.max_nonfinite = max_nonfinite
        self.console_log_level = "INFO" if verbose else "ERROR"
        self.on_fetch = on_fetch
        self.run_id_base = run_id_base
        self.task_id = task_id
        self.stop_signals = list(stop_signals)
        self.project_resolver = project_resolver
        self.sync = sync
        self.after_upload = after_upload
        self.cleanup_after_upload = cleanup_after_upload
        self.sinks = list(sinks)
        self.app_data_dir = Path(app_data_dir)
        self.store = store
        self.cache_dir = cache_dir
        self.catalog = RunCatalog(self.app_data_dir, store)
        ending = RunEnding(
            self.app_data_dir, store, self.catalog, task_id=task_id, after_upload=after_upload,
            cleanup_after_upload=cleanup_after_upload,
        )  # fmt: skip
        self._slot = RunSlot(ending, run_context, on_run_end, on_run_start)
        self._previewer = AugmentationPreviewer(cache_dir)

    # ------------------------------------------------------------------ the run in flight
    @property
    def prepared(self) -> Prepared | None:
        return self._slot.prepared

    @property
    def busy(self) -> bool:
        return self._slot.busy

    @property
    def outcome(self) -> RunOutcome | None:
        """The last run's outcome (None until one has ended, or while one is in progress)."""
        return self._slot.outcome

    def status(self) -> ControllerStatus:
        """The session's progress plus the model, upload state and outcome (see
        :class:`ControllerStatus` for what ``state`` promises)."""
        return self._slot.status()

    def history(self) -> dict[str, list[dict[str, Any]]]:
        return self._slot.history()

    @property
    def traceback(self) -> str | None:
        """The failed run's traceback, for local clients (the CLI's --verbose); never sent
        over HTTP (``status`` has one line)."""
        return self._slot.traceback

    def reserved(self, what: str, own: Callable[[str], bool]) -> AbstractContextManager:
        """A block in which only ``what``'s own runs start (``RunSlot.reserved``: an audit)."""
        return self._slot.reserved(what, own)

    def stop(self) -> bool:
        """Ask the current run to stop at the next batch, or a run being prepared not to start;
        False when nothing is running."""
        return self._slot.stop()

    def shutdown(self, timeout: float = 120.0) -> None:
        """The app is closing: stop the run at its next batch, let it save and upload."""
        if self.stop():
            logger.info("app shutdown: stopping the run gracefully")
        self.wait(timeout)

    def wait(self, timeout: float | None = None) -> ControllerStatus:
        """Block until the current run has ended and its artifacts are uploaded."""
        return self._slot.wait(timeout)

    # ------------------------------------------------------------------ queries
    def augmentation_preview(
        self, project_dir: str, params: TrainParams, sample: int
    ) -> AugmentationPreview:
        """One project image before and after the chosen training pipeline (the Augmentations
        step). Refused while a run trains here: the preview draws from the global random
        generators that the run's augmentations also draw from (with workers 0), and a
        preview in between would change what the run sees."""
        if self.busy:
            raise BusyError(
                "the preview is off while a run is in progress: it would draw from the random "
                "generators the run's augmentations use"
            )
        return self._previewer.preview(project_dir, params, sample)

    def new_run_id(self) -> str:
        return new_run_id(self.app_data_dir, base=self.run_id_base)

    def policy(self, every_epochs: int | None) -> SyncPolicy | None:
        """The app's sync policy with its epoch interval replaced (0: by epochs off)."""
        if every_epochs is None:
            return self.sync
        minutes = self.sync.every_minutes if self.sync else None
        if not every_epochs and minutes is None:
            return None
        return SyncPolicy(every_epochs=every_epochs or None, every_minutes=minutes)

    def setting_notes(self, prepared: Prepared) -> list[str]:
        """What the composed settings mean beyond their values (``setup.prepare``'s notes)."""
        return setting_notes(prepared)

    def model_input_size(self, model: str, task: str) -> tuple[int, int] | None:
        """The size the zoo model was tested at, (longer, shorter) edge (None: it has none
        here); an unknown model is a ``RequestError``. The UI proposes it when a model is
        picked; the CLI takes it as ``--input-size model``."""
        try:
            return native_input_size(zoo.get_model(model, task))
        except zoo.ZooError as exc:
            raise RequestError([str(exc)]) from None

    def dry_run(self, prepared: Prepared) -> dict[str, Any]:
        """Build both datasets and the model and put the extreme images through them, training
        nothing: the summary the CLI's ``--dry-run`` prints (problems raise ``RequestError``)."""
        return dry_run(prepared)

    def compose(self, request: TrainRequest) -> Prepared:
        """Validate and compose a request, as Start would (the UI's Compose button): remote
        inputs (custom weights and their config in Team Files) are fetched into app data
        first. The request itself is not changed."""
        from dataclasses import replace

        params = request.params
        config_file = request.base_config_file
        custom = params.weights == "custom" and params.weights_path
        own_model = request.model or request.config_text or request.config_file
        if custom and not config_file and not own_model:
            config_file = self.catalog.companion_config(params.weights_path)
            if config_file is None:
                raise RequestError(
                    [
                        f"no {RUN_CONFIG} beside the checkpoint {params.weights_path}: give the "
                        "model's config (or a zoo model whose architecture it is)"
                    ]
                )
        if config_file:  # custom weights: may live in Team Files
            config_file = self.catalog.fetch(config_file, "config")
        if custom:
            fetched = self.catalog.fetch(params.weights_path, "checkpoint")
            params = replace(params, weights_path=fetched)
        prepared = prepare(
            replace(
                request, params=params, base_config_file=config_file,
                app_data_dir=str(self.app_data_dir), run_id=request.run_id or self.new_run_id(),
                cache_dir=request.cache_dir or self.cache_dir,
            ),
            store=self.store,
        )  # fmt: skip
        prepared.app_state = app_state_of(request, prepared)
        return prepared

    def from_run(self, run_id: str, project: LocalProject, mode: str = "new") -> LoadedState:
        """The settings of run ``run_id`` (uploaded to the store with its ``app_state.json``)
        against ``project``; ``mode`` ``continue`` starts from its best checkpoint. What does not
        hold in ``project`` is dropped and named in ``notes``."""
        state, best = self.run_state(run_id)
        return load_app_state(state, project, mode, best)

    def from_folder(
        self, folder: str, best: str | None, project: LocalProject, mode: str = "new"
    ) -> LoadedState:
        """:meth:`from_run` for a run folder of the store (the platform's Experiments page
        names the run by its task: ``experiment_info.artifacts_dir``)."""
        return load_app_state(self.catalog.read_state(folder), project, mode, best)

    def run_state(self, run_id: str) -> tuple[dict[str, Any], str | None]:
        """The raw ``app_state.json`` of uploaded run ``run_id`` and its best checkpoint in the
        store (the CLI reads the project from it before :func:`load_app_state`)."""
        return self.catalog.experiment_state(run_id)

    def start(self, request: TrainRequest, sync_every_epochs: int | None = None) -> str:
        """Validate, compose and start a new run; returns its id. ``sync_every_epochs``
        overrides the app's checkpoint-sync interval for this run (0: off)."""
        with self._preparation():
            prepared = self.compose(request)
            check_data(prepared)  # what would fail the run later fails the request now
            return self._launch_unless_cancelled(prepared, None, self.policy(sync_every_epochs))

    def resume(
        self,
        target: str | None = None,
        epochs: int | None = None,
        sync_every_epochs: int | None = None,
        gpus: tuple[int, ...] | None = None,
        nproc: int | None = None,
        device: str | None = None,
    ) -> str:
        """Continue a run (default: the newest); returns its id.

        ``target`` is a run id or checkpoint in app data, or a run id whose state is only in the
        store (Team Files): then it is downloaded into app data first. ``gpus`` / ``nproc`` /
        ``device``: train on other devices than the run did (see :func:`prepare_resume`).
        """
        with self._preparation():
            prepared, run = self.prepare_resume(target, epochs, gpus, nproc, device)
            for note in prepared.notes:
                logger.warning("run %s: %s", prepared.run_id, note)
            return self._launch_unless_cancelled(
                prepared, run.checkpoint, self.policy(sync_every_epochs)
            )

    def prepare_resume(
        self,
        target: str | None = None,
        epochs: int | None = None,
        gpus: tuple[int, ...] | None = None,
        nproc: int | None = None,
        device: str | None = None,
    ) -> tuple[Prepared, RunInfo]:
        """The run ``target`` names (None: the newest) ready to continue, and where it stands
        (``run.checkpoint`` is what it continues from); a run only in the store is downloaded
        into app data first. ``prepared.notes`` says what a change of devices means."""
        run = self.locate(target)
        prepared = prepare_resume(
            run, epochs=epochs, project_resolver=self.project_resolver, cache_dir=self.cache_dir,
            gpus=gpus, nproc=nproc, device=device,
        )  # fmt: skip
        return prepared, run

    def start_prepared(
        self,
        prepared: Prepared,
        resume_from: str | None = None,
        sync_every_epochs: int | None = None,
    ) -> str:
        """Start what :meth:`compose` or :meth:`prepare_resume` returned (the CLI shows it
        first: a dry run, the config dump); returns the run id."""
        with self._preparation():
            if resume_from is None:
                check_data(prepared)
            return self._launch_unless_cancelled(
                prepared, resume_from, self.policy(sync_every_epochs)
            )

    def locate(self, target: str | None) -> RunInfo:
        """The resumable run ``target`` names (None: the newest) in app data; a run that is only
        in the store (Team Files) is downloaded into app data first."""

        def told(run: RunInfo) -> None:
            logger.info("fetching run %s from %s", run.run_id, run.folder)
            if self.on_fetch is not None:
                self.on_fetch(run)

        return locate_run(self.app_data_dir, self.store, target, on_fetch=told)

    # ------------------------------------------------------------------ runs in app data
    def export(
        self,
        run_id: str,
        formats: tuple[str, ...],
        checkpoint: str | None = None,
        input_size: int | None = None,
        replace: bool = False,
    ) -> ExportResult:
        """Export a run in app data on request (its best checkpoint, or the one named) into its
        ``export/`` folder; ``replace``: write over files an earlier export left there. Only runs
        in app data: their ``config.py`` is Python this executes."""
        work_dir = self._run_in_app_data(run_id, checkpoint)
        try:
            return export_run(work_dir, formats, checkpoint, input_size=input_size, replace=replace)
        except (ExportError, CheckpointError) as exc:
            raise RequestError([str(exc)]) from None

    def evaluate(
        self,
        run_id: str,
        checkpoint: str | None = None,
        project_dir: str | None = None,
        split: str = "val",
    ) -> dict[str, Any]:
        """Evaluate a run in app data on request (a stopped run, another checkpoint, the train
        split): the evaluation's summary; its files go to the run's ``evaluation/`` folder.
        Only runs in app data: their ``config.py`` is Python this executes."""
        from src.evaluation.evaluate import evaluate_run

        work_dir = self._run_in_app_data(run_id, checkpoint)
        try:
            return evaluate_run(
                work_dir, checkpoint, project_dir=project_dir, split=split
            ).summary()
        except CheckpointError as exc:  # (EvaluationError is an AppError of its own)
            raise RequestError([str(exc)]) from None

    def prelabel(self, request: PrelabelRequest, told: Progress | None = None) -> PrelabelResult:
        """Pre-label a copy of a project with a run's model (docs/after-training.md): a run in
        app data or uploaded to the store; ``to_platform``: the copy published as a new project
        too (``copies``). Refused while a run trains here, and a start refused while it works."""
        from src.prelabel.model import RunModel
        from src.prelabel.prelabel import check_request, prelabel_project

        if request.to_platform and self.copies is None:
            raise RequestError(["to_platform: the app is not on the platform (the copy is local)"])
        with self._slot.occupied("pre-labelling", "a run is in progress: pre-label when it ends"):
            config, checkpoint = self.catalog.model_files(request.run_id)
            check_request(request)  # before the model loads
            if request.to_platform:
                self.copies.check(request.project_dir)
            model = RunModel(config, checkpoint, score_thr=request.score_thr)
            result = prelabel_project(model, request, told)
            if request.to_platform:
                result.platform_project = self.copies.prelabelled(
                    result.out_dir, request.run_id, self.catalog.stored_best_checkpoint
                )
            return result

    # ------------------------------------------------------------------ internals
    def _preparation(self) -> AbstractContextManager:
        return self._slot.preparation()

    def _launch_unless_cancelled(
        self, prepared: Prepared, resume_from: str | None, sync: SyncPolicy | None
    ) -> str:
        return self._slot.launch_unless_cancelled(
            prepared, lambda: self._new_session(prepared, resume_from, sync)
        )

    def _new_session(
        self, prepared: Prepared, resume_from: str | None, sync: SyncPolicy | None
    ) -> tuple[TrainingSession, CheckpointSync | None]:
        """The session that trains ``prepared`` (not started) and its checkpoint sync; the
        run's settings (a new run) or its epochs (a resume) recorded in its folder first."""
        if resume_from is None and prepared.app_state is not None:
            self._record_inputs(prepared)
        elif resume_from is not None:
            record_epochs(prepared.work_dir, prepared.params.epochs)
        hooks, syncer = [], None
        if sync is not None:
            from src.hooks.sync import CheckpointSyncHook

            syncer = CheckpointSync(
                self.store,
                artifacts_dir(prepared.run_id, prepared.project.name),
                self.app_data_dir / SYNC_STAGING / prepared.run_id,
                prepared.run_id,
            )
            hooks.append(CheckpointSyncHook(syncer, sync.every_epochs, sync.every_minutes))
        session = TrainingSession(
            prepared.cfg,
            prepared.run_id,
            resume_from=resume_from,
            sinks=self.sinks,
            console_log_level=self.console_log_level,
            app_data_root=self.app_data_dir,
            extra_hooks=hooks,
            stop_signals=self.stop_signals,
            max_nonfinite=self.max_nonfinite,
        )
        return session, syncer

    def _record_inputs(self, prepared: Prepared) -> None:
        """The run's settings into its folder, with the project version the platform made for
        it (recording the inputs never fails a run: a warning says what went wrong)."""
        state = copy.deepcopy(prepared.app_state)
        if self.record_inputs is not None:
            try:
                state["project"]["version_id"] = self.record_inputs(prepared)
            except Exception as exc:
                logger.warning("run %s: its inputs were not recorded: %s", prepared.run_id, exc)
        write_app_state(prepared.work_dir, state)

    def _run_in_app_data(self, run_id: str, checkpoint: str | None) -> Path:
        """The folder of run ``run_id`` in app data, when no run is in progress; ``checkpoint``
        must be one of its files."""
        from src.core.layout import RunIdError, run_dir

        try:
            work_dir = run_dir(self.app_data_dir, run_id)
        except RunIdError as exc:
            raise RequestError([str(exc)]) from None
        if not (work_dir / RUN_CONFIG).is_file():
            raise RequestError([f"no run {run_id!r} in {self.app_data_dir}"])
        if checkpoint is not None and Path(checkpoint).resolve().parent != work_dir:
            raise RequestError([f"{checkpoint} is not a checkpoint of run {run_id}"])
        self._slot.refuse_while_busy("a run is in progress: try again when it has ended")
        return work_dir
