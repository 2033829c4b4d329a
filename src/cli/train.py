"""``train``: compose a run (or prepare a resume), optionally show it, then train it through the
app's own controller: the same run flow, upload and error policy as the app.

This module is the command's flow; its options are in ``train_options``, what it prints in
``train_output``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from src.cli.arguments import MODEL_SIZE
from src.cli.common import DEFAULT_CACHE, CliError, app_data, fail, fail_with, names, store
from src.cli.train_options import add_options, contradiction, given_settings, train_params
from src.cli.train_output import ProgressBar, print_summary, report
from src.cli.train_split import chosen_split, chosen_split_in
from src.core.errors import AppError, RequestError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``train`` and its options; the parser keeps itself (``train_parser``): its defaults tell
    what was not given (a resume's contradictions, ``--from-run``'s overrides)."""
    tr = sub.add_parser("train", help="train a model on a local project")
    add_options(tr)
    tr.set_defaults(func=cmd_train, train_parser=tr)


def _select_device(device: str) -> str | None:
    """Check ``--device`` against what exists here; for the CPU hide the GPUs (before CUDA
    initialises: mmengine would otherwise pick one). A GPU is chosen by the session
    (``src.engine.devices.use_device``). Returns the problem, if any."""
    from src.engine.devices import device_problem

    problem = device_problem(device)
    if problem is None and device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    return problem


def _use_the_models_input_size(controller, args: argparse.Namespace) -> str | None:
    """``--input-size model`` → the zoo model's own size in ``args`` (or the problem)."""
    if not args.model:
        return "--input-size model needs --model: the zoo model whose input size it is"
    try:
        size = controller.model_input_size(args.model, args.task)
    except RequestError as exc:
        return "; ".join(exc.problems)
    if size is None:
        return f"{args.model} has no input size of its own here: give --input-size PX|LONGxSHORT"
    args.input_size = size
    return None


def open_controller(args: argparse.Namespace) -> tuple[Any, ProgressBar] | str:
    """The app's controller as ``train`` drives it (the artifact store, the progress bar, the
    console), after the options' and the devices' checks; or the problem (a usage error).
    ``audit`` trains its folds through it too."""
    problem = contradiction(args) or _select_device(args.device)
    for gpu in args.gpus or ():
        problem = problem or _select_device(f"cuda:{gpu}")
    if problem:
        return problem
    from src.training.controller import TrainingController

    artifacts, resolver = store(args)
    bar = ProgressBar()
    controller = TrainingController(
        app_data(args), artifacts, cache_dir=None if args.no_cache else DEFAULT_CACHE,
        sinks=[bar], project_resolver=resolver, max_nonfinite=args.max_nonfinite,
        verbose=args.verbose, on_fetch=lambda remote: print(
            f"downloading run {remote.run_id} from {artifacts.describe(remote.folder)}"
        ),
    )  # fmt: skip
    if args.input_size == MODEL_SIZE and (problem := _use_the_models_input_size(controller, args)):
        return problem
    return controller, bar


def cmd_train(args: argparse.Namespace) -> int:
    """Compose (or prepare a resume), optionally show it (dry run, config dump), then train
    through the app's own controller: the same run flow, upload and error policy as the app."""
    opened = open_controller(args)
    if isinstance(opened, str):
        return fail(opened)
    controller, bar = opened
    try:
        if args.resume is not None:
            prepared, resume_from = _prepare_resume(controller, args)
        else:
            prepared, resume_from = _compose(controller, args), None
            for note in prepared.notes:  # (a resume's are printed as it is prepared)
                print(f"note: {note}")
        if args.dump_config:
            Path(args.dump_config).parent.mkdir(parents=True, exist_ok=True)
            Path(args.dump_config).write_text(prepared.config_text, encoding="utf-8")
        if args.dry_run:
            print_summary(controller.dry_run(prepared))
            if args.dump_config:
                print(f"config       written to {args.dump_config}")
            print("dry run: everything builds; nothing was trained")
            return 0
        started = time.time()
        train_prepared(controller, prepared, resume_from)
    except AppError as exc:  # a request's problems (CliError too): its exit code
        return fail_with(exc)
    bar.close()
    return report(controller, prepared, args, time.time() - started)


def _prepare_resume(controller, args: argparse.Namespace):
    """A resume's prepared run and the checkpoint it continues from; only what a resume may
    change (epochs, devices) is passed on."""
    given = args.device != args.train_parser.get_default("device")
    prepared, run = controller.prepare_resume(
        args.resume or None, args.epochs, args.gpus, args.nproc, args.device if given else None
    )
    print(
        f"resuming run {run.run_id} ({run.model_name}) from {run.checkpoint_name}: "
        f"epoch {run.epoch}, iteration {run.iteration}"
    )
    for note in prepared.notes:
        print(f"note: {note}")
    return prepared, run.checkpoint


def _compose(controller, args: argparse.Namespace):
    """A new run's request from the command line, composed (RequestError lists its problems)."""
    if args.from_run:
        return controller.compose(_request_from_run(controller, args))
    return controller.compose(new_request(controller, args))


def new_request(controller, args: argparse.Namespace):
    """A new run's ``TrainRequest`` from the command line (not ``--from-run``'s); ``audit``
    makes its folds' requests with it."""
    from src.setup.prepare import TrainRequest

    if not args.project:
        raise CliError("--project is required (or --resume to continue a run)")
    if args.augmentation_file and not Path(args.augmentation_file).is_file():
        raise CliError(f"augmentation file {args.augmentation_file} does not exist")
    config_text = None
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise CliError(f"config file {path} does not exist")
        config_text = path.read_text(encoding="utf-8")
    classes = names(args.classes, "--classes") or None
    params = train_params(args)
    return TrainRequest(
        project_dir=args.project,
        app_data_dir=str(controller.app_data_dir),
        model=args.model,
        config_text=config_text,
        classes=classes,
        params=params,
        split=chosen_split_in(args, args.project, params.seed),  # None: the default split
        keep_empty_images=not args.drop_empty,
        run_id=args.run_id,
    )


def _request_from_run(controller, args: argparse.Namespace):
    """``--from-run``: the run's settings (``app_state.json``) with the options given here over
    them, on ``--project`` or the project the run trained on."""
    from src.setup.app_state import load_app_state, read_state_folder, request_from_state

    _, resolver = store(args)
    if Path(args.from_run).is_dir():
        state, best = read_state_folder(args.from_run)
    else:
        state, best = controller.run_state(args.from_run)
    origin = state.get("project") if isinstance(state.get("project"), dict) else {}
    project_dir = args.project or origin.get("dir")
    if not project_dir and getattr(args, "team_id", None) is None:
        raise CliError(
            f"run {args.from_run} trained on a platform project: give --project (a local copy) "
            "or --team-id (to download it)"
        )
    remote_id = origin.get("id") if getattr(args, "team_id", None) and not args.project else None
    project = resolver(remote_id, project_dir or "")
    loaded = load_app_state(state, project, args.from_run_mode, best)
    request = request_from_state(
        loaded, given_settings(args), str(controller.app_data_dir), project, controller.compose
    )
    if split := chosen_split(args, project, request.params.seed):  # over the run's own split
        request = replace(request, split=split)
    print(f"settings from {loaded.source}" + (" (continue: from its best checkpoint)"
          if loaded.mode == "continue" else ""))  # fmt: skip
    for note in loaded.notes:
        print(f"note: {note}")
    return request


def train_prepared(controller, prepared, resume_from: str | None) -> None:
    """Start the run and wait for it and its upload, printing what the session chooses; Ctrl-C
    once stops it gracefully (``audit``'s folds train so too)."""
    print(f"training {prepared.model_name} on {prepared.project.name} (run {prepared.run_id})")
    print(f"checkpoints and logs: {prepared.work_dir}")
    for note in controller.setting_notes(prepared):
        print(note)
    with _CtrlC(controller.stop):
        shown = len(prepared.notes)  # printed above; the data check's and the session's follow
        # the data check (an empty split, a missing image) fails here, before training
        controller.start_prepared(prepared, resume_from)
        while controller.busy:  # training, then the upload
            notes = controller.status().notes
            for note in notes[shown:]:  # what the session chose on the device
                print(note)
            shown = len(notes)
            time.sleep(0.2)


class _CtrlC:
    """First Ctrl-C: stop gracefully at the next batch. Second: abort."""

    def __init__(self, stop) -> None:
        self.stop = stop  # asks the run to stop at its next batch; False when nothing runs
        self.count = 0
        self.previous = None

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum, frame) -> None:
        self.count += 1
        if self.count == 1 and self.stop():
            print(
                "\nstopping after the current batch (a checkpoint is saved); Ctrl-C again aborts",
                file=sys.stderr,
            )
            return
        print("\naborted", file=sys.stderr)
        os._exit(130)
