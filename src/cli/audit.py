"""``audit``: find labels that look wrong. The project's images in K folds, a model trained on
every fold but one through ``train``'s own path (the app's controller, its progress bar, its
Ctrl-C), each fold predicted by the model that did not train on it, every label and confident
prediction scored (``src.audit``): ``suspects.json``, ``report.html`` and a tagged copy of the
project in ``--out``.

The folds train with ``train``'s options: whatever ``audit`` does not know itself is handed to
``train``'s parser, so ``--epochs``, ``--input-size``, ``--from-scratch``... mean what they mean
there. A stopped audit continues with ``--resume AUDIT_ID``: its own settings, its folds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from src.cli.common import CliError, app_data, fail
from src.core.errors import FAILED

# train's options that have no place in a fold's run: the audit chooses the split, the run ids
# and the images (every one), and trains for real
_NOT_IN_AN_AUDIT = (
    "resume", "from_run", "run_id", "dry_run", "dump_config", "val_fraction", "train_datasets",
    "val_datasets", "train_tag", "val_tag", "drop_empty", "team_id",
)  # fmt: skip
# what a resumed audit may be told: where things are and on what it runs, not what it trains
_RESUME_MAY_CHANGE = ("app_data", "team_files", "verbose", "no_cache", "max_nonfinite", "device")
TOP_SHOWN = 10  # suspects printed at the end
DEFAULT_FOLDS, DEFAULT_LOW = 5, 0.1


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The command's own options; the others are ``train``'s (see the module's docstring)."""
    au = sub.add_parser(
        "audit", allow_abbrev=False,
        help="find suspicious labels: K models on K folds, each image judged by a model that "
        "did not train on it (docs/after-training.md)",
        epilog="Every option of train (python -m src.cli train --help) sets how the folds train, "
        "e.g. --from-scratch --epochs 24 --input-size 224; the evaluation after each fold is off "
        "unless --evaluate.",
    )  # fmt: skip
    au.add_argument("--project", help="local Supervisely project directory (only read)")
    au.add_argument("--model", help="zoo model name (python -m src.cli zoo)")
    au.add_argument("--folds", type=int, default=DEFAULT_FOLDS, metavar="K",
                    help=f"folds, one training each (default {DEFAULT_FOLDS})")  # fmt: skip
    au.add_argument("--out", help="where suspects.json, report.html and project/ go")
    au.add_argument("--audit-id", help="name of the audit (default: audit_<date>_<time>)")
    au.add_argument("--resume", metavar="AUDIT_ID",
                    help="continue a stopped audit: finished folds are skipped, a stopped one "
                    "resumes from its checkpoint")  # fmt: skip
    au.add_argument(
        "--confident", type=float, metavar="X",
        help="the score from which a prediction counts as the model's word (missing objects, "
        "wrong classes, loose boxes); default: per fold, where its predictions best agree with "
        "its labels (F1-optimal)",
    )  # fmt: skip
    au.add_argument("--low", type=float, default=DEFAULT_LOW, metavar="X",
                    help="a label that no prediction of this score overlaps is spurious "
                    f"(default {DEFAULT_LOW})")  # fmt: skip
    au.add_argument("--learning-curve", action="store_true",
                    help="also train fold 1 on nested 25 and 50 %% subsets of its images and "
                    "say per class the AP expected from twice its labels (two more trainings, "
                    "smaller than a fold's)")  # fmt: skip
    au.set_defaults(func=cmd_audit, train_options=[])


def _train_args(tokens: list[str]) -> argparse.Namespace:
    """``train``'s parse of ``tokens`` (its usage errors are its own: exit 2)."""
    from src.cli import train

    parser = argparse.ArgumentParser(prog="python -m src.cli audit")
    sub = parser.add_subparsers(dest="command", required=True)
    train.add_parser(sub)
    sub.choices["train"].prog = "python -m src.cli audit (train's options)"
    sub.choices["train"].usage = "python -m src.cli audit --project DIR --model NAME --out DIR ..."
    args, unknown = parser.parse_known_args(["train", *tokens])
    if unknown:
        raise CliError(f"unrecognized arguments: {' '.join(unknown)} (neither audit's options "
                       "nor train's)")  # fmt: skip
    args.argv = ["train", *tokens]
    return args


def _given(args: argparse.Namespace) -> list[str]:
    """The ``train`` options set to something other than their default."""
    parser = args.train_parser
    return [
        name for name, value in vars(args).items()
        if name not in ("argv", "command") and value != parser.get_default(name)
    ]  # fmt: skip


def _flags(names: list[str]) -> str:
    return ", ".join("--" + n.replace("_", "-") for n in names)


def _new_plan(args: argparse.Namespace):
    """A new audit's plan and ``train``'s options for its folds."""
    from src.audit.outputs import check_out_dir
    from src.audit.plan import (
        AuditPlan,
        audit_dir,
        audit_thresholds,
        make_folds,
        new_audit_id,
        plan_run_ids,
    )
    from src.core.layout import run_dir

    if not (args.project and args.model and args.out):
        raise CliError("--project, --model and --out are required (or --resume AUDIT_ID)")
    try:
        thresholds = audit_thresholds(args.confident, args.low)
    except ValueError as exc:
        raise CliError(
            str(exc).replace("confident", "--confident").replace("low", "--low")
        ) from None
    check_out_dir(args.out, args.project)
    settings = ["--no-evaluate", "--project", args.project, "--model", args.model]
    targs = _train_args(settings + args.train_options)
    if wrong := [n for n in _given(targs) if n in _NOT_IN_AN_AUDIT]:
        raise CliError(f"{_flags(wrong)}: not in an audit (it chooses its folds and run ids)")
    root = app_data(targs)
    audit_id = args.audit_id or new_audit_id(root)
    if audit_dir(root, audit_id).exists():
        raise CliError(f"audit {audit_id} exists: continue it with --resume {audit_id}")
    folds = make_folds(args.project, args.folds, targs.seed)
    taken = plan_run_ids(audit_id, len(folds), args.learning_curve)
    if taken := [r for r in taken if run_dir(root, r).exists()]:
        raise CliError(f"runs {', '.join(taken)} exist in {root}: give another --audit-id")
    plan = AuditPlan(
        audit_id=audit_id,
        project_dir=str(Path(args.project).resolve()),
        out_dir=str(Path(args.out).resolve()),
        folds=folds,
        seed=targs.seed,
        settings=settings + args.train_options,
        thresholds=thresholds,
        curve=args.learning_curve,
    )
    return plan, targs


def _resumed_plan(args: argparse.Namespace):
    """A stopped audit's plan, and ``train``'s options for its folds: its own, with only where
    and on what it runs changed."""
    from src.audit.plan import load_plan

    own = ("project", "model", "out", "audit_id", "confident", "learning_curve")
    given = [n for n in own if getattr(args, n)]
    if given or args.folds != DEFAULT_FOLDS or args.low != DEFAULT_LOW:
        raise CliError(
            f"--resume keeps the audit's own settings: drop {_flags(given) or '--folds/--low'}"
        )
    told = _train_args(args.train_options)
    if changed := [n for n in _given(told) if n not in _RESUME_MAY_CHANGE]:
        raise CliError(
            f"--resume and {_flags(changed)} contradict: a resumed audit keeps its settings; "
            f"only {_flags(list(_RESUME_MAY_CHANGE))} can change"
        )
    plan = load_plan(app_data(told), args.resume)
    if not plan.settings:
        raise CliError(f"audit {plan.audit_id} was started through the HTTP API: continue it "
                       f'there (POST /api/audit {{"resume": "{plan.audit_id}"}})')  # fmt: skip
    return plan, _train_args(plan.settings + args.train_options)


def cmd_audit(args: argparse.Namespace) -> int:
    """Plan (or load) the audit, train and predict its folds through the controller, write its
    outputs; a stop ends it at the current fold with the command that continues it."""
    from src.audit.flow import run_audit
    from src.cli.train import open_controller

    plan, targs = _resumed_plan(args) if args.resume else _new_plan(args)
    opened = open_controller(targs)
    if isinstance(opened, str):
        return fail(opened)
    controller, bar = opened
    print(f"audit {plan.audit_id}: {sum(map(len, plan.folds))} images in {plan.k} folds")
    again = f"python -m src.cli audit --resume {plan.audit_id}" + (
        f" --app-data {targs.app_data}" if targs.app_data else ""
    )
    try:
        outcome = run_audit(plan, app_data(targs), _FoldTrainer(controller, bar, targs), print)
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: {again}")
        return 130
    if not outcome.done:
        where = f"fold {outcome.stopped_at}"
        if outcome.curve_share is not None:  # its suspects and report are written already
            _print_outcome(outcome)
            where = f"the learning curve's {outcome.curve_share} % run"
        if outcome.ended == "stopped":
            print(f"audit {plan.audit_id} stopped in {where}; continue with: {again}")
            return 0
        return fail(f"{where} {outcome.ended}: the audit cannot go on", FAILED)
    _print_outcome(outcome)
    return 0


def _print_outcome(outcome) -> None:
    from src.audit.suspects import counts

    found = counts(outcome.suspects)
    print("suspects: " + ", ".join(f"{kind} {n}" for kind, n in found.items()))
    for n, s in enumerate(outcome.suspects[:TOP_SHOWN], 1):
        classes = f"{s.labelled_class or '-'} -> {s.predicted_class or '-'}"
        print(f"{n:>3}. {s.kind:<11} {s.score:.3f}  {s.image}  {classes}  "
              f"[{', '.join(f'{v:.0f}' for v in s.box)}]")  # fmt: skip
    if outcome.curves:
        _print_curve(outcome.curves)
    print(f"audit {outcome.audit_id} done in {outcome.seconds:.0f} s: {outcome.outputs['report']}")


def _print_curve(curve: dict) -> None:
    """Per class: its objects and AP in the full run, the AP expected from twice the objects."""
    print("learning curve (fold 1; AP now -> expected at 2x objects, +- the fit's error):")
    for c in curve["classes"]:
        error = "" if c["stderr"] is None else f" +- {c['stderr']:.3f}"
        check = "" if c["monotonic"] else "  (its AP fell as its objects grew: check)"
        print(f"  {c['name']:<20} {c['instances'][-1]:>5} objects  AP {c['ap'][-1]:.3f} -> "
              f"{c['expected_2x']:.3f}{error}{check}")  # fmt: skip


class _FoldTrainer:
    """A fold's run through ``train``'s own path: a new run on the fold's split, or the
    stopped run resumed; what the run ended as."""

    def __init__(self, controller, bar, targs: argparse.Namespace) -> None:
        self.controller, self.bar, self.targs = controller, bar, targs

    def __call__(self, plan, fold: int, resume: bool, share: int = 100) -> str:
        from src.cli.train import new_request, train_prepared
        from src.cli.train_output import report

        run_id, split = plan.run_id(fold, share), plan.split(fold, share)
        part = "" if share == 100 else f" ({share} % of the fold's)"
        print(f"fold {fold}/{plan.k}: {len(split.train_items)} images train{part}, "
              f"{len(split.val_items)} held out")  # fmt: skip
        resume_from = None
        if resume:
            prepared, run = self.controller.prepare_resume(run_id)
            resume_from = run.checkpoint
            print(f"resuming run {run_id} from {run.checkpoint_name}: epoch {run.epoch}")
        else:
            request = plan.fold_request(new_request(self.controller, self.targs), fold, share)
            prepared = self.controller.compose(request)
        for note in prepared.notes:
            print(f"note: {note}")
        started = time.time()
        train_prepared(self.controller, prepared, resume_from)
        self.bar.close()
        if report(self.controller, prepared, self.targs, time.time() - started):
            return "failed"
        return str(self.controller.status().run_state)
