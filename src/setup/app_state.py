"""A run's settings as ``app_state.json``: what a new run needs to be set up as this one was.

Every run writes it into its folder (and so into the uploaded one, where ``experiment_info.json``
names it, as the SDK's ``ExperimentInfo.app_state``). Reading it starts a run again from an
experiment: the platform's Experiments page (``modal.state.trainTaskId`` and ``trainMode``), the
UI's "Start from an experiment", ``train --from-run`` and the API's ``from_run``.

The state's settings are an HTTP API request body (``src.setup.requests``: the one description of a
new run every door can turn into a request), plus where it came from: the run, its project (id,
name, version, datasets) and the custom weights' config. Reading is lenient, as a user expects of
an old experiment: a state of another version, or one whose classes, datasets or images are gone
from the project, is loaded as far as it holds, and each thing dropped is said in ``notes``.

Mode ``continue`` (the platform's word; not a resume, which continues the same run exactly) starts a
new run with the same settings from the experiment's best checkpoint, as custom weights.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from src.config import zoo
from src.config.doors import DOORS
from src.config.editor import ConfigDraft
from src.config.params import TrainParams, jsonable
from src.core.errors import RequestError
from src.core.layout import APP_STATE, EXPERIMENT_INFO
from src.data.project import LocalProject
from src.data.reader import list_items
from src.runs.atomic_files import write_json_atomic
from src.setup.prepare import Prepared, TrainRequest
from src.setup.requests import param_values, request_from_json

STATE_VERSION = 1
MODES = ("new", "continue")
# the body's fields a state fills (src.setup.requests.request_from_json knows each)
_BODY_FIELDS = ("task", "model", "config", "classes", "split", "hyperparameters",
                "keep_empty_images")  # fmt: skip


def hyperparameters_json(params: TrainParams) -> dict[str, Any]:
    """``params`` as the HTTP API's ``hyperparameters`` (task and classes have fields of their
    own): a run's recorded settings, and the body the page's Audit card sends."""
    return {
        name: value
        for name, value in jsonable(vars(params)).items()
        if DOORS[name].api and name not in ("task", "classes")
    }


def app_state_of(
    request: TrainRequest, prepared: Prepared, project_version: int | None = None
) -> dict[str, Any]:
    """The state of a new run: ``request`` as the user gave it (custom weights by the path they
    chose, not the copy fetched into app data), the classes and split ``prepared`` resolved."""
    project, params, split = prepared.project, prepared.params, prepared.split
    hyper = hyperparameters_json(params)
    if request.params.weights_path:
        hyper["weights_path"] = request.params.weights_path
    return {
        "app_state_version": STATE_VERSION,
        "run_id": prepared.run_id,
        "saved_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "model_name": prepared.model_name,
        "project": {
            "id": project.project_id,
            "name": project.name,
            "version_id": project_version,
            "dir": None if project.project_id is not None else str(project.directory),
            "datasets": list(project.datasets),
        },
        "task": params.task,
        "model": request.model,
        "config": request.config_text,
        "base_config": request.base_config_file,
        "classes": list(params.classes),
        "keep_empty_images": request.keep_empty_images,
        "split": {
            "train": split.train_datasets,
            "val": split.val_datasets,
            "train_items": split.train_items,
            "val_items": split.val_items,
            "description": split.description,
        },
        "hyperparameters": hyper,
    }


def write_app_state(work_dir: str | Path, state: dict[str, Any]) -> Path:
    """Into the run's folder, whole or not at all (a crash leaves the previous file)."""
    path = Path(work_dir) / APP_STATE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(state, path)
    return path


def record_epochs(work_dir: str | Path, epochs: int) -> None:
    """A resume for other epochs: the run's settings say what it trains for now (a run of an
    older version without ``app_state.json`` stays without)."""
    path = Path(work_dir) / APP_STATE
    if not path.is_file():
        return
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("hyperparameters", {}).get("epochs") != epochs:
        state.setdefault("hyperparameters", {})["epochs"] = int(epochs)
        write_app_state(work_dir, state)


class StateError(RequestError):
    """A file that is not a state this app can start from (unreadable, or not ours)."""


def parse_app_state(text: str, where: str) -> dict[str, Any]:
    try:
        state = json.loads(text)
    except ValueError as exc:
        raise StateError([f"{where} is not valid JSON ({exc}): not an app state"]) from None
    except RecursionError:
        raise StateError(
            [f"{where} is nested too deeply to be an app state: start from a run this app trained"]
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("hyperparameters"), dict):
        raise StateError(
            [f"{where} is not an app state of this app (no hyperparameters): start from a run "
             "this app trained"]
        )  # fmt: skip
    return state


def read_state_folder(folder: str | Path) -> tuple[dict[str, Any], str | None]:
    """A run folder on this machine (an uploaded run, or a copy of one): its state and its best
    checkpoint (None when the folder has none)."""
    path = Path(folder) / APP_STATE
    if not path.is_file():
        raise StateError(
            [f"{folder} has no {APP_STATE}: give the folder of a run this app uploaded, or its "
             "run id"]
        )  # fmt: skip
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise StateError([f"{path} is not UTF-8 text: not an app state"]) from None
    state = parse_app_state(text, str(path))
    try:
        info = json.loads((Path(folder) / EXPERIMENT_INFO).read_text(encoding="utf-8"))
        best = Path(folder) / str(info["best_checkpoint"])
    except (OSError, ValueError, KeyError, TypeError):
        return state, None
    return state, str(best.resolve()) if best.is_file() else None


@dataclass
class LoadedState:
    """A state read against the project to train on: a request body and what was dropped."""

    body: dict[str, Any]  # an HTTP API body (src.setup.requests), without "project"
    source: str  # where it came from, in words ("run 7 (rtmdet_tiny) on project 'cars'")
    run_id: str
    mode: str = "new"
    base_config: str | None = None  # custom weights' config, as the run had it
    notes: list[str] = field(default_factory=list)
    project_id: int | None = None  # the experiment's project
    project_dir: str | None = None  # headless: where its project was
    continue_from: str | None = None  # mode continue: the run's best checkpoint

    def with_overrides(
        self, overrides: dict[str, Any] | None = None, as_trained: bool = False
    ) -> dict[str, Any]:
        """The body to train: the run's settings, its best checkpoint as custom weights
        (continue), then what a door gave besides (hyperparameters merged key by key);
        ``as_trained``: the run's settings alone."""
        overrides = {} if as_trained else dict(overrides or {})
        body = {**self.body, **{k: v for k, v in overrides.items() if k != "hyperparameters"}}
        body["hyperparameters"] = dict(self.body.get("hyperparameters", {}))
        if self.continue_from and not as_trained:
            body["hyperparameters"].update(weights="custom", weights_path=self.continue_from)
        body["hyperparameters"].update(overrides.get("hyperparameters") or {})
        return body

    @property
    def weights_config(self) -> str | None:
        """The config of the weights it trains from: the run's own beside its best checkpoint
        (continue: None, found there), else the custom weights' config as the run had it."""
        return None if self.continue_from else self.base_config


def load_app_state(
    state: dict[str, Any],
    project: LocalProject,
    mode: str = "new",
    best_checkpoint: str | None = None,
) -> LoadedState:
    """``state`` (as :func:`parse_app_state` returns it) against ``project``; ``mode``
    ``continue`` starts from ``best_checkpoint`` (the run's best, where the store has it)."""
    if mode not in MODES:
        raise RequestError([f"mode {mode!r} is unknown: use {' or '.join(MODES)}"])
    notes: list[str] = []
    version = state.get("app_state_version")
    if version == 0:
        notes.append(
            f"the run has no {APP_STATE} (an older version of the app trained it): its model, "
            "classes and hyperparameters are loaded; the split is the default one"
        )
    elif not isinstance(version, int) or version > STATE_VERSION:
        notes.append(
            f"the state was written by another version of the app (format {version!r}, this app "
            f"reads {STATE_VERSION}): what this version knows is loaded"
        )
    origin = state.get("project") if isinstance(state.get("project"), dict) else {}
    run_id = str(state.get("run_id") or "?")
    source = f"run {run_id} ({state.get('model_name') or state.get('model') or '?'}) on project "
    source += repr(str(origin.get("name") or "?"))
    if origin.get("id") not in (None, project.project_id) and project.project_id is not None:
        notes.append(
            f"the experiment trained on project {origin.get('name')!r} (id {origin['id']}); "
            f"this run trains on {project.name!r} (id {project.project_id}): classes and "
            "the split are matched by name"
        )
    body: dict[str, Any] = {k: state[k] for k in _BODY_FIELDS if k in state}
    body["classes"] = _classes(state.get("classes"), project, notes)
    body["split"] = _split(state.get("split"), project, notes)
    body["hyperparameters"] = _hyperparameters(state["hyperparameters"], notes)
    model = body.get("model")
    if model is not None and not _known_model(model, str(body.get("task", ""))):
        notes.append(f"model {model!r} is not in this app's zoo: choose a model")
        body["model"] = None
    base_config = state.get("base_config") if isinstance(state.get("base_config"), str) else None
    if mode == "continue" and not best_checkpoint:
        raise RequestError(
            [f"run {run_id} has no best checkpoint in the store: continue needs one "
             "(start a new run from its settings instead)"]
        )  # fmt: skip
    return LoadedState(
        body={k: v for k, v in body.items() if v is not None},
        source=source,
        run_id=run_id,
        mode=mode,
        base_config=base_config,
        notes=notes,
        project_id=origin.get("id"),
        project_dir=origin.get("dir") if isinstance(origin.get("dir"), str) else None,
        continue_from=best_checkpoint if mode == "continue" else None,
    )


def _known_model(name: str, task: str) -> bool:
    try:
        zoo.get_model(name, task or None)
    except (KeyError, ValueError):
        return False
    return True


def _classes(classes: Any, project: LocalProject, notes: list[str]) -> list[str] | None:
    if not isinstance(classes, list) or not classes:
        return None
    kept = [c for c in classes if isinstance(c, str) and c in project.classes]
    gone = [str(c) for c in classes if c not in kept]
    if gone and kept:
        notes.append(f"classes {', '.join(gone)} are not in project {project.name!r}: dropped")
    elif gone:
        notes.append(
            f"none of the experiment's classes ({', '.join(gone)}) is in project "
            f"{project.name!r}: every class of the project is selected instead"
        )
        return None
    return kept


def _split(spec: Any, project: LocalProject, notes: list[str]) -> dict[str, Any] | None:
    """The split as far as the project still has its datasets and images; None (the default
    split) when a side is left empty."""
    if not isinstance(spec, dict):
        return None
    datasets, items = set(project.datasets), {n for n, _ in list_items(project.directory)}
    kept: dict[str, Any] = {"description": str(spec.get("description") or "from the experiment")}
    for key, known, what in (
        ("train", datasets, "datasets"), ("val", datasets, "datasets"),
        ("train_items", items, "images"), ("val_items", items, "images"),
    ):  # fmt: skip
        names = spec.get(key)
        if not isinstance(names, list):
            continue
        present = [n for n in names if isinstance(n, str) and n in known]
        if len(present) < len(names):
            gone = len(names) - len(present)
            shown = ", ".join([str(n) for n in names if n not in present][:5])
            notes.append(
                f"{gone} {what} of the experiment's {key.split('_')[0]} split are not in the "
                f"project ({shown}{', ...' if gone > 5 else ''}): dropped"
            )
        kept[key] = present
    for side in ("train", "val"):
        if not (kept.get(side) or kept.get(f"{side}_items")):
            notes.append(
                f"the experiment's {side} split has nothing left in this project: the default "
                "split is used instead"
            )
            return None
    return kept


def _hyperparameters(hyper: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """The hyperparameters this version takes, checked as the API checks them; the others
    (a newer version's, or ill-typed) dropped and named."""
    problems: list[str] = []
    values = param_values(hyper, problems)
    notes.extend(f"{problem}: dropped" for problem in problems)
    return {k: v for k, v in jsonable(values).items()}


def from_run_fields(body: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """An API body's ``from_run`` (a run id) and ``from_run_mode``, and the rest of the body:
    what overrides the run's settings. A ``RequestError`` for ill-typed ones or a resume."""
    run_id, mode = body.get("from_run"), body.get("from_run_mode", "new")
    problems = []
    if not isinstance(run_id, str) or not run_id:
        problems.append(f"from_run must be a run id (a string), got {json.dumps(run_id)}")
    if mode not in MODES:
        problems.append(f"from_run_mode must be {' or '.join(MODES)}, got {json.dumps(mode)}")
    if "resume" in body:
        problems.append(
            "from_run and resume contradict: from_run starts a new run from a run's settings, "
            "resume continues that run itself (drop one)"
        )
    if problems:
        raise RequestError(problems)
    rest = {k: v for k, v in body.items() if k not in ("from_run", "from_run_mode")}
    return str(run_id), str(mode), rest


def request_from_state(
    loaded: LoadedState,
    overrides: dict[str, Any],
    app_data_dir: str,
    project: LocalProject,
    compose: Callable[[TrainRequest], Prepared],
) -> TrainRequest:
    """The new run's request: the state's settings with ``overrides`` (an API body's fields,
    checked as the API checks them) on ``project``.

    A state with an edited config trains that text. What changes its settings (the fields given
    besides, continue's weights) is put into it as the Editor's "Apply these changes" does
    (``ConfigDraft``): the change it makes to the config composed from the state's settings is
    applied to the edited text, the other edits kept, and ``loaded.notes`` lists each key.
    ``compose`` is the controller's."""
    overrides = {k: v for k, v in overrides.items() if k != "project"}
    request = request_from_json(loaded.with_overrides(overrides), app_data_dir, project)
    own_model = any(overrides.get(k) for k in ("model", "config"))
    request = replace(request, base_config_file=None if own_model else loaded.weights_config)
    settings = [v for k, v in overrides.items() if k not in ("run_id", "config")]
    edited = loaded.body.get("config")
    if edited is None or "config" in overrides:
        return request
    if not loaded.continue_from and all(v in (None, {}) for v in settings):
        return request
    trained = request_from_json(loaded.with_overrides(as_trained=True), app_data_dir, project)
    base = compose(replace(trained, base_config_file=loaded.base_config, config_text=None))
    draft = ConfigDraft(base.config_text, edited)
    draft.settings_changed(compose(replace(request, config_text=None)).config_text)
    if draft.pending is not None:
        loaded.notes.extend(
            f"the experiment's edited config changed by the settings given: {line}"
            for line in draft.pending.describe()
        )
    return replace(request, config_text=draft.apply_pending())
