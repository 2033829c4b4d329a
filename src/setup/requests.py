"""The HTTP API's JSON bodies as requests: a new run (:class:`TrainRequest`) or a resume
(:class:`ResumeRequest`). Every field is checked against its ``TrainParams`` type here, in one
style: unknown or ill-typed fields become a ``RequestError`` naming each one (a 400), never a
TypeError deep in preparation (a 500).
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from typing import Any

from src.config.doors import DOORS
from src.config.params import AUTO_SIZED, RESUME_CHANGES, TrainParams, range_problem
from src.core.errors import RequestError
from src.core.tasks import DETECTION
from src.data.project import Split
from src.setup.prepare import TrainRequest


@dataclass(frozen=True)
class ResumeRequest:
    """Continue run ``target`` (None: the newest), optionally for other epochs or devices."""

    target: str | None
    epochs: int | None = None
    gpus: tuple[int, ...] | None = None
    nproc: int | None = None
    device: str | None = None


def request_from_body(
    body: dict[str, Any], app_data_dir: str, default_project: Any = None
) -> TrainRequest | ResumeRequest:
    """A ``POST /api/train`` body: with ``resume`` a :class:`ResumeRequest`, else a new run."""
    if "resume" in body:
        return resume_from_json(body)
    return request_from_json(body, app_data_dir, default_project)


def resume_from_json(body: dict[str, Any]) -> ResumeRequest:
    """``{"resume": RUN_ID | "" | null, "hyperparameters": {epochs, gpus, nproc, device}}``
    (``RESUME_CHANGES``); any other
    field contradicts the resume (the run keeps its own settings) and is refused by name."""
    target, hyper = body["resume"], body.get("hyperparameters") or {}
    problems = []
    others = sorted(set(body) - {"resume", "hyperparameters"})
    fixed = sorted(set(hyper) - set(RESUME_CHANGES)) if isinstance(hyper, dict) else []
    if others or fixed:
        named = others + [f"hyperparameters.{k}" for k in fixed]
        problems.append(
            f"resume and {', '.join(named)} contradict: a resumed run keeps its own settings; "
            f"only {', '.join(f'hyperparameters.{k}' for k in RESUME_CHANGES)} can change"
        )
    if target is not None and not isinstance(target, str):
        problems.append(f"resume must be a run id (a string), not {json.dumps(target)}")
    if not isinstance(hyper, dict):
        problems.append(f"hyperparameters must be an object, got {json.dumps(hyper)}")
        hyper = {}
    hints = typing.get_type_hints(TrainParams)
    changes = {k: hyper[k] for k in RESUME_CHANGES if hyper.get(k) is not None}
    for key, value in list(changes.items()):
        problem = json_problem(f"hyperparameters.{key}", value, hints[key])
        if problem:
            problems.append(problem)
            del changes[key]
    if "epochs" in changes and (problem := range_problem("epochs", changes["epochs"])):
        problems.append(f"hyperparameters.{problem}")
    if problems:
        raise RequestError(problems)
    if "gpus" in changes:
        changes["gpus"] = tuple(changes["gpus"])
    return ResumeRequest(target or None, **changes)


def param_values(hyper: Any, problems: list[str]) -> dict[str, Any]:
    """``hyperparameters`` → TrainParams keyword arguments; ill-typed or unknown ones are left
    out and named in ``problems``."""
    if not isinstance(hyper, dict):
        problems.append(f"hyperparameters must be an object, got {json.dumps(hyper)}")
        return {}
    hints = typing.get_type_hints(TrainParams)
    param_fields = {name for name, door in DOORS.items() if door.api}  # (src.config.doors)
    bad = sorted(set(hyper) - param_fields)
    if bad:
        problems.append(f"unknown hyperparameters {bad}; known: {sorted(param_fields)}")
    values = {k: v for k, v in hyper.items() if k in param_fields}
    if isinstance(values.get("augmentation_pipeline"), list):  # the transforms as JSON
        values["augmentation_pipeline"] = json.dumps(values["augmentation_pipeline"])
    if type(values.get("input_size")) is int:
        values["input_size"] = [values["input_size"]] * 2
    for key in (*AUTO_SIZED, "amp"):  # "auto" is null: the app chooses on the run's device
        if values.get(key) == "auto":
            values[key] = None
    for key, value in list(values.items()):
        problem = json_problem(key, value, hints[key])
        if problem:
            problems.append(problem)
            del values[key]
        elif isinstance(value, list):
            values[key] = tuple(value)
    return values


def split_from_json(spec: Any, problems: list[str] | None = None) -> Split | None:
    """``split`` → a ``Split`` (None when the body has none, or it is malformed: then named in
    ``problems``)."""
    problems = [] if problems is None else problems
    if spec is None:
        return None
    names = ("train", "val", "train_items", "val_items")
    if not isinstance(spec, dict) or any(
        spec.get(k) is not None and not _is_name_list(spec[k]) for k in names
    ):
        problems.append(
            'split must be an object of name lists, e.g. {"train": ["train"], "val": ["val"]}'
        )
        return None
    return Split(
        train_datasets=spec.get("train"),
        val_datasets=spec.get("val"),
        train_items=spec.get("train_items"),
        val_items=spec.get("val_items"),
        description=str(spec.get("description", "from the request")),
    )


def json_problem(name: str, value: Any, hint: Any) -> str | None:
    """Why a JSON value does not fit a ``TrainParams`` field's type (None: it fits). JSON has no
    tuples and no int/float split, so lists stand for tuples and whole numbers for floats;
    ``true`` is not a number."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    if hint is int:
        ok = type(value) is int
    elif hint is float:
        ok = type(value) in (int, float)
    elif hint in (str, bool):
        ok = type(value) is hint
    elif typing.get_origin(hint) is tuple:
        fixed = Ellipsis not in args
        item = args[0]  # int (sizes, epochs, GPU indices) or str (export formats)
        ok = (
            isinstance(value, list)
            and all(type(v) is item for v in value)
            and (not fixed or len(value) == len(args))
        )
        if not ok:
            kinds = "whole numbers" if item is int else "strings"
            what = f"{len(args)} {kinds}" if fixed else f"a list of {kinds}"
            return f"{name} must be {what}, got {json.dumps(value)}"
    else:
        ok = True
    kind = {int: "a whole number", float: "a number", str: "a string", bool: "true or false"}
    return None if ok else f"{name} must be {kind.get(hint, hint)}, got {json.dumps(value)}"


def _is_name_list(value: Any) -> bool:
    """A JSON list of strings (class, dataset or item names)."""
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def request_from_json(
    body: dict[str, Any], app_data_dir: str, default_project: Any = None
) -> TrainRequest:
    """The HTTP API's JSON → TrainRequest; unknown or ill-typed fields → RequestError (a 400
    that names the field), never a TypeError deep in preparation (a 500).

    Without ``project`` in the body, ``default_project`` (a ``LocalProject``) trains."""
    problems: list[str] = []
    if not isinstance(body, dict):
        raise RequestError(["the request body must be a JSON object"])
    known = {"project", "task", "model", "classes", "split", "hyperparameters", "config",
             "keep_empty_images", "run_id"}  # fmt: skip
    unknown = sorted(set(body) - known)
    if unknown:
        problems.append(f"unknown fields {unknown}; known: {sorted(known)}")
    top_level = {"project": str | None, "task": str, "model": str | None, "config": str | None,
                 "keep_empty_images": bool, "run_id": str | None}  # fmt: skip
    problems += [
        problem
        for key, hint in top_level.items()
        if key in body and (problem := json_problem(key, body[key], hint))
    ]
    if body.get("classes") is not None and not _is_name_list(body["classes"]):
        problems.append(f"classes must be a list of class names, got {json.dumps(body['classes'])}")
    values = param_values(body.get("hyperparameters") or {}, problems)
    if problems:
        raise RequestError(problems)
    params = TrainParams(task=body.get("task", DETECTION), **values)
    split = split_from_json(body.get("split"), problems)
    if not body.get("project") and default_project is None:
        problems.append("project is required: a local Supervisely project directory")
    if problems:
        raise RequestError(problems)
    use_default = not body.get("project")
    return TrainRequest(
        project_dir=str(default_project.directory if use_default else body["project"]),
        project_id=default_project.project_id if use_default else None,
        project_name=default_project.name if use_default else None,
        app_data_dir=app_data_dir,
        model=body.get("model"),
        config_text=body.get("config"),
        classes=body.get("classes"),
        params=params,
        split=split,
        keep_empty_images=bool(body.get("keep_empty_images", True)),
        run_id=body.get("run_id"),
    )
