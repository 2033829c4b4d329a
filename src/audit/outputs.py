"""What an audit leaves in its ``--out`` folder: ``suspects.json`` for scripts, ``report.html``
for a person (``src.audit.report``), and ``project/``, a copy of the project in Supervisely
format where every suspect is marked for review.

In the copy each suspicious object gets the tags ``label_suspect`` (its kind) and
``label_suspect_score``; a missing object is added, a box of the predicted class with the same
tags. The user's project is only read: the copy is written beside the other outputs (under a
temporary name, renamed when complete), and ``--out`` may not lie inside the project.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

from src.audit.labels import box_object
from src.audit.scoring import KINDS, MISSING
from src.audit.suspects import Suspect, counts
from src.data.project import check_out_dir as project_out_dir
from src.runs.atomic_files import write_json_atomic

SUSPECTS_FILE = "suspects.json"
REPORT_FILE = "report.html"
PROJECT_COPY = "project"
SUSPECT_TAG = "label_suspect"
SCORE_TAG = "label_suspect_score"


def check_out_dir(out_dir: str | Path, project_dir: str | Path, flag: str = "--out") -> Path:
    """``--out`` resolved; refused where it overlaps the project or is a file (a folder that holds
    an earlier try of this audit is fine: a resume writes into it again). ``flag``: how the asker
    named it."""
    return project_out_dir(out_dir, project_dir, "the audit", flag)


def write_suspects(path: Path, summary: dict[str, Any], suspects: list[Suspect]) -> None:
    """``suspects.json``: the audit's summary (folds, thresholds, counts) and every suspect,
    ranked, each with its rank."""
    body = dict(summary)
    body["counts"] = counts(suspects)
    body["suspects"] = [{"rank": n, **s.as_dict()} for n, s in enumerate(suspects, 1)]
    write_json_atomic(body, path)


def _tag_metas(meta: dict[str, Any]) -> dict[str, Any]:
    """The project's meta with the two suspect tags (an older pair of that name replaced)."""
    import supervisely as sly

    project_meta = sly.ProjectMeta.from_json(meta)
    for name in (SUSPECT_TAG, SCORE_TAG):
        if project_meta.get_tag_meta(name) is not None:
            project_meta = project_meta.delete_tag_meta(name)
    objects = sly.TagApplicableTo.OBJECTS_ONLY
    kind = sly.TagMeta(
        SUSPECT_TAG, sly.TagValueType.ONEOF_STRING, possible_values=list(KINDS),
        applicable_to=objects,
    )  # fmt: skip
    score = sly.TagMeta(SCORE_TAG, sly.TagValueType.ANY_NUMBER, applicable_to=objects)
    return project_meta.add_tag_metas([kind, score]).to_json()


def _tags(suspect: Suspect) -> list[dict[str, Any]]:
    return [
        {"name": SUSPECT_TAG, "value": suspect.kind},
        {"name": SCORE_TAG, "value": suspect.score},
    ]


def _mark(ann: dict[str, Any], suspects: list[Suspect], shapes: dict[str, str]) -> None:
    """Tag each accused object of one annotation; add each missing one. Tags of an earlier
    audit are removed first (auditing an audited copy starts clean)."""
    objects = ann.setdefault("objects", [])
    for obj in objects:
        obj["tags"] = [
            t for t in obj.get("tags") or [] if t.get("name") not in (SUSPECT_TAG, SCORE_TAG)
        ]
    for suspect in suspects:
        if suspect.kind == MISSING:
            cls = suspect.predicted_class or ""
            objects.append(box_object(cls, suspect.box, shapes.get(cls, "any"), _tags(suspect)))
        elif suspect.object is not None:
            objects[suspect.object]["tags"] += _tags(suspect)


def write_tagged_copy(project_dir: str | Path, suspects: list[Suspect], target: Path) -> Path:
    """A copy of the project at ``target`` with every suspect marked (see the module)."""
    project = Path(project_dir).resolve()
    partial = target.with_name(target.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    shutil.copytree(project, partial)
    meta_path = partial / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    shapes = {c["title"]: c.get("shape", "any") for c in meta.get("classes", [])}
    meta_path.write_text(json.dumps(_tag_metas(meta), indent=2), encoding="utf-8")
    by_image: dict[str, list[Suspect]] = defaultdict(list)
    for suspect in suspects:
        by_image[suspect.image].append(suspect)
    for image, found in by_image.items():
        image_path = partial / image
        ann_path = image_path.parent.parent / "ann" / f"{image_path.name}.json"
        ann = json.loads(ann_path.read_text(encoding="utf-8"))
        _mark(ann, found, shapes)
        ann_path.write_text(json.dumps(ann), encoding="utf-8")
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)
    return target
