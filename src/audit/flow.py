"""An audit from its plan to its outputs: each fold trained (by whoever trains runs: the CLI
through the app's controller), predicted on its held-out images, then every suspect scored,
ranked and written.

Stoppable and resumable fold by fold: a fold whose predictions exist is done; one whose run has
ended is predicted; one whose run has a checkpoint is resumed; the others are trained. A fold
that does not finish (stopped, failed) ends the audit there; running it again continues.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from src.audit.learning_curve import (
    CURVE_FILE,
    CURVE_FOLD,
    SHARES,
    fit_curves,
    instances_per_class,
    last_class_ap,
)
from src.audit.outputs import (
    PROJECT_COPY,
    REPORT_FILE,
    SUSPECTS_FILE,
    check_out_dir,
    write_suspects,
    write_tagged_copy,
)
from src.audit.plan import AuditPlan, save_plan
from src.audit.predict import predict_fold
from src.audit.report import write_report
from src.audit.scoring import Thresholds
from src.audit.suspects import Suspect, fold_suspects, ranked
from src.config.compose_data import val_split_args
from src.config.text import load_config_file
from src.core.errors import RequestError
from src.core.layout import EPOCH_PREFIX, RUN_CONFIG, run_dir
from src.runs.atomic_files import write_json_atomic
from src.runs.checkpoints import CheckpointError, last_val_metrics, newest_resumable_checkpoint

logger = logging.getLogger(__name__)

NEW, STARTED, TRAINED, PREDICTED = "new", "started", "trained", "predicted"
FINISHED = "finished"  # how a fold's training ended, as the controller says it


class FoldTrainer(Protocol):
    """Trains fold ``fold`` of ``plan`` (its run ``plan.run_id(fold, share)`` on
    ``plan.split(fold, share)``), a new run or, with ``resume``, the run from its newest
    checkpoint; returns how it ended: ``finished``, ``stopped`` or ``failed``."""

    def __call__(self, plan: AuditPlan, fold: int, resume: bool, share: int = 100) -> str: ...


@dataclass
class AuditOutcome:
    """How far an audit got: every fold (then ``suspects`` and the outputs) or the fold where
    it stopped and how."""

    audit_id: str
    done: bool
    stopped_at: int | None = None
    ended: str | None = None  # the stopped fold's training: stopped or failed
    suspects: list[Suspect] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    curves: dict[str, Any] | None = None  # the learning curve (learning_curve.json), if asked
    curve_share: int | None = None  # the curve's run that did not finish (the rest is written)


def fold_state(plan: AuditPlan, fold: int, app_data_dir: str | Path) -> str:
    """What fold ``fold`` still needs (see the module's docstring); a run folder that holds no
    checkpoint to resume is a ``RequestError`` saying what to do."""
    if plan.predictions_file(app_data_dir, fold).is_file():
        return PREDICTED
    if fold in plan.finished:
        return TRAINED
    return _run_state(run_dir(app_data_dir, plan.run_id(fold)), f"fold {fold}'s run")


def _run_state(work_dir: Path, what: str) -> str:
    """A run's training: not begun, begun (resume it) or done."""
    if not (work_dir / RUN_CONFIG).is_file():
        return NEW
    try:
        checkpoint, meta, _ = newest_resumable_checkpoint(work_dir)
    except CheckpointError as exc:
        raise RequestError(
            f"{what} {work_dir.name} cannot be resumed ({exc}): remove its folder "
            f"{work_dir} to train it anew"
        ) from None
    planned = int(meta.get("max_epochs") or 0)
    whole = checkpoint.name.startswith(EPOCH_PREFIX)  # not a stop's mid-epoch checkpoint
    done = whole and planned > 0 and int(meta.get("epoch", 0)) >= planned
    return TRAINED if done else STARTED


def run_audit(
    plan: AuditPlan,
    app_data_dir: str | Path,
    train: FoldTrainer,
    tell: Callable[[str], None] = logger.info,
) -> AuditOutcome:
    """Train and predict every fold that needs it, then score and write the outputs."""
    started = time.monotonic()
    check_out_dir(plan.out_dir, plan.project_dir)
    save_plan(plan, app_data_dir)
    for fold in range(1, plan.k + 1):
        state = fold_state(plan, fold, app_data_dir)
        if state == PREDICTED:
            tell(f"fold {fold}/{plan.k}: predicted already ({plan.run_id(fold)})")
            continue
        if state in (NEW, STARTED):
            ended = train(plan, fold, resume=state == STARTED)
            if ended != FINISHED:
                return AuditOutcome(plan.audit_id, False, fold, ended)
            plan.finished.append(fold)
            save_plan(plan, app_data_dir)
        tell(f"fold {fold}/{plan.k}: predicting its {len(plan.folds[fold - 1])} held-out images")
        work_dir = run_dir(app_data_dir, plan.run_id(fold))
        predict_fold(work_dir, plan.predictions_file(app_data_dir, fold))
    curve_end = _train_curve(plan, app_data_dir, train, tell) if plan.curve else None
    # the suspects and the report are written whatever becomes of the curve (an extra)
    outcome = finish_audit(plan, app_data_dir, tell, with_curve=plan.curve and curve_end is None)
    outcome.seconds = time.monotonic() - started
    if curve_end is not None:  # the curve's run that did not finish: resume to complete it
        curve_end.suspects, curve_end.outputs = outcome.suspects, outcome.outputs
        curve_end.seconds = outcome.seconds
        return curve_end
    return outcome


def _train_curve(
    plan: AuditPlan, app_data_dir: str | Path, train: FoldTrainer, tell: Callable[[str], None]
) -> AuditOutcome | None:
    """The learning curve's subsets of fold 1 trained (those not yet); the outcome of the one
    that did not finish, if one did not."""
    for share in SHARES:
        if share in plan.curve_finished:
            continue
        work_dir = run_dir(app_data_dir, plan.run_id(CURVE_FOLD, share))
        state = _run_state(work_dir, f"the learning curve's {share} % run")
        if state != TRAINED:
            tell(f"learning curve: fold {CURVE_FOLD} trained on {share} % of its images")
            ended = train(plan, CURVE_FOLD, resume=state == STARTED, share=share)
            if ended != FINISHED:
                return AuditOutcome(plan.audit_id, False, CURVE_FOLD, ended, curve_share=share)
        plan.curve_finished.append(share)
        save_plan(plan, app_data_dir)
    return None


def finish_audit(
    plan: AuditPlan,
    app_data_dir: str | Path,
    tell: Callable[[str], None] = logger.info,
    with_curve: bool = False,
) -> AuditOutcome:
    """Score every fold's predictions and write ``suspects.json``, ``report.html`` and the
    tagged copy of the project into the plan's ``out_dir`` (with ``with_curve``, the learning
    curve too)."""
    base = Thresholds(**{k: v for k, v in plan.thresholds.items() if k != "auto_confident"})
    auto = bool(plan.thresholds.get("auto_confident", True))
    suspects: list[Suspect] = []
    folds = []
    for fold in range(1, plan.k + 1):
        path = plan.predictions_file(app_data_dir, fold)
        predictions = json.loads(path.read_text(encoding="utf-8"))
        found, thr = fold_suspects(plan.project_dir, fold, predictions, base, auto)
        suspects += found
        folds.append(_fold_summary(plan, fold, app_data_dir, predictions, thr))
    suspects = ranked(suspects)
    out = check_out_dir(plan.out_dir, plan.project_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = _summary(plan, folds)
    write_suspects(out / SUSPECTS_FILE, summary, suspects)
    tell(f"suspects: {out / SUSPECTS_FILE}")
    write_tagged_copy(plan.project_dir, suspects, out / PROJECT_COPY)
    tell(f"tagged copy of the project: {out / PROJECT_COPY}")
    outputs = {
        "suspects": str(out / SUSPECTS_FILE),
        "report": str(out / REPORT_FILE),
        "project": str(out / PROJECT_COPY),
    }
    curves = None
    if with_curve:
        curves = write_curve(plan, app_data_dir, out / CURVE_FILE)
        outputs["learning_curve"] = str(out / CURVE_FILE)
        tell(f"learning curve: {out / CURVE_FILE}")
    write_report(out / REPORT_FILE, plan.project_dir, suspects, summary, curves)
    tell(f"report: {out / REPORT_FILE}")
    return AuditOutcome(plan.audit_id, True, suspects=suspects, outputs=outputs, curves=curves)


def write_curve(plan: AuditPlan, app_data_dir: str | Path, path: Path) -> dict[str, Any]:
    """The learning curve from fold 1's runs (its subsets and itself), written to ``path``."""
    cfg = load_config_file(run_dir(app_data_dir, plan.run_id(CURVE_FOLD)) / RUN_CONFIG)
    data = val_split_args(cfg)
    held_out = plan.folds[CURVE_FOLD - 1]
    to_find = instances_per_class(plan.project_dir, held_out, data["classes"], data["ignore"])
    runs, points = [], []
    for share in (*SHARES, 100):
        items = plan.split(CURVE_FOLD, share).train_items or []
        counts = instances_per_class(plan.project_dir, items, data["classes"], data["ignore"])
        logged = last_class_ap(run_dir(app_data_dir, plan.run_id(CURVE_FOLD, share)))
        # a class with objects to find that the last validation did not score: nothing was
        # predicted (see last_class_ap), an AP of 0; a run that never validated: no point
        ap = {} if logged is None else {c: logged.get(c, 0.0) for c, n in to_find.items() if n}
        runs.append({"share": share, "run": plan.run_id(CURVE_FOLD, share),
                     "images": len(items), "instances": counts, "ap": ap})  # fmt: skip
        points.append((share, counts, ap))
    body = {
        "fold": CURVE_FOLD,
        "validation_images": len(plan.folds[CURVE_FOLD - 1]),
        "model": "AP = a + b ln(instances), per class (src/audit/learning_curve.py)",
        "runs": runs,
        "classes": [c.as_dict() for c in fit_curves(points)],
    }
    write_json_atomic(body, path)
    return body


def _fold_summary(
    plan: AuditPlan, fold: int, app_data_dir: str | Path, predictions: dict, thr: Thresholds
) -> dict[str, Any]:
    work_dir = run_dir(app_data_dir, plan.run_id(fold))
    validation = last_val_metrics(work_dir) if work_dir.is_dir() else {}
    return {
        "fold": fold,
        "run": plan.run_id(fold),
        "checkpoint": predictions.get("checkpoint"),
        "images": len(plan.folds[fold - 1]),
        "confident": thr.confident,
        "thresholds": asdict(thr),
        "validation": validation,
    }


def _summary(plan: AuditPlan, folds: list[dict[str, Any]]) -> dict[str, Any]:
    model = next(
        (plan.settings[i + 1] for i, a in enumerate(plan.settings[:-1]) if a == "--model"),
        plan.request.get("model"),
    )
    return {
        "audit_id": plan.audit_id,
        "project": str(plan.project_dir),
        "model": model,
        "seed": plan.seed,
        "images": sum(len(f) for f in plan.folds),
        "folds": folds,
    }
