"""An audit's plan, kept so that it can be stopped and resumed: the project's images in K folds
(seeded, by image, nested datasets included), the settings its folds train with, where its
outputs go, and which folds have trained.

The plan lives in app data (``_audits/<audit id>/audit.json``) beside the folds' runs
(``<audit id>_fold<k>``), with each fold's predictions once made (``fold<k>.json``). What a fold
still needs is read from there: its predictions (nothing), its run ended (predict), a run with a
checkpoint (resume it), or nothing yet (train it).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from src.audit.learning_curve import CURVE_FOLD, SHARES, nested_subsets
from src.audit.scoring import Thresholds
from src.core.errors import RequestError
from src.core.layout import (
    AUDIT_PLAN,
    AUDITS,
    RunIdError,
    check_run_id,
    fold_run_id,
    free_name,
)
from src.data.project import Split
from src.data.reader import list_items
from src.runs.atomic_files import write_json_atomic

MIN_FOLDS = 2


def make_folds(
    project_dir: str | Path, k: int, seed: int, flag: str = "--folds"
) -> list[list[str]]:
    """The project's items (``dataset/name``, every dataset, nested ones too) in ``k`` folds of
    nearly equal size: shuffled with ``seed``, dealt in turn; each fold sorted. The same project
    and seed give the same folds. ``flag``: how the asker named K (the CLI's option, the API's
    field)."""
    names = [name for name, _ in list_items(project_dir)]
    if k < MIN_FOLDS:
        raise RequestError(f"{flag} {k}: an audit needs at least {MIN_FOLDS} folds")
    if len(names) < k:
        raise RequestError(
            f"{flag} {k}: the project has {len(names)} images, fewer than the folds (each fold "
            "validates on its own images)"
        )
    random.Random(seed).shuffle(names)
    return [sorted(names[i::k]) for i in range(k)]


def audit_thresholds(confident: float | None, low: float) -> dict[str, Any]:
    """A plan's thresholds: ``confident`` given (None: chosen per fold, from 0.5 as a start)
    and ``low``; a ``ValueError`` naming the one out of range."""
    chosen = 0.5 if confident is None else confident
    Thresholds(confident=chosen, low=low)  # its range checks
    return {"confident": chosen, "low": low, "auto_confident": confident is None}


def new_audit_id(app_data_dir: str | Path) -> str:
    """``audit_<date>_<time>``, with a suffix when an audit of that second exists."""
    return free_name(Path(app_data_dir) / AUDITS, time.strftime("audit_%Y%m%d_%H%M%S"))


def audit_dir(app_data_dir: str | Path, audit_id: str) -> Path:
    """The audit's own folder in app data; the id is checked as a run id is (a safe name)."""
    try:
        check_run_id(audit_id)
        check_run_id(fold_run_id(audit_id, 99, 25))  # its longest run id (the curve's)
    except RunIdError:
        raise RequestError(
            f"audit id {audit_id!r} is not allowed: use 1 to 85 letters, digits, '.', '_' or "
            "'-', starting with a letter or digit"
        ) from None
    return Path(app_data_dir).resolve() / AUDITS / audit_id


@dataclass
class AuditPlan:
    """What an audit is: its folds, the settings its folds train with (the command line's
    options, replayed for a fold not yet started), its thresholds and its outputs' folder."""

    audit_id: str
    project_dir: str
    out_dir: str
    folds: list[list[str]]
    seed: int
    settings: list[str] = field(default_factory=list)
    thresholds: dict[str, Any] = field(default_factory=dict)
    finished: list[int] = field(default_factory=list)  # folds whose training has ended
    created: float = field(default_factory=time.time)
    curve: bool = False  # --learning-curve: fold 1's images in nested subsets trained too
    curve_finished: list[int] = field(default_factory=list)  # its shares whose training ended
    # an audit asked through the HTTP API: its body as POST /api/train reads it (``settings``,
    # the CLI's train options, is empty then)
    request: dict[str, Any] = field(default_factory=dict)
    to_platform: bool = False  # its tagged copy and report published on the platform (the app's)

    @property
    def k(self) -> int:
        return len(self.folds)

    def run_id(self, fold: int, share: int = 100) -> str:
        return fold_run_id(self.audit_id, fold, share)

    def split(self, fold: int, share: int = 100) -> Split:
        """Fold ``fold`` (1-based) validates, the others train (with a ``share`` below 100, the
        learning curve's nested subset of them)."""
        train = sorted(n for i, items in enumerate(self.folds, 1) if i != fold for n in items)
        described = f"audit {self.audit_id}: fold {fold} of {self.k} held out"
        if share != 100:
            train = nested_subsets(train, self.seed, (share,))[share]
            described += f", {share} % of the other images ({len(train)})"
        return Split(train_items=train, val_items=list(self.folds[fold - 1]), description=described)

    def fold_request(self, request: Any, fold: int, share: int = 100) -> Any:
        """``request`` (a ``TrainRequest``) as fold ``fold``'s run: its split, its run id, every
        image kept (an image without labels is audited too)."""
        return replace(
            request, split=self.split(fold, share), run_id=self.run_id(fold, share),
            keep_empty_images=True,
        )  # fmt: skip

    def predictions_file(self, app_data_dir: str | Path, fold: int) -> Path:
        return audit_dir(app_data_dir, self.audit_id) / f"fold{fold}.json"


def save_plan(plan: AuditPlan, app_data_dir: str | Path) -> Path:
    """Write the plan (atomically: a stop while writing leaves the previous one)."""
    path = audit_dir(app_data_dir, plan.audit_id) / AUDIT_PLAN
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(asdict(plan), path)
    return path


def plan_run_ids(audit_id: str, k: int, curve: bool) -> list[str]:
    """Every run an audit makes: its folds' and, with a curve, fold 1's smaller ones."""
    runs = [fold_run_id(audit_id, fold) for fold in range(1, k + 1)]
    return runs + [fold_run_id(audit_id, CURVE_FOLD, s) for s in SHARES] * curve


def load_plan(app_data_dir: str | Path, audit_id: str) -> AuditPlan:
    """The plan of audit ``audit_id`` in app data; a ``RequestError`` naming the audits there
    when it is not one of them."""
    path = audit_dir(app_data_dir, audit_id) / AUDIT_PLAN
    if not path.is_file():
        there = sorted(p.parent.name for p in (Path(app_data_dir) / AUDITS).glob(f"*/{AUDIT_PLAN}"))
        raise RequestError(
            f"no audit {audit_id!r} in {app_data_dir}"
            + (f"; there are: {', '.join(there)}" if there else "")
        )
    try:
        return AuditPlan(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise RequestError(f"the plan of audit {audit_id} ({path}) cannot be read: {exc}") from None
