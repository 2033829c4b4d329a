"""Headless entry point: ``python -m src.cli {demo-project,zoo,train,runs,probe}``.

Like ``src/main.py`` for the app, this module is an entry point: it reads the environment
(``SLY_APP_DATA_DIR``) and turns arguments into ``TrainingController`` calls. Exit code 0 on
success; otherwise non-zero with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

from src.config.params import RESUME_CHANGES
from src.config.primary_metric import headline
from src.core.errors import FAILED, PARTIAL_EXPORT, USAGE, AppError, RequestError
from src.core.tasks import DETECTION, TASKS

DEFAULT_APP_DATA = "artifacts/app_data"
DEFAULT_TEAM_FILES = "artifacts/team_files"
DEFAULT_CACHE = os.path.join(
    os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "train-mmdet3", "datasets"
)


def _fail(message: str, code: int = USAGE) -> int:
    """``message`` on stderr; the exit code (src.core.errors: 2 a usage error, 1 a failure)."""
    print(f"error: {message}", file=sys.stderr)
    return code


def _fail_with(exc: AppError) -> int:
    """An app error: a line per problem, and its own exit code (src.core.errors)."""
    for problem in exc.problems:
        print(f"error: {problem}", file=sys.stderr)
    return exc.exit_code


# --------------------------------------------------------------------------- demo-project


def cmd_demo_project(args: argparse.Namespace) -> int:
    from src.data.demo import LARGE_OPTIONS, DemoOptions, make_demo_project, make_real_world_project

    try:
        if args.real_world:
            path = make_real_world_project(args.dir, seed=args.seed)
        elif args.large:
            options = DemoOptions(images=args.images, seed=args.seed, **LARGE_OPTIONS)
            path = make_demo_project(args.dir, options)
        else:
            options = DemoOptions(images=args.images, seed=args.seed, mixed_sizes=not args.square)
            path = make_demo_project(args.dir, options)
    except FileExistsError as exc:
        return _fail(str(exc))
    print(f"demo project ready in {path}")
    return 0


# --------------------------------------------------------------------------- zoo


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def cmd_zoo(args: argparse.Namespace) -> int:
    from src.config import zoo

    entries = zoo.list_models(args.task, args.architecture)
    if not args.all:
        entries = [e for e in entries if e.is_default] if args.architecture is None else entries
    columns = [
        "architecture",
        "model",
        "box AP",
        "mask AP",
        "memory (GB)",
        "inference (ms)",
        "paper",
    ]
    if args.task == DETECTION:
        columns.remove("mask AP")
    rows = [[_fmt(e.as_row()[c]) for c in columns] for e in entries]
    widths = [
        max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)
    ]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    scope = (
        "models"
        if args.all or args.architecture
        else "architectures (default model each; --all for every model)"
    )
    print(f"\n{len(rows)} {scope}")
    return 0


# --------------------------------------------------------------------------- train


class ProgressBar:
    """A tqdm bar over all iterations, with the loss and ETA; COCO metrics at each validation."""

    def __init__(self) -> None:
        self.bar = None
        # the console as it is now: the sink is called from the training thread, whose own
        # prints go to the run's log file while it trains (src.engine.chatter)
        self.out = sys.stdout

    def on_train_iter(self, progress) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=progress.max_iterations, unit="it", dynamic_ncols=True)
            self.bar.update(progress.iteration - 1)
        loss = progress.losses.get("loss")
        loss_text = "-" if loss is None else "nan" if not math.isfinite(loss) else f"{loss:.4f}"
        self.bar.set_description(f"epoch {progress.epoch}/{progress.max_epochs}", refresh=False)
        gpu = progress.gpu
        memory = f"  mem {gpu['peak_gib']:.1f}G" if gpu else ""
        busy = f" {gpu['util']:.0f}%" if "util" in gpu else ""
        self.bar.set_postfix_str(
            f"loss {loss_text}  lr {progress.lr or 0:.2e}{memory}{busy}", refresh=False
        )
        self.bar.update(progress.iteration - self.bar.n)

    def on_val(self, result) -> None:
        text = "  ".join(f"{k} {v:.3f}" for k, v in headline(result.metrics).items())
        text = text or "no predictions yet (every metric 0)"
        line = f"validation after epoch {result.epoch}: {text}"
        if self.bar is not None:  # tqdm.write would not clear the bar: self.out is not
            self.bar.clear()  # sys.stdout while the training thread's prints are routed
            print(line, file=self.out, flush=True)
            self.bar.refresh()
        else:
            print(line, file=self.out, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _train_params(args: argparse.Namespace):
    """The command line's ``TrainParams``: the generated options by their field names, the
    hand-written ones (``src.config.doors``: generated=False) converted here."""
    from src.config.doors import generated_cli_options
    from src.config.params import TrainParams

    weights = "scratch" if args.from_scratch else "custom" if args.weights else "pretrained"
    values = {option.dest: getattr(args, option.dest) for option in generated_cli_options()}
    if args.augmentation_file:
        values["augmentation"] = "custom"
    return TrainParams(
        **values,
        epochs=TrainParams.epochs if args.epochs is None else args.epochs,  # 0 is refused
        train_batch_size=args.batch_size,
        num_workers=args.workers,
        input_size=args.input_size,  # (longer, shorter) edge
        augmentation_pipeline=(
            Path(args.augmentation_file).read_text(encoding="utf-8")
            if args.augmentation_file
            else ""
        ),
        weights=weights,
        weights_path=args.weights,
        gpus=args.gpus or (),
        nproc=1 if args.nproc is None else args.nproc,
        export=args.export,
        ignore=tuple(_names(args.ignore, "--ignore") or ()),
    )


def _names(text: str | None, option: str) -> list[str]:
    """Class or tag names: comma-separated (each stripped), or a JSON list taken as written, for
    names with a comma or surrounding spaces (``'["car, parked", " person"]'``)."""
    if not text:
        return []
    if not text.lstrip().startswith("["):
        return [name.strip() for name in text.split(",") if name.strip()]
    try:
        names = json.loads(text)
    except ValueError:
        names = None
    if not (isinstance(names, list) and all(isinstance(n, str) and n for n in names)):
        raise _CliError(
            f"{option} {text}: give comma-separated names, or a JSON list of names for names "
            """with a comma or spaces around them, e.g. '["car, parked", "person"]'"""
        )
    return names


def _select_device(device: str) -> str | None:
    """Check ``--device`` against what exists here; for the CPU hide the GPUs (before CUDA
    initialises: mmengine would otherwise pick one). A GPU is chosen by the session
    (``src.engine.devices.use_device``). Returns the problem, if any."""
    from src.engine.devices import device_problem

    problem = device_problem(device)
    if problem is None and device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    return problem


def _print_slicing(tiles: dict) -> None:
    """The dry run's line on a sliced split (src.data.tiles.TileStats)."""
    whole = f" + {tiles['full_images']} whole images" if tiles["full_images"] else ""
    dropped = f", {tiles['empty_dropped']} empty tiles left out" if tiles["empty_dropped"] else ""
    print(f"{'':<12} sliced: {tiles['images']} images -> {tiles['tiles']} tiles of "
          f"{tiles['size']} px (overlap {tiles['overlap']:g}){whole}{dropped}")  # fmt: skip
    if tiles.get("files"):
        from src.data.tiles import human_bytes

        print(f"{'':<12} {tiles['files']} tile files to cut into the cache, at most "
              f"{human_bytes(tiles['bytes'])} (the files already there are reused)")  # fmt: skip
    for what, n in (tiles.get("cut_objects") or {}).items():
        became = "ignore regions" if what == "ignore" else "dropped"
        print(f"{'':<12} {n} objects cut by a tile border below the visible fraction: {became}")


def _print_summary(summary: dict) -> None:
    print(
        f"model        {summary['model']} ({summary.get('parameters', 0) / 1e6:.2f} M parameters)"
    )
    print(f"task         {summary['task']}")
    print(f"weights      {summary['weights']}")
    print(f"schedule     {summary['schedule']}")
    print(f"classes      {', '.join(summary['classes'])}")
    print(f"split        {summary['split']}")
    for split in ("train", "val"):
        s = summary.get(split) or {}
        per_class = ", ".join(f"{k} {v}" for k, v in s.get("objects_per_class", {}).items())
        print(
            f"{split:<12} {s.get('images', 0)} images, {s.get('objects', 0)} objects ({per_class})"
        )
        if s.get("images_without_objects"):
            kept = "dropped" if s.get("dropped_empty_images") else "kept"
            print(f"{'':<12} {s['images_without_objects']} images without objects ({kept})")
        for reason, n in (s.get("skipped") or {}).items():
            print(f"{'':<12} skipped {n} objects: {reason}")
        if ignored := s.get("ignore_regions"):
            regions = ", ".join(f"{name} {n}" for name, n in ignored.items())
            print(f"{'':<12} {sum(ignored.values())} ignore regions ({regions})")
        if tiles := s.get("slicing"):
            _print_slicing(tiles)
        if balance := s.get("class_balance"):
            per_class = balance["images_per_class"].items()
            shown = ", ".join(f"{c} {a} -> {b}" for c, (a, b) in per_class)
            (before, after), thr = balance["images"], balance["oversample_thr"]
            print(f"{'':<12} class balance {thr:g}: {before} -> {after} images an epoch; "
                  f"images per class: {shown}")  # fmt: skip
    for i, line in enumerate(summary.get("input_shapes") or []):
        print(f"{'input shapes' if i == 0 else '':<12} {line}")
    for warning in summary.get("warnings") or []:
        print(f"warning      {warning}")
    print(f"work dir     {summary['work_dir']}")


def _app_data(args: argparse.Namespace) -> str:
    return str(
        Path(args.app_data or os.environ.get("SLY_APP_DATA_DIR") or DEFAULT_APP_DATA).resolve()
    )


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


# What a resume may change (RESUME_CHANGES, the API's too) and the options that are not the
# run's settings; every other option is the run's own (its config.py).
_RESUME_OPTIONS = {
    *RESUME_CHANGES, "resume", "argv", "evaluate", "team_files", "team_id", "app_data",
    "no_cache", "dry_run", "dump_config", "max_nonfinite", "verbose",
}  # fmt: skip


_RESUME_FLAGS = (
    ", ".join(f"--{name}" for name in RESUME_CHANGES[:-1]) + f" and --{RESUME_CHANGES[-1]}"
)


def _contradiction(args: argparse.Namespace) -> str | None:
    """Two options that cannot both hold, named in one line (None: none)."""
    if args.from_scratch and args.weights:
        return (
            "--from-scratch and --weights contradict: train from scratch, or from the weights "
            "given (drop one)"
        )
    if args.from_run is not None and args.resume is not None:
        return (
            "--from-run and --resume contradict: --from-run starts a new run from a run's "
            "settings, --resume continues that run itself (drop one)"
        )
    if args.from_run_mode != "new" and args.from_run is None:
        return "--from-run-mode needs --from-run: the run whose settings to start from"
    if args.resume is None:
        return None
    parser = args.train_parser  # (set by _add_train_parser) its defaults: what was not given
    changed = [
        "--" + name.replace("_", "-")
        for name, value in vars(args).items()
        if name not in _RESUME_OPTIONS and name != "command" and value != parser.get_default(name)
    ]
    if changed:
        return (
            f"--resume and {', '.join(changed)} contradict: a resumed run keeps its own "
            f"settings; only {_RESUME_FLAGS} can change (start a new run to change the others)"
        )
    return None


def cmd_train(args: argparse.Namespace) -> int:
    """Compose (or prepare a resume), optionally show it (dry run, config dump), then train
    through the app's own controller: the same run flow, upload and error policy as the app."""
    problem = _contradiction(args) or _select_device(args.device)
    for gpu in args.gpus or ():
        problem = problem or _select_device(f"cuda:{gpu}")
    if problem:
        return _fail(problem)
    from src.app.controller import TrainingController

    store, resolver = _store(args)
    bar = ProgressBar()
    controller = TrainingController(
        _app_data(args), store, cache_dir=None if args.no_cache else DEFAULT_CACHE, sinks=[bar],
        project_resolver=resolver, max_nonfinite=args.max_nonfinite, verbose=args.verbose,
        on_fetch=lambda remote: print(
            f"downloading run {remote.run_id} from {store.describe(remote.folder)}"
        ),
    )  # fmt: skip
    if args.input_size == MODEL_SIZE and (problem := _use_the_models_input_size(controller, args)):
        return _fail(problem)
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
            _print_summary(controller.dry_run(prepared))
            if args.dump_config:
                print(f"config       written to {args.dump_config}")
            print("dry run: everything builds; nothing was trained")
            return 0
        started = time.time()
        _train(controller, prepared, resume_from)
    except AppError as exc:  # a request's problems (_CliError too): its exit code
        return _fail_with(exc)
    bar.close()
    return _report(controller, prepared, args, time.time() - started)


class _CliError(RequestError):
    """A problem with the command line's own input (a missing file or option)."""


def _prepare_resume(controller, args: argparse.Namespace):
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
    from src.app.prepare import TrainRequest

    if args.from_run:
        return controller.compose(_request_from_run(controller, args))
    if not args.project:
        raise _CliError("--project is required (or --resume to continue a run)")
    if args.augmentation_file and not Path(args.augmentation_file).is_file():
        raise _CliError(f"augmentation file {args.augmentation_file} does not exist")
    config_text = None
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise _CliError(f"config file {path} does not exist")
        config_text = path.read_text(encoding="utf-8")
    classes = _names(args.classes, "--classes") or None
    request = TrainRequest(
        project_dir=args.project,
        app_data_dir=str(controller.app_data_dir),
        model=args.model,
        config_text=config_text,
        classes=classes,
        params=_train_params(args),
        keep_empty_images=not args.drop_empty,
        run_id=args.run_id,
    )
    return controller.compose(request)


def _request_from_run(controller, args: argparse.Namespace):
    """``--from-run``: the run's settings (``app_state.json``) with the options given here over
    them, on ``--project`` or the project the run trained on."""
    from src.app.app_state import load_app_state, read_state_folder, request_from_state

    _, resolver = _store(args)
    if Path(args.from_run).is_dir():
        state, best = read_state_folder(args.from_run)
    else:
        state, best = controller.run_state(args.from_run)
    origin = state.get("project") if isinstance(state.get("project"), dict) else {}
    project_dir = args.project or origin.get("dir")
    if not project_dir and getattr(args, "team_id", None) is None:
        raise _CliError(
            f"run {args.from_run} trained on a platform project: give --project (a local copy) "
            "or --team-id (to download it)"
        )
    remote_id = origin.get("id") if getattr(args, "team_id", None) and not args.project else None
    project = resolver(remote_id, project_dir or "")
    loaded = load_app_state(state, project, args.from_run_mode, best)
    app_data = str(controller.app_data_dir)
    request = request_from_state(
        loaded, _given_settings(args), app_data, project, controller.compose
    )
    print(f"settings from {loaded.source}" + (" (continue: from its best checkpoint)"
          if loaded.mode == "continue" else ""))  # fmt: skip
    for note in loaded.notes:
        print(f"note: {note}")
    return request


# hand-written options and the TrainParams fields they set (the generated ones: their own name)
_FIELDS_OF = {"batch_size": ("train_batch_size",), "workers": ("num_workers",),
              "augmentation_file": ("augmentation", "augmentation_pipeline"),
              "from_scratch": ("weights",), "weights": ("weights", "weights_path")}  # fmt: skip


def _given_settings(args: argparse.Namespace) -> dict:
    """The options the command line gave (not their defaults), as an API body's fields: what
    overrides a run's settings under ``--from-run``."""
    from dataclasses import fields

    from src.config.doors import DOORS
    from src.config.params import TrainParams, jsonable

    parser, saved = args.train_parser, {}
    try:  # parsed again with no defaults: only what was typed is in the namespace
        for action in parser._actions:
            saved[action] = action.default
            action.default = argparse.SUPPRESS
        tokens = args.argv[args.argv.index("train") + 1 :]
        given = set(vars(parser.parse_args(tokens)))
    finally:
        for action, default in saved.items():
            action.default = default
    params = _train_params(args)
    names = {f.name for f in fields(TrainParams)}
    changed = {name for dest in given for name in _FIELDS_OF.get(dest, (dest,)) if name in names}
    body: dict = {
        "hyperparameters": {
            name: jsonable(getattr(params, name)) for name in changed if DOORS[name].api
        }
    }
    if "model" in given:
        body["model"] = args.model
    if "config" in given:
        body["config"] = Path(args.config).read_text(encoding="utf-8")
    if "classes" in given:
        body["classes"] = _names(args.classes, "--classes")
    if "task" in given:
        body["task"] = args.task
    if "drop_empty" in given:
        body["keep_empty_images"] = False
    if "run_id" in given:
        body["run_id"] = args.run_id
    return body


def _train(controller, prepared, resume_from: str | None) -> None:
    """Start the run and wait for it and its upload, printing what the session chooses; Ctrl-C
    once stops it gracefully."""
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


def _report(controller, prepared, args: argparse.Namespace, seconds: float) -> int:
    """The ended run as the CLI's output and exit code."""
    from src.app.end_of_run import export_failure, export_notes

    status = controller.status()
    outcome = status.outcome
    if status.run_state == "failed":
        if args.verbose and controller.traceback:
            print(controller.traceback, file=sys.stderr)
        return _fail(f"training failed: {status.error} (log: {prepared.work_dir})", FAILED)
    if status.run_state == "stopped":
        print(
            f"stopped at epoch {status.epoch}, iteration {status.iteration}; checkpoint "
            f"{status.stopped_checkpoint}\nresume with: python -m src.cli train --resume "
            f"{prepared.run_id}"
        )
    else:
        print(f"training finished in {seconds:.0f} s")
        if status.ended_early:
            print(status.ended_early)
    if outcome is not None and outcome.upload_error:
        return _fail(
            f"upload failed: {outcome.upload_error}; checkpoints stay in {prepared.work_dir}",
            FAILED,
        )
    final = headline(status.metrics)
    if final:
        print("final validation: " + "  ".join(f"{k} {v:.3f}" for k, v in final.items()))
    if outcome is not None and outcome.evaluation_error:
        print(f"evaluation failed (the run is uploaded): {outcome.evaluation_error}",
              file=sys.stderr)  # fmt: skip
    if outcome is not None and outcome.evaluation:
        _print_evaluation(outcome.evaluation)
    for note in export_notes(outcome, failure=False) if outcome is not None else []:
        print(note)
    if outcome is not None and (failed := export_failure(outcome)):
        print(failed, file=sys.stderr)
    print(f"artifacts: {outcome.artifacts if outcome else None}")
    return 0


def _print_evaluation(evaluation: dict) -> None:
    from src.app.evaluate import key_metrics_line

    print(f"evaluation of {evaluation['checkpoint']}: {key_metrics_line(evaluation['metrics'])}")
    for note in evaluation.get("notes") or []:
        print(f"  {note}")
    print(f"report: {evaluation['report']}")


def _run_or_checkpoint(target: str) -> tuple[str, str | None]:
    """A RUN_ID in app data, or a checkpoint (.pth) of such a run: (run id, checkpoint or None)."""
    path = Path(target)
    if path.suffix == ".pth":
        return path.resolve().parent.name, str(path.resolve())
    return target, None


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a run in app data (its best checkpoint, or the one named) on a split."""
    from src.app.controller import TrainingController
    from src.runs.storage import LocalArtifactStore

    run_id, checkpoint = _run_or_checkpoint(args.target)
    controller = TrainingController(_app_data(args), LocalArtifactStore(DEFAULT_TEAM_FILES))
    try:
        evaluation = controller.evaluate(
            run_id, checkpoint, project_dir=args.project, split=args.split
        )
    except AppError as exc:  # a run or checkpoint not there (2), an evaluation that failed (1)
        return _fail_with(exc)
    _print_evaluation(evaluation)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a run in app data (its best checkpoint, or the one named) to ONNX / TensorRT."""
    from src.app.controller import TrainingController
    from src.runs.storage import LocalArtifactStore

    run_id, checkpoint = _run_or_checkpoint(args.target)
    controller = TrainingController(_app_data(args), LocalArtifactStore(DEFAULT_TEAM_FILES))
    try:
        result = controller.export(
            run_id, args.format, checkpoint, input_size=args.input_size, replace=args.force
        )
    except AppError as exc:
        return _fail("; ".join(exc.problems), exc.exit_code)
    print(f"exported {Path(result.checkpoint).name} in {result.seconds:.0f} s")
    for fmt, path in result.files.items():
        kept = " (kept: already exported from this checkpoint; --force writes it again)"
        print(f"  {fmt}: {path}" + (kept if fmt in result.kept else ""))
    for fmt, why in result.skipped.items():
        print(f"  {fmt} not exported: {why}")
    return 0 if not result.skipped else PARTIAL_EXPORT


def cmd_predict(args: argparse.Namespace) -> int:
    """Detect objects in images with an exported ONNX model (onnxruntime only, no mmdet): one
    line per detection, and each image with its boxes drawn into ``--out``. A model of a sliced
    run slices large images as it was validated (its tile size travels in the model file);
    ``--slice-size`` sets another, 0 turns it off. Everything is checked before anything is
    written: the model file, the tiles (training's ranges), every image, and where the drawings
    go (never over an input or a file already there)."""
    import cv2

    from src.engine.onnx_runtime import Detections, draw

    detector = _open_detector(args.onnx)
    slicing = _predict_slicing(args, detector.slicing)
    out = Path(args.out)
    targets = _drawn_paths(args.images, out, args.onnx)
    for name in args.images:
        _check_image(detector, name, cv2.imread(name), slicing)
    out.mkdir(parents=True, exist_ok=True)
    for name, target in zip(args.images, targets, strict=True):
        image = cv2.imread(name)
        if slicing and max(image.shape[:2]) > slicing["size"]:
            found = _predict_sliced(detector, image, slicing)
            print(f"{name}: sliced into tiles of {slicing['size']} px (boxes only)")
        else:
            found = detector.predict([image], score_thr=0.0)[0]
        keep = found.scores >= args.score_thr
        found = Detections(found.boxes[keep], found.scores[keep], found.labels[keep],
                           found.masks[keep] if found.masks is not None else None)  # fmt: skip
        for box, score, label in zip(found.boxes, found.scores, found.labels, strict=True):
            x1, y1, x2, y2 = (round(float(v)) for v in box)
            print(f"{name}: {detector.classes[label]} {score:.2f} at {x1},{y1},{x2},{y2}")
        print(f"{name}: {len(found.scores)} objects above {args.score_thr}")
        if not cv2.imwrite(str(target), draw(image, found, detector.classes)):
            return _fail(f"cannot write {target}: check that {out} is writable")
        if target.stem != Path(name).stem:
            print(f"{name}: drawn as {target.name} (another input has the same name)")
    print(f"drawn: {out}")
    return 0


def _open_detector(path: str):
    """The exported model, or a ``_CliError`` saying what is wrong with the file."""
    from src.engine.onnx_runtime import OnnxDetector

    again = "export the run again (python -m src.cli export RUN_ID)"
    file = Path(path)
    if not file.is_file():
        raise _CliError(
            f"model file {path} does not exist: give the .onnx file the export command wrote "
            "(python -m src.cli export RUN_ID)"
        )
    if file.stat().st_size == 0:
        raise _CliError(f"model file {path} is empty (0 bytes): {again}")
    try:
        return OnnxDetector(str(file))
    except (KeyError, ValueError, TypeError):  # a model, but not with this app's metadata
        raise _CliError(
            f"{path} is an ONNX model, but not one this app exported (its sly_mmdet_export "
            f"metadata is missing or unreadable): {again}"
        ) from None
    except Exception as exc:  # onnxruntime's load errors derive from Exception alone
        reason = " ".join(str(exc).split())[:200]
        raise _CliError(
            f"model file {path} cannot be loaded by ONNX Runtime ({reason}): it is truncated or "
            f"not an ONNX model; {again}"
        ) from None


def _predict_slicing(args: argparse.Namespace, own: dict | None) -> dict:
    """The tiles to predict with: the model's own (a sliced run's), ``--slice-size`` (0: off)
    and ``--slice-overlap`` over them; checked against training's ranges
    (``src.config.params.slicing_problems``). Empty: no slicing."""
    from src.config.params import slicing_problems

    slicing = dict(own or {})
    if args.slice_size is not None:
        slicing = {**slicing, "size": args.slice_size} if args.slice_size else {}
    if args.slice_overlap is not None:
        if not slicing:
            raise _CliError(
                "--slice-overlap needs tiles: give --slice-size PX (this model has no tile size "
                "of its own)"
            )
        slicing["overlap"] = args.slice_overlap
    problems = slicing_problems(slicing) if slicing else []
    if problems:
        raise _CliError("; ".join(problems))
    return slicing


def _drawn_paths(images: list[str], out: Path, model: str) -> list[Path]:
    """Where each image's drawing goes: ``OUT/<stem>.jpg``, and for a later input with a stem
    already used ``<stem>_2.jpg``, ``<stem>_3.jpg``... A ``_CliError`` when ``--out`` is the
    folder of an input (predict never writes where it reads) or already holds one of them."""
    if out.exists() and not out.is_dir():
        raise _CliError(f"--out {out} is a file: give a folder for the drawn images")
    where = out.resolve()
    for name in images:
        if Path(name).resolve().parent == where:
            raise _CliError(
                f"--out {out} is the folder of the input {name}: predict never writes where it "
                "reads; give another --out"
            )
    taken: set[str] = set()
    targets = []
    for name in images:
        stem, n = Path(name).stem, 1
        candidate = f"{stem}.jpg"
        while candidate in taken:
            n += 1
            candidate = f"{stem}_{n}.jpg"
        taken.add(candidate)
        targets.append(out / candidate)
    inputs = {Path(p).resolve() for p in [*images, model]}
    there = [t for t in targets if t.exists() or t.is_symlink() or t.resolve() in inputs]
    if there:
        shown = ", ".join(t.name for t in there[:5]) + (
            f" and {len(there) - 5} more" if len(there) > 5 else ""
        )
        raise _CliError(
            f"--out {out} already holds {shown}: predict never overwrites; give a new --out "
            "folder or move those files away"
        )
    return targets


def _check_image(detector, name: str, image, slicing: dict) -> None:
    """A ``_CliError`` for an image that cannot be read, or that the model's resize would
    shrink to nothing (a 1x5000 strip): whole (unless only its tiles are predicted) and as a
    tile."""
    if image is None:
        raise _CliError(f"{name} is not an image OpenCV can read")
    height, width = image.shape[:2]
    sliced = bool(slicing) and max(height, width) > slicing["size"]
    pieces = [] if sliced and not slicing.get("full_image", True) else [(height, width)]
    if sliced:
        pieces.append((min(height, slicing["size"]), min(width, slicing["size"])))
    for h, w in pieces:
        if min(detector.resized_size(h, w)) < 1:
            long, short = detector.scale
            raise _CliError(
                f"{name} is {width}x{height} px: resized to fit the model's {long}x{short} input, "
                f"a {w}x{h} px {'tile' if (h, w) != (height, width) else 'image'} would be less "
                "than 1 px on its shorter side; crop it into less elongated pieces"
            )


def _predict_sliced(detector, image, slicing: dict):
    """The ONNX model over the image's tiles, merged as a sliced run's validation merges them."""
    from src.engine.onnx_runtime import Detections
    from src.engine.tile_merge import predict_sliced

    def detect(images):
        return [(d.boxes, d.scores, d.labels) for d in detector.predict(images, score_thr=0.0)]

    merged = predict_sliced(
        detect, image, int(slicing["size"]), float(slicing.get("overlap", 0.2)),
        bool(slicing.get("full_image", True)),
    )  # fmt: skip
    return Detections(merged.boxes, merged.scores, merged.labels.astype(int))


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


def _store(args: argparse.Namespace):
    """(artifact store, project resolver): Team Files of ``--team-id`` through the API
    (``SERVER_ADDRESS``/``API_TOKEN``), else the local folder standing in for it."""
    from src.app.prepare import local_project_resolver
    from src.runs.storage import LocalArtifactStore

    if getattr(args, "team_id", None) is None:
        return LocalArtifactStore(args.team_files or DEFAULT_TEAM_FILES), local_project_resolver
    import supervisely as sly

    from src.app.platform import platform_services

    projects = Path(DEFAULT_CACHE).parent / "projects"
    services = platform_services(sly.Api.from_env(), args.team_id, None, projects)
    return services.store, services.resolve_project


def cmd_runs(args: argparse.Namespace) -> int:
    """The controller's runs table: app data first, then runs only in Team Files (the local
    stand-in folder unless ``--team-id``)."""
    from src.app.controller import TrainingController

    store, _ = _store(args)
    rows = TrainingController(_app_data(args), store).catalog.runs()
    if not rows:
        print(f"no resumable runs in {_app_data(args)} or {store.describe('/mmdetection-3')}")
        return 0
    print(f"{'run':<24} {'model':<36} {'epoch':>9} {'iter':>7}  {'saved':<19} {'mAP':>6}  folder")
    for row in rows:
        saved = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["saved_at"]))
        epoch = f"{row['epoch']}/{row['max_epochs']}" + ("*" if row["mid_epoch"] else "")
        m_ap = "-" if row["mAP"] is None else f"{row['mAP']:.3f}"
        where = "" if row["where"] == "app data" else f"{row['where']}: "
        print(
            f"{row['run_id']:<24} {row['model']:<36} {epoch:>9} {row['iteration']:>7}  "
            f"{saved:<19} {m_ap:>6}  {where}{row['folder']}"
        )
    print(
        "\n* stopped mid-epoch; resume with: python -m src.cli train --resume [RUN_ID] "
        "[--team-files DIR|--team-id N]"
    )
    return 0


# --------------------------------------------------------------------------- probe


def cmd_probe(args: argparse.Namespace) -> int:
    from src.app.zoo_probe import probe_in_subprocess
    from src.config import zoo

    tasks = [args.task] if args.task else list(TASKS)
    wanted = [m.strip() for m in (args.models or "").split(",") if m.strip()]
    jobs = []
    for task in tasks:
        if wanted:
            offered = {e.model for e in zoo.list_models(task)}
            jobs += [(m, task) for m in wanted if m in offered]
        else:
            jobs += [(e.model, task) for e in zoo.default_models(task)]
    if not jobs:
        return _fail(f"no zoo model of {', '.join(tasks)} matches {args.models!r}")
    print("| architecture | model | passes | needs GPU | why not |")
    print("|---|---|---|---|---|")
    results = []
    for model, task in jobs:
        result = probe_in_subprocess(model, task, args.project, args.input_size)
        results.append(result)
        print(result.row(), flush=True)
    passed = sum(r.passes for r in results)
    print(f"\n{passed} of {len(results)} models pass on {args.project}")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0 if all(r.passes or r.needs_gpu or r.needs_packages for r in results) else FAILED


# --------------------------------------------------------------------------- parser


def _gpu_list(text: str) -> tuple[int, ...]:
    """``0,1`` → (0, 1): the GPUs to train on, one process each."""
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give GPU indices, e.g. 0,1") from None


MODEL_SIZE = "model"  # --input-size model: the zoo model's own size


def _export_formats(text: str) -> tuple[str, ...]:
    from src.config.params import EXPORT_FORMATS

    formats = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give one or more of {', '.join(EXPORT_FORMATS)}, comma-separated"
        )
    return formats


def _auto_or_int(text: str) -> int | None:
    """``auto`` (None: the app chooses) or a whole number."""
    if text.strip().lower() == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a whole number, got {text!r}") from None


def _input_size(text: str) -> tuple[int, int] | str:
    """``640`` or ``1333x800`` (longer x shorter edge) → (longer, shorter); ``model`` stays."""
    if text.strip().lower() == MODEL_SIZE:
        return MODEL_SIZE
    parts = text.lower().replace("×", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give PX or LONGxSHORT, e.g. 1333x800"
        ) from None
    if len(sizes) == 1:
        sizes *= 2
    if len(sizes) != 2:
        raise argparse.ArgumentTypeError(f"{text!r}: give PX or LONGxSHORT, e.g. 1333x800")
    return max(sizes), min(sizes)


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    """``train``'s options. A ``TrainParams`` field's option is declared in ``src.config.doors``
    (flag, help, default, choices, range): the plain ones are made from it; those that parse more
    (``auto|N``, ``LONGxSHORT``, a GPU list, a file) are written here under the declared flag."""
    from src.config.doors import generated_cli_options

    tr = sub.add_parser("train", help="train a model on a local project")
    tr.add_argument("--project", help="local Supervisely project directory")
    tr.add_argument("--model", help="zoo model name (python -m src.cli zoo)")
    for option in generated_cli_options():
        tr.add_argument(option.flag, dest=option.dest, **option.kwargs)
    _add_parsed_settings(tr)
    _add_run_options(tr)
    tr.set_defaults(func=cmd_train, train_parser=tr)


def _add_parsed_settings(tr: argparse.ArgumentParser) -> None:
    """The ``TrainParams`` options that parse more than their type (``auto|N``, ``LONGxSHORT``,
    a GPU list, names), under the flags ``src.config.doors`` declares."""
    from src.config.doors import DOORS
    from src.config.params import DEFAULT_BATCH_SIZE, DEFAULT_WORKERS, TrainParams

    d = TrainParams()
    tr.add_argument(
        DOORS["classes"].cli, metavar="NAME[,NAME]|JSON",
        help="comma-separated class names, or a JSON list for names with a comma or spaces "
        """around them ('["car, parked", "person"]'); default: all""",
    )  # fmt: skip
    tr.add_argument(
        DOORS["ignore"].cli, metavar="NAME[,NAME]|JSON",
        help="comma-separated class or tag names (or a JSON list, as --classes) whose objects are "
        "ignore regions (crowds, areas that must not count): not trained as objects, never a miss "
        "or a false positive",
    )  # fmt: skip
    tr.add_argument(
        DOORS["epochs"].cli, type=int, default=None, help=f"default {d.epochs} (resume: as planned)"
    )
    tr.add_argument(
        DOORS["train_batch_size"].cli, type=_auto_or_int, default=d.train_batch_size,
        metavar="auto|N", help=f"train batch per device; auto (default): sized on the GPU from "
        f"its free memory, {DEFAULT_BATCH_SIZE} on the CPU",
    )  # fmt: skip
    tr.add_argument(
        DOORS["num_workers"].cli, type=_auto_or_int, default=d.num_workers, metavar="auto|N",
        help=f"data-loader workers; auto (default): from the cores per GPU, {DEFAULT_WORKERS} on "
        "the CPU",
    )  # fmt: skip
    tr.add_argument(
        DOORS["input_size"].cli, type=_input_size, default=d.input_size,
        metavar="PX|LONGxSHORT|model",
        help="input size: images are resized, keeping their aspect ratio, so that the longer edge "
        "fits LONG and the shorter SHORT (mmdet's Resize scale); one number: a square; model: "
        f"the zoo model's own, e.g. 1333x800 (default {d.input_size[0]}x{d.input_size[1]})",
    )  # fmt: skip
    tr.add_argument(
        DOORS["augmentation_pipeline"].cli,
        help="a custom augmentation pipeline: a YAML or JSON list of mmdet transforms, applied "
        "after resizing (implies --augmentation custom; see configs/augmentations.yaml)",
    )
    _add_devices_and_weights(tr)


def _add_devices_and_weights(tr: argparse.ArgumentParser) -> None:
    """Where a run trains and what it starts from (the ``TrainParams`` options with a parser of
    their own), and what it exports."""
    from src.config.doors import DOORS

    tr.add_argument(
        DOORS["nproc"].cli, type=int, default=None,
        help="train in N processes with --device cpu (DDP over gloo; tests, CPU machines); with "
        "--resume: continue in N",
    )  # fmt: skip
    tr.add_argument(
        "--config", help="an edited config file: trains as written, plus dataset, classes, work dir"
    )
    tr.add_argument(
        DOORS["weights"].cli, action="store_true", help="random init, no pretrained weights"
    )
    tr.add_argument(DOORS["weights_path"].cli, help="custom checkpoint to start from")
    tr.add_argument(
        DOORS["gpus"].cli, type=_gpu_list, default=None, metavar="0,1",
        help="train on these GPUs, one process each (DDP; the batch size is per GPU); with "
        "--resume: continue on these (not bit-identical when their number changes)",
    )  # fmt: skip
    tr.add_argument(
        DOORS["export"].cli, type=_export_formats, default=(), metavar="onnx[,tensorrt]",
        help=DOORS["export"].help,
    )  # fmt: skip
    tr.add_argument(
        "--drop-empty", action="store_true", help="drop training images without objects"
    )


def _add_run_options(tr: argparse.ArgumentParser) -> None:
    """``train``'s options that are not a run's settings: where runs and Team Files are, the
    dry run, resume and from-run, verbosity."""
    tr.add_argument(
        "--team-files", default=DEFAULT_TEAM_FILES, help="local folder standing in for Team Files"
    )
    tr.add_argument(
        "--team-id", type=int, help="use this team's Team Files (SERVER_ADDRESS, API_TOKEN)"
    )
    tr.add_argument(
        "--app-data", help="app data dir (default: $SLY_APP_DATA_DIR or ./artifacts/app_data)"
    )
    tr.add_argument("--run-id", help="name of the run (default: a timestamp)")
    tr.add_argument("--no-cache", action="store_true", help="do not cache parsed annotations")
    tr.add_argument(
        "--dry-run", action="store_true", help="build everything, print a summary, do not train"
    )
    tr.add_argument("--dump-config", help="write the composed config to this file")
    tr.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="RUN_ID|CHECKPOINT",
        help="continue a run from app data (default: the newest)",
    )
    tr.add_argument(
        "--from-run", metavar="RUN_ID|FOLDER",
        help="a new run with the settings of an earlier one: the id of a run uploaded by this app "
        "(to --team-files or --team-id), or its folder (with app_state.json); the options given "
        "here override them",
    )  # fmt: skip
    tr.add_argument(
        "--from-run-mode", choices=("new", "continue"), default="new",
        help="with --from-run: new (default) trains from the weights that run started from; "
        "continue, from that run's best checkpoint (a new run, unlike --resume)",
    )  # fmt: skip
    tr.add_argument(
        "--max-nonfinite", type=int, default=5, help="NaN/Inf losses in a row that end the run"
    )
    tr.add_argument(
        "-v", "--verbose", action="store_true",
        help="also print the libraries' output (mmengine's log, pycocotools, warnings; always in "
        "the run's log file) and tracebacks",
    )  # fmt: skip


def _add_export_parsers(sub) -> None:
    """``export`` (a run to ONNX / TensorRT) and ``predict --onnx`` (an exported file)."""
    ex = sub.add_parser(
        "export",
        help="export a run's checkpoint to ONNX (ONNX Runtime) or TensorRT (docs/export.md)",
    )
    ex.add_argument("target", help="RUN_ID in app data, or a checkpoint (.pth) of such a run")
    ex.add_argument(
        "--format", type=_export_formats, default=("onnx",), metavar="onnx|tensorrt",
        help="onnx (default), tensorrt (built from the ONNX file: a GPU with TensorRT), or both",
    )  # fmt: skip
    ex.add_argument(
        "--input-size", type=int, metavar="PX",
        help="resize images to fit this square instead of the run's input size (the file is "
        "named <checkpoint>_<PX>px.onnx, beside the run's own)",
    )  # fmt: skip
    ex.add_argument(
        "--force", action="store_true",
        help="write over an export file already there (default: an export newer than the "
        "checkpoint is kept, an older one refused)",
    )  # fmt: skip
    ex.add_argument(
        "--app-data", help="app data dir (default: $SLY_APP_DATA_DIR or ./artifacts/app_data)"
    )
    ex.set_defaults(func=cmd_export)

    pr = sub.add_parser(
        "predict", help="detect objects in images with an exported model (ONNX Runtime only)"
    )
    pr.add_argument("--onnx", required=True, help="a model.onnx written by the export command")
    pr.add_argument("images", nargs="+", help="image files")
    pr.add_argument("--score-thr", type=float, default=0.3, help="the lowest score shown")
    pr.add_argument("--out", default="artifacts/predictions", help="where the drawn images go")
    pr.add_argument(
        "--slice-size", type=int, metavar="PX",
        help="slice images larger than this into tiles, predict each and merge (default: the "
        "tile size of a sliced run's model, else off; 0: off)",
    )  # fmt: skip
    pr.add_argument("--slice-overlap", type=float, help="the tiles' overlap (default: the run's)")
    pr.set_defaults(func=cmd_predict)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m src.cli", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    probe = sub.add_parser(
        "probe",
        help="check which zoo models train, validate and predict on a project here (one short "
        "real run per model; a markdown table)",
    )
    probe.add_argument("--project", required=True)
    probe.add_argument("--task", choices=list(TASKS), help="default: both")
    probe.add_argument("--models", help="comma-separated model names (default: each "
                       "architecture's default model)")  # fmt: skip
    probe.add_argument("--input-size", type=int, default=160)
    probe.add_argument("--json", help="also write the results to this file")
    probe.set_defaults(func=cmd_probe)

    demo = sub.add_parser("demo-project", help="write a synthetic Supervisely project")
    demo.add_argument("dir")
    demo.add_argument("--images", type=int, default=160)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--square", action="store_true", help="square 256 px images (default: photo-like sizes)"
    )
    demo.add_argument(
        "--real-world",
        action="store_true",
        help="the real-world-shaped project: 1080p to 2048 px, portrait, tiny, grayscale, RGBA, "
        "EXIF-rotated JPEGs, nested datasets (--images is ignored)",
    )
    demo.add_argument(
        "--large", action="store_true",
        help="4000x3000 JPEGs with 20 to 40 objects of 12 to 30 px each: for sliced training "
        "(--slice-size); use a few --images",
    )  # fmt: skip
    demo.set_defaults(func=cmd_demo_project)

    zoo_p = sub.add_parser("zoo", help="list the model zoo")
    zoo_p.add_argument("--task", default=DETECTION, choices=list(TASKS))
    zoo_p.add_argument("--architecture", help="only this architecture (display name)")
    zoo_p.add_argument("--all", action="store_true", help="every model, not one per architecture")
    zoo_p.set_defaults(func=cmd_zoo)

    _add_train_parser(sub)

    runs_p = sub.add_parser(
        "runs", help="list resumable runs: in app data, then those only in Team Files"
    )
    runs_p.add_argument(
        "--app-data", help="app data dir (default: $SLY_APP_DATA_DIR or ./artifacts/app_data)"
    )
    runs_p.add_argument(
        "--team-files",
        nargs="?",
        const=DEFAULT_TEAM_FILES,
        default=None,
        metavar="DIR",
        help=f"the folder standing in for Team Files (default {DEFAULT_TEAM_FILES})",
    )
    runs_p.add_argument(
        "--team-id", type=int, help="list this team's Team Files (SERVER_ADDRESS, API_TOKEN)"
    )
    runs_p.set_defaults(func=cmd_runs)

    ev = sub.add_parser(
        "evaluate", help="Model Benchmark metrics and report of a run (or one of its checkpoints)"
    )
    ev.add_argument("target", help="RUN_ID in app data, or a checkpoint (.pth) of such a run")
    ev.add_argument("--project", help="the project's folder now (default: where the run read it)")
    ev.add_argument("--split", choices=("val", "train"), default="val")
    ev.add_argument(
        "--app-data", help="app data dir (default: $SLY_APP_DATA_DIR or ./artifacts/app_data)"
    )
    ev.set_defaults(func=cmd_evaluate)

    _add_export_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from src.engine.devices import CUDA_ALLOC_CONF

    # before CUDA initialises (the allocator reads it once); a user's own setting is kept
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", CUDA_ALLOC_CONF)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # mmdet 3.3 calls torch.cuda.amp.autocast, deprecated in torch >= 2.4: noise, not news
    warnings.filterwarnings("ignore", category=FutureWarning)
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what was given (--from-run)
    try:
        return args.func(args)
    except AppError as exc:
        return _fail_with(exc)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        return _fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())
