"""The end of a run: evaluate → export → pack → upload → verify → clean up.

Runs in the controller's watcher thread once training has ended (finished or stopped), so no
request handler waits on it. A failure at any step is shown in the run's :class:`RunOutcome` and
never loses the run's files: an evaluation or export that fails still uploads, an upload that
fails keeps the app-data folder, and the app-data copy is removed (on the platform) only when Team
Files holds a resumable state of the run.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from src.config.params import jsonable
from src.config.primary_metric import headline, primary_metric
from src.core.layout import RESUME_DIR, STATE_FILE, UPLOAD_STAGING, audit_of_run, is_run_dir
from src.data.project import split_items
from src.data.reader import class_colors
from src.runs.artifacts import RunSummary, pack_run
from src.runs.checkpoint_io import CheckpointError
from src.runs.storage import ArtifactStore, UploadError, artifacts_dir, run_dir_name
from src.setup.catalog import RunCatalog
from src.setup.prepare import Prepared
from src.training.session import SessionState, TrainingSession

logger = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    """What happened to the last run after training ended."""

    run_id: str
    state: str
    artifacts: str | None = None  # where the uploaded artifacts are (path or Team Files dir)
    upload_error: str | None = None
    local_dir: str | None = None  # the run's app-data folder, kept when an upload failed
    output_error: str | None = None  # the upload worked, but showing it as the task output did not
    # the upload worked, but something the user should know did not: every one (warnings), and
    # joined into one line (warning, what the UI, the API and the CLI show)
    warning: str | None = None
    warnings: list[str] = field(default_factory=list)
    evaluation: dict[str, Any] | None = None  # src.evaluation.evaluate.Evaluation.summary()
    evaluation_error: str | None = None  # the evaluation failed; the run was uploaded all the same
    exports: dict[str, str] | None = None  # format -> local file (src.export.formats)
    export_skipped: dict[str, str] | None = None  # format -> why (TensorRT without a GPU)
    export_error: str | None = None  # the export failed; the run was uploaded all the same
    export_speed: list[str] | None = None  # the speed test of the export, in words
    platform_report: str | None = None  # the platform's Model Benchmark report (its link)

    def warn(self, message: str) -> None:
        """Add a warning: kept beside the earlier ones, never over them."""
        self.warnings.append(message)
        self.warning = "; ".join(self.warnings)


def export_notes(outcome: RunOutcome, failure: bool = True) -> list[str]:
    """The export's lines for a user: what was written, skipped, or (``failure``) failed, as
    :func:`export_failure` says it (CLI and UI)."""
    notes = [f"exported {fmt}: {Path(path).name}" for fmt, path in (outcome.exports or {}).items()]
    notes += [f"{fmt} not exported: {why}" for fmt, why in (outcome.export_skipped or {}).items()]
    notes += [f"speed test, {line}" for line in outcome.export_speed or []]
    failed = export_failure(outcome) if failure else None
    return [*notes, failed] if failed else notes


def export_failure(outcome: RunOutcome) -> str | None:
    """The export's failure as a line for a user (None: it did not fail)."""
    if not outcome.export_error:
        return None
    return f"export failed (the run is uploaded all the same): {outcome.export_error}"


class RunEnding:
    """What happens to a run after training, and which step it is at (``stage``: the
    controller's state while it works, or None), for the controller's status.

    Args:
        app_data_dir: where runs live; the packed copy is staged in ``<app_data_dir>/_upload``.
        store: where artifacts go (Team Files or a local folder).
        catalog: told when the store changed.
        task_id: the app's task on the platform, recorded in ``experiment_info.json``.
        after_upload: called with the remote dir after a verified upload (the task output);
            what it returns is the platform's report link, when it built one.
        cleanup_after_upload: remove the app-data folder once the upload is verified.
    """

    def __init__(
        self,
        app_data_dir: Path,
        store: ArtifactStore,
        catalog: RunCatalog,
        *,
        task_id: int | None = None,
        after_upload: Callable[[str], str | None] | None = None,
        cleanup_after_upload: bool = False,
    ) -> None:
        self.app_data_dir = app_data_dir
        self.store = store
        self.catalog = catalog
        self.task_id = task_id
        self.after_upload = after_upload
        self.cleanup_after_upload = cleanup_after_upload
        # EVALUATING, EXPORTING or UPLOADING while it works
        self.stage: SessionState | None = None

    def finish(
        self, session: TrainingSession, prepared: Prepared, state: SessionState
    ) -> RunOutcome:
        """Evaluate and export a finished run (when asked), upload a finished or stopped one."""
        outcome = RunOutcome(run_id=prepared.run_id, state=state.value)
        try:
            if state == SessionState.FINISHED and prepared.params.evaluate:
                self.stage = SessionState.EVALUATING
                self._evaluate(prepared.work_dir, outcome, prepared.params.speed_test)
            if state == SessionState.FINISHED and prepared.params.export:
                self.stage = SessionState.EXPORTING
                self._export(prepared.work_dir, prepared.params.export_formats, outcome)
            if state in (SessionState.FINISHED, SessionState.STOPPED):
                self.stage = SessionState.UPLOADING
                self._upload(session, prepared, state.value, outcome)
        finally:
            self.stage = None
        return outcome

    def _evaluate(self, work_dir: Path, outcome: RunOutcome, speed_test: bool = False) -> None:
        """The Model Benchmark evaluation of a run (src.evaluation.evaluate), and its speed test
        when asked; a failure is shown in the outcome and never stops the upload."""
        from src.evaluation.evaluate import evaluate_run, speed_test_run

        try:
            outcome.evaluation = evaluate_run(work_dir).summary()
        except Exception as exc:
            outcome.evaluation_error = f"{type(exc).__name__}: {exc}"
            logger.exception("evaluation of %s failed; the run is uploaded all the same", work_dir)
            return
        if speed_test:
            try:
                speed_test_run(work_dir)
            except Exception as exc:
                outcome.warn(f"the speed test failed: {type(exc).__name__}: {exc}")
                logger.exception("the speed test of %s failed", work_dir)

    def _export(self, work_dir: Path, formats: tuple[str, ...], outcome: RunOutcome) -> None:
        """The best checkpoint exported (src.export.formats); a failure is shown in the outcome and
        never stops the upload."""
        from src.export.formats import export_run

        try:
            result = export_run(work_dir, formats, speed_test=True)
        except Exception as exc:
            outcome.export_error = f"{type(exc).__name__}: {exc}"
            logger.exception("export of %s failed; the run is uploaded all the same", work_dir)
            return
        outcome.exports = result.files
        outcome.export_skipped = result.skipped or None
        outcome.export_speed = result.speed or None

    def _upload(
        self, session: TrainingSession, prepared: Prepared, state: str, outcome: RunOutcome
    ) -> None:
        """Upload and verify; then set the output and (on the platform) free the app data: not
        for an audit's fold (``audit_of_run``), which the audit predicts with next."""
        staging = self.app_data_dir / UPLOAD_STAGING
        try:
            remote = _pack_and_upload(
                prepared, self.store, state=state, history=session.history, staging_root=staging,
                task_id=self.task_id, started_at=session.status().started_at,
            )  # fmt: skip
        except Exception as exc:  # upload, export (CheckpointError), disk: all shown, files kept
            expected = isinstance(exc, UploadError | FileNotFoundError | OSError | CheckpointError)
            outcome.upload_error = str(exc) if expected else f"{type(exc).__name__}: {exc}"
            outcome.local_dir = str(prepared.work_dir)
            logger.error(
                "upload of run %s failed: %s; its files stay in %s",
                prepared.run_id, exc, prepared.work_dir,
            )  # fmt: skip
            return
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # the packed copy, uploaded or not
        outcome.artifacts = self.store.describe(remote)
        fold = audit_of_run(self.app_data_dir, prepared.run_id)  # not the app's output; kept
        if self.after_upload is not None and not fold:
            try:
                outcome.platform_report = self.after_upload(remote)
            except Exception as exc:
                outcome.output_error = f"the artifacts are in {remote}, but: {exc}"
                logger.error("setting the output of run %s failed: %s", prepared.run_id, exc)
        self.catalog.forget()  # the store changed
        if (
            self.cleanup_after_upload
            and not fold
            and is_run_dir(self.app_data_dir, prepared.work_dir)
        ):
            self._clean_up(prepared, remote, outcome)

    def _clean_up(self, prepared: Prepared, remote: str, outcome: RunOutcome) -> None:
        """Remove the app-data copy, only when Team Files holds a resumable state of the run."""
        state = f"{remote.rstrip('/')}/{RESUME_DIR}/{STATE_FILE}"
        if not self.store.exists(state):
            warning = (
                f"the artifacts hold no resumable state ({state}): the run's files stay in "
                f"{prepared.work_dir}"
            )
            outcome.warn(warning)
            outcome.local_dir = str(prepared.work_dir)
            logger.warning("run %s: %s", prepared.run_id, warning)
            return
        shutil.rmtree(prepared.work_dir, ignore_errors=True)
        logger.info("run %s uploaded and verified: removed %s", prepared.run_id, prepared.work_dir)


def _pack_and_upload(
    prepared: Prepared,
    store: ArtifactStore,
    *,
    state: str,
    history: dict[str, Any],
    staging_root: str | Path,
    task_id: int | None = None,
    started_at: float | None = None,
) -> str:
    """Pack the run's artifacts and upload them; returns the remote folder.

    ``task_id``: the app's task on the platform (recorded in ``experiment_info.json``)."""
    val = history.get("val") or []
    key = primary_metric(prepared.params.task)
    best = max(val, key=lambda v: v.get(key, float("-inf")), default=None)
    remote = artifacts_dir(prepared.run_id, prepared.project.name)
    summary = RunSummary(
        run_id=prepared.run_id,
        model_name=prepared.model_name,
        task=prepared.params.task,
        project_name=prepared.project.name,
        classes=list(prepared.params.classes),
        epochs_done=max((v.get("epoch", 0) for v in history.get("train", [])), default=0),
        state=state,
        best_metric=headline(best or {}),
        history=history,
        remote_dir=remote,
        project_id=prepared.project.project_id,
        task_id=task_id,
        hyperparameters=jsonable(asdict(prepared.params)),
        split=split_items(prepared.project, prepared.split),
        class_colors={k: list(v) for k, v in class_colors(prepared.project.directory).items()},
        started_at=started_at,
    )
    local = Path(staging_root) / run_dir_name(prepared.run_id, prepared.project.name)
    pack_run(prepared.work_dir, prepared.config_text, local, summary)
    store.upload_dir(local, remote)
    return remote
