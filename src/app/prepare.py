"""Request preparation: a request in, a composed config out (a new run, or a resumed one).

Called through ``TrainingController`` (and by the zoo probe), so the CLI, the widgets UI and the
HTTP API validate and compose the same way.
Every problem with a request is collected and reported together (``RequestError``), before
anything is written.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mmengine.config import Config

from src.app.augment_preview import check_pipeline_on_an_image
from src.config import zoo
from src.config.augmentations import augmentation_transforms
from src.config.compose import (
    apply_owned_settings,
    build_config,
    compose_from_zoo,
    relocate_run,
    train_dataset_cfg,
)
from src.config.input_shapes import padding_problems
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
from src.config.schedule import devices, replan_epochs
from src.config.text import config_to_text, load_config_file, parse_config_text
from src.core.errors import RequestError
from src.core.layout import (
    ARTIFACTS_ROOT,
    CHECKPOINTS,
    EXPERIMENT_INFO,
    RESUME_DIR,
    RUN_CONFIG,
    STATE_FILE,
    RunIdError,
    is_run_dir,
    run_dir,
)
from src.core.tasks import SEGMENTATION
from src.data.project import LocalProject, Split, default_split, open_local_project
from src.data.reader import BOX_GEOMETRIES, MASK_GEOMETRIES, DatasetError, class_colors
from src.data.tiles import Slicing
from src.engine.onnx_export import export_blocker
from src.engine.shape_check import check_input_shapes
from src.runs.checkpoint_io import CheckpointError, peek_checkpoint
from src.runs.checkpoints import find_resumable_runs, newest_resumable_checkpoint
from src.runs.info import APP_DATA, RunInfo
from src.runs.remote import fetch_remote_run, find_remote_runs
from src.runs.storage import ArtifactStore, UploadError, artifacts_dir

logger = logging.getLogger(__name__)


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
    # a new run's settings as the request gave them (src.app.app_state); None for a resume
    app_state: dict[str, Any] | None = None

    @property
    def config_text(self) -> str:
        return config_to_text(self.cfg)

    @property
    def work_dir(self) -> Path:
        return Path(self.cfg.work_dir)


def new_run_id(app_data_dir: str | Path | None = None, base: str | None = None) -> str:
    """``base`` (on the platform: the task id) or a timestamp; with ``app_data_dir``, suffixed
    (``_2``, ...) until no run folder has it."""
    base = base or time.strftime("%Y%m%d_%H%M%S")
    if app_data_dir is None:
        return base
    run_id, n = base, 1
    while (Path(app_data_dir) / run_id).exists():
        n += 1
        run_id = f"{base}_{n}"
    return run_id


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


def taken_run_id(
    app_data_dir: str | Path,
    run_id: str,
    store: ArtifactStore | None = None,
    project_name: str = "",
) -> tuple[str | None, str | None]:
    """Whether a new run may take ``run_id``: (the problem, a note), each None when there is
    none. A run id names one run everywhere: in app data and, with ``store``, in Team Files
    (:func:`uploaded_run_folder`), where app data is emptied after each upload.

    In app data a run with a checkpoint keeps its id (resume it); a file is not a run; the
    folder of a run that never saved a checkpoint (it failed before its first, and cannot be
    resumed) is taken over by the new run, which writes its own config and settings there."""
    path = Path(app_data_dir) / run_id
    if path.exists() and not path.is_dir():
        return (
            f"run id {run_id!r} names a file in {app_data_dir}, not a run folder: pick another id",
            None,
        )
    if (path / RUN_CONFIG).exists() and saved_checkpoints(path):
        return f"run {run_id} already exists in {app_data_dir}: resume it or pick another id", None
    if store is not None:
        try:
            folder = uploaded_run_folder(store, run_id, project_name)
        except (UploadError, OSError) as exc:
            return (
                f"cannot check {store.describe(ARTIFACTS_ROOT)} for a run {run_id} ({exc}): "
                "try again",
                None,
            )
        if folder is not None:
            return (
                f"run {run_id} already exists in {store.describe(folder)} (a new run would "
                "replace it there): pick another id, or resume that run",
                None,
            )
    if not (path / RUN_CONFIG).exists():
        return None, None
    return None, (
        f"run {run_id} was started before but never saved a checkpoint (nothing to resume): "
        f"this run starts over in {path}"
    )


def uploaded_run_folder(store: ArtifactStore, run_id: str, project_name: str) -> str | None:
    """The store's folder of a run ``run_id`` (None: none): the folder this run would upload
    into (``artifacts_dir``) when it holds any file, or a ``<run_id>_<other project>`` folder
    whose ``experiment_info.json`` or ``resume/state.json`` records that id (``a_b_p`` may be
    run ``a`` of project ``b_p`` or run ``a_b`` of ``p``: its files say which). One listing of
    ``ARTIFACTS_ROOT``; files are read only for folders whose name starts with the id."""
    own = artifacts_dir(run_id, project_name)
    files = [f.path for f in store.list(ARTIFACTS_ROOT)]
    if any(path.startswith(f"{own}/") for path in files):
        return own
    prefix = f"{ARTIFACTS_ROOT}/{run_id}_"
    folders = sorted({p[: p.index("/", len(prefix))] for p in files
                      if p.startswith(prefix) and "/" in p[len(prefix):]})  # fmt: skip
    for folder in folders:
        listed = {p for p in files if p.startswith(f"{folder}/")}
        if _recorded_run_id(store, folder, listed) == run_id:
            return folder
    return None


def _recorded_run_id(store: ArtifactStore, folder: str, listed: set[str]) -> str | None:
    """The run id a store folder's own files record: ``experiment_info.json`` (an uploaded
    run: the first word of its ``experiment_name``) or ``resume/state.json`` (a synced one)."""
    for name, key in (
        (EXPERIMENT_INFO, "experiment_name"),
        (f"{RESUME_DIR}/{STATE_FILE}", "run_id"),
    ):
        if f"{folder}/{name}" not in listed:
            continue
        with tempfile.TemporaryDirectory() as scratch:
            try:
                local = store.download(f"{folder}/{name}", Path(scratch) / "recorded.json")
                value = json.loads(local.read_text(encoding="utf-8"))
            except (UploadError, OSError, ValueError, RecursionError):
                continue
        words = str(value.get(key) or "").split() if isinstance(value, dict) else []
        if words:
            return words[0]
    return None


def saved_checkpoints(work_dir: str | Path) -> list[Path]:
    """The checkpoints a run folder holds (mmengine's ``*.pth``)."""
    return sorted(Path(work_dir).glob(CHECKPOINTS))


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


def build_datasets(prepared: Prepared) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Both splits as the run will build them (annotations parsed, through the cache, images
    checked on disk): ``(stats per split, datasets, problems)``. What fails here would fail the
    run later: an empty split, no object of the selected classes (e.g. a class whose objects
    are all points), a missing image."""
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    import src.data.mmdet_dataset  # noqa: F401  (registers SuperviselyDataset)

    init_default_scope(prepared.cfg.get("default_scope", "mmdet"))
    stats: dict[str, Any] = {}
    datasets: dict[str, Any] = {}
    problems: list[str] = []
    for split in ("train", "val"):
        # a check writes nothing into the run folder (the run writes its COCO ground truth)
        own = (
            train_dataset_cfg(prepared.cfg)
            if split == "train"
            else prepared.cfg.val_dataloader.dataset
        )
        dataset_cfg = {
            **own, "coco_gt_file": None,
            "serialize_data": False,  # a check: no packing for data-loader workers
        }  # fmt: skip
        try:
            dataset = DATASETS.build(dataset_cfg)
            stats[split] = dataset.stats.as_dict()
            if dataset.tile_stats is not None:
                stats[split]["slicing"] = dataset.tile_stats.as_dict() | {
                    "size": dataset.slicing.size, "overlap": dataset.slicing.overlap,
                }  # fmt: skip
            if len(dataset) == 0:
                problems.append(f"the {split} split has no images")
            elif dataset.stats.objects == 0:
                skipped = dict(dataset.stats.skipped)
                why = f" (skipped: {skipped})" if skipped else ""
                segm = prepared.params.task == SEGMENTATION
                problems.append(
                    f"the {split} split has no usable objects of the selected classes{why}: "
                    f"{prepared.params.task} needs shapes of type "
                    + ", ".join(MASK_GEOMETRIES if segm else BOX_GEOMETRIES)
                )
            else:
                datasets[split] = dataset
            if split == "train" and len(dataset):
                balance = class_balance_stats(prepared.cfg, dataset)
                if balance is not None:
                    stats[split]["class_balance"] = balance
        except Exception as exc:
            problems.append(f"{split} dataset: {exc}")
    if "train" in datasets and prepared.params.augmentation == CUSTOM_AUGMENTATION:
        try:  # a transform that builds may still fail on an image (wrong keys, sizes)
            check_pipeline_on_an_image(datasets["train"], prepared.params)
        except ConfigError as exc:
            problems.append(str(exc))
    return stats, datasets, problems


def class_balance_stats(cfg: Config, dataset: Any) -> dict[str, Any] | None:
    """With class balance (mmdet's ``ClassBalancedDataset`` around the train set): images per
    class before and after the repeats, and the images in all (None without it)."""
    wrapper = cfg.train_dataloader.dataset
    if wrapper.get("type") != "ClassBalancedDataset":
        return None
    from collections import Counter

    from mmengine.dataset import ClassBalancedDataset

    from src.engine import patches

    patches.apply()
    balanced = ClassBalancedDataset(dataset=dataset, oversample_thr=wrapper.oversample_thr)
    repeats = Counter(balanced.repeat_indices)
    classes = list(dataset.metainfo["classes"])
    before, after = Counter(), Counter()
    for index in range(len(dataset)):
        for label in set(dataset.get_cat_ids(index)):
            before[classes[label]] += 1
            after[classes[label]] += repeats[index]
    return {
        "oversample_thr": float(wrapper.oversample_thr),
        "images": [len(dataset), len(balanced)],
        "images_per_class": {c: [before[c], after[c]] for c in classes},
    }


def check_data(prepared: Prepared) -> None:
    """:func:`build_datasets`'s problems as a RequestError, before a run is started; what the
    user should know about the data (:func:`data_notes`) into ``prepared.notes``."""
    stats, _, problems = build_datasets(prepared)
    if problems:
        raise RequestError(problems)
    prepared.notes.extend(n for n in data_notes(prepared.params, stats) if n not in prepared.notes)


def data_notes(params: TrainParams, stats: dict[str, Any]) -> list[str]:
    """What trains but not as the user may think: a selected class without an object in the
    train split is trained on nothing (class balance cannot repeat images that do not exist)."""
    found = (stats.get("train") or {}).get("objects_per_class") or {}
    empty = [name for name in params.classes if not found.get(name)]
    if not found or not empty:
        return []
    balance = (
        f"; class balance ({params.class_balance:g}) repeats images that hold a class, and none "
        "holds them"
        if params.class_balance
        else ""
    )
    return [
        f"classes {', '.join(map(repr, empty))} have no objects in the train split: the model "
        f"cannot learn them{balance} (add examples, or leave them out of the classes)"
    ]


def _weights_line(params: TrainParams) -> str:
    if params.weights == "custom":
        return f"custom: {params.weights_path}"
    return "random (from scratch)" if params.weights == "scratch" else "pretrained (the zoo's)"


def _schedule_line(params: TrainParams) -> str:
    batch = "auto" if params.train_batch_size is None else params.train_batch_size
    return (
        f"{params.epochs} epochs, batch {batch}, {params.optimizer} lr {params.lr:g} "
        f"({params.scheduler}), input {params.input_size[0]}x{params.input_size[1]}, "
        f"seed {params.seed}"
    )


def dry_run(prepared: Prepared) -> dict[str, Any]:
    """Build both datasets and the model without training: what would train, and how big."""
    from mmdet.registry import MODELS

    from src.engine import patches

    patches.apply()
    summary: dict[str, Any] = {
        "run_id": prepared.run_id,
        "model": prepared.model_name,
        "task": prepared.params.task,
        "classes": list(prepared.params.classes),
        "split": prepared.split.description,
        "work_dir": str(prepared.work_dir),
        "weights": _weights_line(prepared.params),
        "schedule": _schedule_line(prepared.params),
    }
    stats, datasets, problems = build_datasets(prepared)
    summary.update(stats)
    model = None
    try:
        # a copy: some detectors (Deformable DETR) write into the config they are built from
        model = MODELS.build(copy.deepcopy(prepared.cfg.model))
        summary["parameters"] = sum(p.numel() for p in model.parameters())
    except Exception as exc:
        problems.append(f"model: {type(exc).__name__}: {exc}")
    padding = padding_problems(prepared.cfg)
    summary["warnings"] = padding + data_notes(prepared.params, stats)
    if model is not None and not problems:
        # the project's extreme images through the real pipelines and model, before any training
        checks = check_input_shapes(model, datasets)
        summary["input_shapes"] = [check.describe() for check in checks]
        failed = [check for check in checks if check.error]
        problems.extend(
            f"the model cannot take {check.split} image {check.item}: {check.describe()}"
            for check in failed
        )
        if failed:
            problems.extend(padding)  # the likely cause, with what to set
    if problems:
        raise RequestError(problems)
    return summary


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


ProjectResolver = Callable[[int | None, str], LocalProject]


def local_project_resolver(project_id: int | None, project_dir: str) -> LocalProject:
    """Headless: the run's project is where it was."""
    return open_local_project(project_dir, project_id=project_id)


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
    if nproc_problem := range_problem("nproc", wanted.nproc):
        problems.insert(0, nproc_problem)
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
