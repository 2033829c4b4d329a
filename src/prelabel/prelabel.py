"""Pre-labelling (docs/after-training.md): a copy of a project with a run's predictions as
annotations.

The user's project is only read. The copy is written under a temporary name beside ``out`` and
renamed to it once complete, so ``out`` holds a whole project or nothing; it must not exist or
be empty, and may not overlap the project. Images stream one at a time through the model
(``src.prelabel.model``): memory does not grow with the project.

Which images are predicted: those of the chosen datasets (default: all) that have no object yet;
with ``overwrite_labelled`` the labelled ones too, their predictions *added* beside the labels
already there (nothing a person drew is ever removed). Every other annotation is copied as it is.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.core.errors import RequestError
from src.data.project import check_out_dir as project_out_dir
from src.data.reader import DatasetError, image_path, list_items, read_meta
from src.prelabel.labels import predicted_objects, prelabel_meta

# told (images done, images in all) after each image
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PrelabelRequest:
    """What to pre-label, from the CLI or the API body."""

    run_id: str
    project_dir: str
    out_dir: str
    datasets: tuple[str, ...] | None = None  # None: every dataset (nested ones included)
    overwrite_labelled: bool = False  # predict labelled images too (predictions added)
    score_thr: float | None = None  # one threshold for every class (None: the run's per class)
    max_images: int | None = None  # more images are refused (the HTTP API's synchronous call)
    to_platform: bool = False  # also publish the copy as a new project (only on the platform)

    def __post_init__(self) -> None:
        if self.score_thr is not None and not 0 <= self.score_thr < 1:
            raise RequestError(f"score_thr {self.score_thr}: give a score from 0 to below 1")


API_MAX_IMAGES = 500  # the HTTP API answers when done: larger projects go through the CLI
_BODY_TYPES = {"run_id": str, "project": str, "out": str, "datasets": list,
               "overwrite_labelled": bool, "score_thr": (int, float),
               "to_platform": bool}  # fmt: skip


def prelabel_request(
    body: dict[str, Any], max_images: int | None = API_MAX_IMAGES
) -> PrelabelRequest:
    """``POST /api/prelabel``'s body (or the page's card, as one) as a request, at most
    ``max_images`` images (the API answers when done; the card works in the background: None);
    a ``RequestError`` naming every missing, unknown or mistyped field."""
    problems = [f"{k} is required" for k in ("run_id", "project", "out") if k not in body]
    problems += [f"unknown field {k!r}" for k in body if k not in _BODY_TYPES]
    for key, value in body.items():
        wanted = _BODY_TYPES.get(key)
        wrong = isinstance(value, bool) and wanted is not bool  # (a bool is an int to Python)
        if wanted and (wrong or not isinstance(value, wanted)):
            problems.append(f"{key} must be {_TYPE_NAMES[key]}")
    datasets = body.get("datasets")
    if isinstance(datasets, list) and not all(isinstance(d, str) and d for d in datasets):
        problems.append("datasets must be a list of dataset names")
    if problems:
        raise RequestError(problems)
    return PrelabelRequest(
        run_id=body["run_id"], project_dir=body["project"], out_dir=body["out"],
        datasets=tuple(datasets) if datasets is not None else None,
        overwrite_labelled=body.get("overwrite_labelled", False),
        score_thr=body.get("score_thr"), max_images=max_images,
        to_platform=body.get("to_platform", False),
    )  # fmt: skip


_TYPE_NAMES = {"run_id": "a string", "project": "a string (a local project folder)",
               "out": "a string (a new or empty folder)", "datasets": "a list of names",
               "overwrite_labelled": "true or false", "score_thr": "a number",
               "to_platform": "true or false"}  # fmt: skip


@dataclass
class PrelabelResult:
    """What a pre-labelling wrote: the copy, the images (predicted, labelled and left, unread),
    the objects added per class, the thresholds applied, the time, the model, and the project
    it was published as on the platform."""

    out_dir: str
    checkpoint: str
    images: int = 0
    predicted: int = 0
    left_labelled: int = 0
    unreadable: list[str] = field(default_factory=list)
    objects: dict[str, int] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    sliced: bool = False
    seconds: float = 0.0
    platform_project: dict[str, Any] | None = None  # the published copy (PublishedProject)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_out_dir(out_dir: str | Path, project_dir: str | Path) -> Path:
    """``out`` resolved: refused when it is a file, holds anything, or overlaps the project."""
    return project_out_dir(out_dir, project_dir, "pre-labelling", "out", empty=True)


def plan_items(project_dir: str | Path, datasets: tuple[str, ...] | None) -> list[Path]:
    """The annotation files of the chosen datasets' images (relative to the project), checked
    before anything is written: a ``RequestError`` for a missing project or dataset."""
    try:
        read_meta(project_dir)
        items = list_items(project_dir, list(datasets) if datasets is not None else None)
    except DatasetError as exc:
        raise RequestError(str(exc)) from None
    return [path.relative_to(Path(project_dir)) for _, path in items]


def check_request(request: PrelabelRequest) -> list[Path]:
    """What :func:`prelabel_project` checks before it writes (``out``, the project, its
    datasets, the number of images), for a caller to check before it loads the model; the
    annotation files to pre-label."""
    check_out_dir(request.out_dir, request.project_dir)
    items = plan_items(request.project_dir, request.datasets)
    if request.max_images is not None and len(items) > request.max_images:
        raise RequestError(
            f"{len(items)} images to pre-label: this call takes at most {request.max_images} "
            "(it answers when done); choose fewer datasets, or run python -m src.cli predict "
            "RUN_ID --project DIR --out DIR"
        )
    return items


def prelabel_project(
    model: Any, request: PrelabelRequest, progress: Progress | None = None
) -> PrelabelResult:
    """Write the pre-labelled copy of ``request.project_dir`` to ``request.out_dir`` with
    ``model`` (``src.prelabel.model.RunModel``); see the module for what is predicted."""
    started = time.monotonic()
    project = Path(request.project_dir)
    items = check_request(request)
    out = Path(request.out_dir).resolve()
    shape = "bitmap" if model.masks else "rectangle"
    meta = prelabel_meta(read_meta(project), model.classes, shape, model.colors)
    result = PrelabelResult(
        out_dir=str(out), checkpoint=str(model.checkpoint), images=len(items),
        thresholds={c: float(t) for c, t in zip(model.classes, model.thresholds, strict=True)},
        sliced=bool(model.slicing),
    )  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial_"))
    try:
        shutil.copytree(project, partial, dirs_exist_ok=True)
        (partial / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        counts: Counter[str] = Counter()
        for done, relative in enumerate(items, 1):
            _prelabel_item(model, partial / relative, request.overwrite_labelled, result, counts)
            if progress is not None:
                progress(done, len(items))
        result.objects = dict(sorted(counts.items()))
        os.replace(partial, out)  # an empty folder is replaced; nothing else is there
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    result.seconds = round(time.monotonic() - started, 2)
    return result


def _prelabel_item(
    model: Any, ann_path: Path, overwrite: bool, result: PrelabelResult, counts: Counter
) -> None:
    """One image of the copy: left as it is when it has labels (unless ``overwrite``), else
    read, predicted, and its predictions added to its annotation."""
    import cv2

    ann = json.loads(ann_path.read_text(encoding="utf-8"))
    if ann.get("objects") and not overwrite:
        result.left_labelled += 1
        return
    image = cv2.imread(str(image_path(ann_path)), cv2.IMREAD_COLOR)
    if image is None:  # a format OpenCV cannot read: its annotation stays as it was
        result.unreadable.append(str(image_path(ann_path).name))
        return
    height, width = image.shape[:2]
    objects = predicted_objects(model.predict(image), model.classes, height, width)
    ann["objects"] = [*(ann.get("objects") or []), *objects]
    ann.setdefault("size", {"height": height, "width": width})
    ann_path.write_text(json.dumps(ann), encoding="utf-8")
    result.predicted += 1
    counts.update(obj["classTitle"] for obj in objects)
