"""A new run's request: a request in, a validated and composed config out.

Called through ``TrainingController`` (and by the zoo probe), so the CLI, the widgets UI and the
HTTP API validate and compose the same way.
Every problem with a request is collected and reported together (``RequestError``), before
anything is written. Beside it: the run ids a new run may take (``run_ids``), its data checked
and the dry run (``data_check``), and a stopped run's config ready to continue (``resume``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mmengine.config import Config

from src.config import zoo
from src.config.augmentations import augmentation_transforms
from src.config.compose import apply_owned_settings, build_config, compose_from_zoo
from src.config.compose_data import train_dataset_cfg
from src.config.metadata import KEY as METADATA_KEY
from src.config.metadata import RunMetadata
from src.config.params import (
    CUSTOM_AUGMENTATION,
    ConfigError,
    DatasetSpec,
    RunSpec,
    TrainParams,
    range_problem,
)
from src.config.schedule import auto_batch_lr_note, effective_batch_note, effective_lr_note
from src.config.text import config_to_text, load_config_file, parse_config_text
from src.core.errors import RequestError
from src.core.export_formats import export_format
from src.core.layout import RunIdError, run_dir
from src.data.project import LocalProject, Split, default_split, open_local_project
from src.data.reader import DatasetError, class_colors
from src.data.tiles import Slicing
from src.engine.cpus import nproc_problem
from src.export.formats import format_blocker
from src.export.onnx_export import export_blocker
from src.runs.storage import ArtifactStore
from src.setup.run_ids import new_run_id, taken_run_id


@dataclass
class TrainRequest:
    project_dir: str
    app_data_dir: str
    model: str | None = None  # zoo model name; or config_text / config_file
    config_text: str | None = None  # an edited config: trains as written, plus owned settings
    config_file: str | None = None
    base_config_file: str | None = None  # custom weights: the model's config, composed as a zoo one
    classes: list[str] | None = None  # None: every class of the project
    params: TrainParams = field(default_factory=TrainParams)
    split: Split | None = None  # None: default_split
    keep_empty_images: bool = True
    cache_dir: str | None = None
    run_id: str | None = None
    project_id: int | None = None  # the platform project it was downloaded from
    project_name: str | None = None  # its name on the platform (the folder is a cache key)


@dataclass
class Prepared:
    """A validated request: the project, the composed config and how to name the run."""

    project: LocalProject
    params: TrainParams
    split: Split
    cfg: Config
    run_id: str
    model_name: str
    notes: list[str] = field(default_factory=list)  # what the user should know before it runs
    # a new run's settings as the request gave them (src.setup.app_state); None for a resume
    app_state: dict[str, Any] | None = None

    @property
    def config_text(self) -> str:
        return config_to_text(self.cfg)

    @property
    def work_dir(self) -> Path:
        return Path(self.cfg.work_dir)


@dataclass
class _ModelSource:
    """Where a request's model comes from: a zoo entry, a custom model's config (composed like a
    zoo one), or the user's own config text (only what the app owns is applied to it)."""

    entry: zoo.ZooEntry | None = None
    base_cfg: Config | None = None
    user_cfg: Config | None = None


def _model_source(request: TrainRequest, problems: list[str]) -> _ModelSource:
    source = _ModelSource()
    own_config = bool(request.config_text or request.config_file)
    if request.base_config_file:
        try:
            source.base_cfg = load_config_file(request.base_config_file)
        except ConfigError as exc:
            problems.append(f"the custom model's config does not parse: {exc}")
    elif request.model and not own_config:
        try:
            source.entry = zoo.get_model(request.model, request.params.task)
        except zoo.ZooError as exc:
            problems.append(str(exc))
    elif not own_config:
        problems.append("no model given: pick a zoo model (see `python -m src.cli zoo`)")
    weights_path = request.params.weights_path or ""
    if (
        request.params.weights == "custom"
        and weights_path
        and "://" not in weights_path  # URLs are fetched at load time
        and not Path(weights_path).is_file()
    ):
        problems.append(f"checkpoint {weights_path} does not exist: check the --weights path")
    if own_config:
        try:
            source.user_cfg = (
                parse_config_text(request.config_text)
                if request.config_text
                else load_config_file(request.config_file)
            )
        except ConfigError as exc:
            problems.append(f"the config does not parse: {exc}")
        else:
            model = source.user_cfg.get("model")
            if not (isinstance(model, dict) and model.get("type")):
                problems.append(
                    "the config defines no model: it needs model = dict(type=..., ...); start "
                    "from the composed config"
                )
    return source


def _machine_problems(params: TrainParams) -> list[str]:
    """What this machine cannot give the run: more CPU processes than it has cores (a count
    outside nproc's range is the range check's to say)."""
    if params.gpus or range_problem("nproc", params.nproc) is not None:
        return []
    problem = nproc_problem(params.nproc)
    return [problem] if problem else []


def _entry_problems(entry: zoo.ZooEntry, params: TrainParams) -> list[str]:
    """Why this zoo model cannot train with these settings here (empty: it can)."""
    problems = []
    if entry.unsupported:
        problems.append(f"{entry.architecture} cannot be trained here: {entry.unsupported}")
    if entry.gpu_only and params.device == "cpu":
        problems.append(f"{entry.architecture} needs a GPU: {entry.gpu_only}")
    if min(params.input_size) < entry.min_input_size:
        problems.append(
            f"{entry.architecture} needs an input size of at least {entry.min_input_size} px, "
            f"got {min(params.input_size)}"
        )
    if entry.missing_packages():
        problems.append(
            f"{entry.architecture} needs {', '.join(entry.missing_packages())}, which are not "
            "installed here (the Docker image has them): pick another architecture"
        )
    if params.weights == "pretrained" and not entry.weights_url:
        problems.append(f"{entry.model} has no pretrained weights: use --from-scratch")
    return problems


def _frozen_stages_problem(cfg: Config) -> str | None:
    """Whether the model's backbone has ``frozen_stages`` (its class or, through ``**kwargs``,
    a base class takes it): refused with the reason where it has not."""
    import inspect

    from mmdet.registry import MODELS

    backbone = (cfg.model.get("backbone") or {}).get("type")
    cls = MODELS.get(backbone) if isinstance(backbone, str) else None
    for klass in inspect.getmro(cls) if cls is not None else ():
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters
        if "frozen_stages" in parameters:
            return None
        if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            break
    return (
        f"frozen_stages cannot be set for this model: its backbone {backbone} has no frozen "
        "stages (leave frozen_stages unset)"
    )


def _custom_augmentation_problems(params: TrainParams) -> list[str]:
    """A custom pipeline whose text is well formed: does each transform build?"""
    if params.augmentation != CUSTOM_AUGMENTATION or params.augmentation_problems():
        return []
    from src.data.mmdet_dataset import transform_problems

    found = transform_problems(augmentation_transforms(params))
    return ["custom augmentation pipeline: " + "; ".join(found)] if found else []


def _class_problems(classes: list[str], project: LocalProject) -> list[str]:
    unknown = [c for c in classes if c not in project.classes]
    if not unknown:
        return []
    return [
        f"classes {unknown} match nothing in the project; it has: "
        f"{', '.join(project.classes) or 'no classes'}"
    ]


def _ignore_problems(ignore: tuple[str, ...], project: LocalProject) -> list[str]:
    """Ignore-region names must be classes or tags of the project (a typo would ignore nothing)."""
    from src.data.project import tags_of

    known = set(project.classes) | set(tags_of(project))
    unknown = [n for n in ignore if n not in known]
    if not unknown:
        return []
    return [
        f"ignore regions {unknown} are neither classes nor tags of the project; it has classes "
        f"{', '.join(project.classes) or 'none'} and tags {', '.join(tags_of(project)) or 'none'}"
    ]


def prepare(request: TrainRequest, store: ArtifactStore | None = None) -> Prepared:
    """Validate and compose; raises :class:`RequestError` listing every problem found.
    ``store``: where runs are uploaded (Team Files): a new run's id must not be a run there."""
    problems: list[str] = []
    project = None
    try:
        project = open_local_project(
            request.project_dir, name=request.project_name, project_id=request.project_id
        )
    except DatasetError as exc:
        problems.append(str(exc))
    source = _model_source(request, problems)
    classes = list(request.classes or [])
    if project is not None:
        # every class by default, but for the classes named as ignore regions
        classes = classes or [c for c in project.classes if c not in request.params.ignore]
        problems.extend(_class_problems(classes, project))
        problems.extend(_ignore_problems(request.params.ignore, project))
    params = replace(request.params, classes=tuple(classes))
    if source.entry is not None:
        problems.extend(_entry_problems(source.entry, request.params))
    problems.extend(p for p in params.validate() if p not in problems)
    problems.extend(_machine_problems(params))
    problems.extend(_custom_augmentation_problems(params))
    split = None
    if project is not None:
        try:
            split = request.split or default_split(project, seed=params.seed)
        except DatasetError as exc:
            problems.append(str(exc))
    if request.run_id is not None:
        try:
            run_dir(request.app_data_dir, request.run_id)
        except RunIdError as exc:
            problems.append(str(exc))
    if problems:
        raise RequestError(problems)
    assert project is not None and split is not None

    run_id = request.run_id or new_run_id(request.app_data_dir)
    notes = []
    if request.run_id:
        problem, note = taken_run_id(request.app_data_dir, run_id, store, project.name)
        if problem:
            raise RequestError([problem])
        notes += [note] if note else []
    data = _dataset_spec(request, project, split)
    run = RunSpec(work_dir=str(run_dir(request.app_data_dir, run_id)))
    try:
        cfg, model_name = _compose(request, source, params, data, run, project)
    except ConfigError as exc:
        raise RequestError([str(exc)]) from None
    except Exception as exc:  # an edited config of any shape: a message, not a 500
        if source.entry is not None:
            raise
        raise RequestError([f"the config cannot be used: {type(exc).__name__}: {exc}"]) from None
    if problem := _composed_problem(params, cfg):
        raise RequestError([problem])
    return Prepared(project, params, split, cfg, run_id, model_name, notes)


def _dataset_spec(request: TrainRequest, project: LocalProject, split: Split) -> DatasetSpec:
    return DatasetSpec(
        project_dir=str(project.directory),
        train_datasets=split.train_datasets,
        val_datasets=split.val_datasets,
        train_items=split.train_items,
        val_items=split.val_items,
        keep_empty_images=request.keep_empty_images,
        cache_dir=request.cache_dir,
        project_id=project.project_id,
        project_name=project.name,
        class_colors=class_colors(project.directory),
    )


def _composed_problem(params: TrainParams, cfg: Config) -> str | None:
    """Why the composed config cannot train with these settings (None: it can)."""
    if params.frozen_stages is not None and (problem := _frozen_stages_problem(cfg)):
        return problem
    if problem := _slicing_problem(cfg):
        return problem
    if params.export and (problem := export_blocker(cfg)):
        return f"export {', '.join(params.export)}: {problem}"
    return None


def _slicing_problem(cfg: Config) -> str | None:
    """A sliced config (the settings', or the Editor's text) that cannot train: a ``slicing``
    that does not hold, or a sliced validation set scored by a metric that does not merge the
    tiles' predictions on whole images (then every tile would count as an image)."""
    for key in ("train_dataloader", "val_dataloader"):
        dataset = train_dataset_cfg(cfg) if key == "train_dataloader" else cfg[key].dataset
        try:
            Slicing.of(dataset.get("slicing"))
        except (TypeError, ValueError) as exc:
            return f"{key}.dataset.slicing: {exc}"
    evaluator = cfg.get("val_evaluator") or {}
    kind = evaluator.get("type") if isinstance(evaluator, dict) else type(evaluator).__name__
    if cfg.val_dataloader.dataset.get("slicing") and kind != "SlicedCocoMetric":
        return (
            f"sliced validation needs SlicedCocoMetric (it merges the tiles' predictions on whole "
            f"images) but the config's val_evaluator is {kind}: use CocoMetric (the app turns it "
            "into SlicedCocoMetric) or turn slicing off (slice_size 0)"
        )
    return None


def _compose(
    request: TrainRequest,
    source: _ModelSource,
    params: TrainParams,
    data: DatasetSpec,
    run: RunSpec,
    project: LocalProject,
) -> tuple[Config, str]:
    """The config that trains, and the model's name, from whichever source the request has."""
    if source.base_cfg is not None:
        previous = RunMetadata.of(source.base_cfg)
        cfg = build_config(
            source.base_cfg,
            params,
            data,
            run,
            model_name=(
                previous.model_name
                if METADATA_KEY in source.base_cfg
                else Path(request.base_config_file).stem
            ),
            architecture=previous.architecture,
            min_input_size=previous.min_input_size,
        )
        return cfg, RunMetadata.of(cfg).model_name
    if source.user_cfg is not None:
        owned = dict(
            task_type=params.task,
            project_id=project.project_id,
            project_name=project.name,
            classes=params.classes,
            auto_size=(),  # the edited text trains as written: its batch size, its workers
        )
        cfg = apply_owned_settings(source.user_cfg, params, data, run, metadata=owned)
        return cfg, RunMetadata.of(cfg).model_name
    assert source.entry is not None
    return compose_from_zoo(source.entry, params, data, run), source.entry.model


ProjectResolver = Callable[[int | None, str], LocalProject]


def local_project_resolver(project_id: int | None, project_dir: str) -> LocalProject:
    """Headless: a run's project is where it was (a resume's, src.setup.resume)."""
    return open_local_project(project_dir, project_id=project_id)


def setting_notes(prepared: Prepared) -> list[str]:
    """What the composed settings mean beyond their values, as the CLI prints them and the
    Compose step shows them: the effective batch over several devices, the learning rate
    ``auto_scale_lr`` trains with, or how the LR follows a batch the app chooses on the GPU
    (src.engine.autosize)."""
    params = prepared.params
    notes = [effective_batch_note(params)]
    base = int(prepared.cfg.auto_scale_lr.base_batch_size)
    if params.auto_scale_lr and not auto_batch_lr_note(params, base):
        notes.append(effective_lr_note(params, base))
    notes.append(auto_batch_lr_note(params, base))  # the batch chosen on the GPU: the LR too
    for name in params.export_formats:
        if blocker := format_blocker(name):
            notes.append(f"the {export_format(name).title} export will be skipped: {blocker}")
    return [note for note in notes if note]
