"""A resume's request: which run continues (in app data, or fetched from Team Files), and its
own config ready to continue (more epochs, other devices, its project found again).

Apart from ``prepare`` because a resume is not composed from settings: the run's config.py is
read back, and only what a resume may change is changed in it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mmengine.config import Config

from src.config.compose import relocate_run
from src.config.compose_data import train_dataset_cfg
from src.config.metadata import RunMetadata
from src.config.params import ConfigError, TrainParams, range_problem
from src.config.schedule import devices, replan_epochs
from src.config.text import load_config_file
from src.core.errors import RequestError
from src.core.layout import RUN_CONFIG, RunIdError, is_run_dir, run_dir
from src.data.project import Split
from src.data.reader import DatasetError
from src.engine.cpus import nproc_problem
from src.runs.checkpoint_io import CheckpointError, peek_checkpoint
from src.runs.checkpoints import find_resumable_runs, newest_resumable_checkpoint
from src.runs.info import APP_DATA, RunInfo
from src.runs.remote import fetch_remote_run, find_remote_runs
from src.runs.storage import ArtifactStore, UploadError
from src.setup.prepare import Prepared, ProjectResolver, local_project_resolver
from src.setup.run_ids import saved_checkpoints


def resolve_resumable(app_data_dir: str | Path, target: str | None) -> RunInfo:
    """The run to continue: by run id, by checkpoint path, or (None) the newest one."""
    runs = find_resumable_runs(app_data_dir)
    if target is None:
        if not runs:
            raise RequestError([f"no resumable run in {app_data_dir}: nothing to resume"])
        return runs[0]
    for run in runs:
        if target == run.run_id:
            return run
    path = Path(target)
    if path.suffix == ".pth":
        if not path.is_file():
            raise RequestError([f"checkpoint {path} does not exist"])
        work_dir = path.resolve().parent
        # a run's config.py is Python that resuming executes: only runs this app wrote in app
        # data (or fetched there from Team Files) are resumed, never a folder named by a request
        if not is_run_dir(app_data_dir, work_dir):
            raise RequestError(
                [f"{path} is not in a run folder of {app_data_dir}: only runs in app data (or "
                 "in Team Files, by run id) can be resumed"]
            )  # fmt: skip
        if not (work_dir / RUN_CONFIG).is_file():
            raise RequestError(
                [f"{path} is not in a run folder of this app ({RUN_CONFIG} missing)"]
            )
        try:
            meta = peek_checkpoint(path)
        except CheckpointError as exc:
            hint = ""
            try:
                previous, _, _ = newest_resumable_checkpoint(work_dir)
                if previous.resolve() != path.resolve():
                    hint = f"; the newest good checkpoint of this run is {previous}"
            except CheckpointError:
                pass
            raise RequestError([f"{exc}{hint}"]) from None
        return RunInfo(
            run_id=work_dir.name,
            where=APP_DATA,
            folder=str(work_dir),
            checkpoint=str(path.resolve()),
            model_name=RunMetadata.of(meta).model_name,
            epoch=int(meta.get("epoch", 0)),
            iteration=int(meta.get("iter", 0)),
            max_epochs=int(meta.get("max_epochs", 0)),
            saved_at=path.stat().st_mtime,
        )
    known = ", ".join(r.run_id for r in runs) or "none"
    try:
        folder = run_dir(app_data_dir, target)
    except RunIdError:
        folder = None
    if folder is not None and (folder / RUN_CONFIG).is_file() and not saved_checkpoints(folder):
        raise RequestError(
            [f"run {target} never saved a checkpoint (it ended before its first; its log is in "
             f"{folder}): there is nothing to resume; start it again as a new run (its id is "
             "free to reuse)"]
        )  # fmt: skip
    raise RequestError([f"no resumable run {target!r} in {app_data_dir} (runs: {known})"])


def locate_run(
    app_data_dir: str | Path,
    store: ArtifactStore,
    target: str | None,
    on_fetch: Callable[[RunInfo], None] | None = None,
) -> RunInfo:
    """:func:`resolve_resumable`, but a run id that is only in the store (Team Files) is first
    downloaded into app data (``on_fetch`` is told before)."""
    if target and not target.endswith(".pth"):
        local = {r.run_id for r in find_resumable_runs(app_data_dir)}
        remote = {r.run_id: r for r in find_remote_runs(store)} if target not in local else {}
        if target in remote:
            if on_fetch is not None:
                on_fetch(remote[target])
            try:
                fetch_remote_run(store, remote[target], app_data_dir)
            except (UploadError, OSError, CheckpointError) as exc:
                raise RequestError([f"cannot fetch run {target}: {exc}"]) from None
    return resolve_resumable(app_data_dir, target)


def prepare_resume(
    run: RunInfo,
    epochs: int | None = None,
    project_resolver: ProjectResolver = local_project_resolver,
    cache_dir: str | None = None,
    gpus: tuple[int, ...] | None = None,
    nproc: int | None = None,
    device: str | None = None,
) -> Prepared:
    """A stopped/crashed run, ready to continue from its checkpoint (optionally for more epochs,
    or on other devices: ``gpus`` / ``nproc`` / ``device`` replace the recorded ones).

    ``project_resolver`` finds the run's project (by its platform id, or its recorded folder):
    on the platform it downloads it when this app session does not have it yet.
    """
    if epochs is not None and (problem := range_problem("epochs", epochs)):
        raise RequestError([problem])
    try:
        cfg = load_config_file(run.work_dir / RUN_CONFIG)
        if epochs is not None and epochs != int(cfg.train_cfg.max_epochs):
            replan_epochs(cfg, epochs)
    except ConfigError as exc:
        raise RequestError([f"cannot read the run's config: {exc}"]) from None
    notes = []
    if gpus is not None or nproc is not None or device is not None:
        note = _resume_on_devices(cfg, gpus, nproc, device)
        notes += [note] if note else []
    if run.epoch >= int(cfg.train_cfg.max_epochs) and epochs is None:
        raise RequestError(
            [f"run {run.run_id} already trained all {run.epoch} epochs: pass more epochs"]
        )
    metadata = RunMetadata.of(cfg)
    project_dir = train_dataset_cfg(cfg).get("project_dir")
    try:
        project = project_resolver(metadata.project_id, project_dir)
    except DatasetError as exc:
        raise RequestError([f"the run's project is not available: {exc}"]) from None
    relocate_run(cfg, run.work_dir, project.directory, cache_dir)
    params = TrainParams(
        task=metadata.task_type,
        classes=metadata.classes,
        epochs=int(cfg.train_cfg.max_epochs),
        seed=int(metadata.train_params.get("seed", 0)),
    )
    split = Split(description="as in the resumed run")
    return Prepared(project, params, split, cfg, run.run_id, metadata.model_name, notes)


def _resume_on_devices(
    cfg: Config, gpus: tuple[int, ...] | None, nproc: int | None, device: str | None = None
) -> str:
    """Record the devices a resume trains on in ``cfg``'s train params (``device`` alone keeps
    the recorded gpus and nproc); what changes, if the number of processes does (the resume
    continues, but not bit-identically)."""
    metadata = RunMetadata.of(cfg)
    recorded = dict(metadata.train_params)
    if gpus is None and nproc is None:
        gpus, nproc = tuple(recorded.get("gpus") or ()), recorded.get("nproc")
    wanted = TrainParams(
        gpus=tuple(gpus or ()), nproc=1 if nproc is None else nproc, device=device or "cpu"
    )
    problems = wanted.device_problems()
    if out_of_range := range_problem("nproc", wanted.nproc):
        problems.insert(0, out_of_range)
    elif not wanted.gpus and (too_many := nproc_problem(wanted.nproc)):
        problems.insert(0, too_many)
    if problems:
        raise RequestError(problems)
    before = metadata.devices
    if device is not None:
        recorded["device"] = device
    recorded.update(gpus=list(wanted.gpus), nproc=wanted.nproc)
    if wanted.gpus and not str(recorded.get("device", "")).startswith("cuda"):
        recorded["device"] = f"cuda:{wanted.gpus[0]}"
    metadata.updated(train_params=recorded).write(cfg)
    after = devices(wanted)
    if after == before:
        return ""
    return (
        f"the run trained in {before} process(es) and continues in {after}: the same epoch and "
        "about the same number of its samples, the LR schedule re-counted in the new "
        "iterations; the result is not bit-identical to an uninterrupted run"
    )
