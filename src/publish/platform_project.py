"""A copy of a downloaded project, written by pre-labelling or an audit, as a new project on the
platform: the same datasets (nested ones too), the same images added by id (no image bytes travel:
the platform points the new project at the images it has), and the copy's annotations and meta.

Why a new project and not the user's: nothing a person drew is overwritten, and the copy can be
reviewed, merged or removed as a whole. It goes to the source project's workspace under a name
that says what made it (the platform adds a suffix when the name is taken). A copy whose images
have no platform ids (a project not downloaded from the platform) is refused before anything is
made; a failure half way removes the half-made project, and the local copy stays where it was.

Annotations stream in batches of ``BATCH`` images per dataset: memory does not grow with the
project. The workflow records the new project as this task's output, with the model's weights
(pre-labelling) or the source project (an audit) as its input (``src.publish.workflow``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from src.core.errors import PublishError, RequestError
from src.data.reader import DatasetError, list_items
from src.publish.workflow import APP_NAME, PlatformWorkflow

logger = logging.getLogger(__name__)

BATCH = 100  # images added and annotated per request group
Item = tuple[str, str, int, dict[str, Any]]  # dataset path, image name, image id, annotation


@dataclass(frozen=True)
class PublishedProject:
    """The new project on the platform: its id, name, link and image count."""

    id: int
    name: str
    link: str
    images: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _image_id(ann_path: Path) -> int:
    """The platform id of an annotation's image, from the ``img_info`` record the download wrote
    beside ``ann/`` (``src.data.project.download_project``)."""
    info = ann_path.parent.parent / "img_info" / ann_path.name
    try:
        return int(json.loads(info.read_text(encoding="utf-8"))["id"])
    except (OSError, ValueError, KeyError, TypeError):
        raise RequestError(
            f"{ann_path.name[:-5]}: its image has no platform id (no {info.parent.name}/"
            f"{info.name}): only a project downloaded from the platform can be published there"
        ) from None


def _listed(copy_dir: str | Path) -> list[tuple[str, Path]]:
    try:
        return list_items(copy_dir)
    except DatasetError as exc:
        raise RequestError(str(exc)) from None


def check_ids(copy_dir: str | Path) -> None:
    """A ``RequestError`` for the first image without a platform id (its ``img_info`` only is
    read): before anything is made or predicted."""
    for _, ann_path in _listed(copy_dir):
        _image_id(ann_path)


def local_items(copy_dir: str | Path) -> Iterator[Item]:
    """Every image of a local copy as (dataset path, name, platform id, annotation JSON), one
    annotation read at a time."""
    for item, ann_path in _listed(copy_dir):
        dataset, _, name = item.rpartition("/")
        try:
            ann = json.loads(ann_path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise RequestError(f"{item}: its annotation cannot be read: {exc}") from None
        yield dataset, name, _image_id(ann_path), ann


def source_project(api: Any, copy_dir: str | Path) -> Any:
    """The platform project a local copy was downloaded from (its first image's dataset's
    project): where the new project's workspace and name come from."""
    listed = _listed(copy_dir)
    if not listed:
        raise RequestError(f"{copy_dir} has no images: nothing to publish")
    image_id = _image_id(listed[0][1])
    image = api.image.get_info_by_id(image_id)
    if image is None:
        raise RequestError(f"image {image_id} of {copy_dir} is no longer on the platform")
    return api.project.get_info_by_id(api.dataset.get_info_by_id(image.dataset_id).project_id)


def publish_copy(
    api: Any,
    copy_dir: str | Path,
    what: str,
    description: str,
    record: Callable[[int, int], None] | None = None,
) -> PublishedProject:
    """Publish the local copy at ``copy_dir`` as a new project named ``<source name> (<what>)``
    beside its source; ``record`` is told the new project's id and the source's once it is
    complete (the workflow). Every id is checked before the project is made."""
    import supervisely as sly

    copy_dir = Path(copy_dir)
    check_ids(copy_dir)  # a copy without platform ids is refused before any call
    source = source_project(api, copy_dir)
    meta = sly.ProjectMeta.from_json(json.loads((copy_dir / "meta.json").read_text("utf-8")))
    project = api.project.create(
        source.workspace_id, f"{source.name} ({what})", description=description,
        change_name_if_conflict=True,
    )  # fmt: skip
    try:
        api.project.update_meta(project.id, meta.to_json())
        images = upload_items(api, project.id, meta, local_items(copy_dir))
    except BaseException:
        _remove(api, project.id)
        raise
    if record is not None:
        record(project.id, source.id)
    link = api.project.url(project.id)
    if not link.startswith("http"):
        link = f"{api.server_address.rstrip('/')}/{link.lstrip('/')}"
    return PublishedProject(project.id, project.name, link, len(images))


def published(publish: Callable[[], PublishedProject], local_dir: str | Path) -> dict[str, Any]:
    """``publish()``'s project as JSON; its failure a ``PublishError`` that says where the local
    copy is kept (nothing is lost) and what to do."""
    try:
        return publish().to_json()
    except Exception as exc:  # a refusal too: the copy is written, so where it is comes first
        raise PublishError(
            f"the copy is in {local_dir}, but publishing it on the platform failed: {exc}. "
            "Try again later, or upload that folder with the platform's import"
        ) from exc


def _remove(api: Any, project_id: int) -> None:
    try:
        api.project.remove(project_id)
    except Exception as exc:
        logger.warning("project %s (a failed publication's) was not removed: %s", project_id, exc)


def upload_items(api: Any, project_id: int, meta: Any, items: Iterable[Item]) -> dict[str, int]:
    """The images (added by id) with their annotations, into datasets of ``project_id`` named
    and nested as the items say (created as they first appear), ``BATCH`` images a request
    group; ``dataset/name`` -> the new image id."""
    datasets: dict[str, int] = {}

    def dataset_id(path: str) -> int:
        if path not in datasets:
            parent, _, name = path.rpartition("/")
            created = api.dataset.create(
                project_id, name, parent_id=dataset_id(parent) if parent else None
            )
            datasets[path] = created.id
        return datasets[path]

    uploaded: dict[str, int] = {}
    batch: list[Item] = []
    for item in items:
        if batch and (len(batch) == BATCH or batch[0][0] != item[0]):
            uploaded.update(_upload_batch(api, dataset_id(batch[0][0]), meta, batch))
            batch = []
        batch.append(item)
    if batch:
        uploaded.update(_upload_batch(api, dataset_id(batch[0][0]), meta, batch))
    return uploaded


def _upload_batch(api: Any, dataset_id: int, meta: Any, batch: list[Item]) -> dict[str, int]:
    """One dataset's batch: images added by id, then their annotations (checked against the
    meta by the SDK's own classes, as the platform checks them)."""
    import supervisely as sly

    infos = api.image.upload_ids(dataset_id, [b[1] for b in batch], [b[2] for b in batch])
    anns = [sly.Annotation.from_json(b[3], meta) for b in batch]
    api.annotation.upload_anns([info.id for info in infos], anns)
    return {f"{b[0]}/{b[1]}": info.id for b, info in zip(batch, infos, strict=True)}


class PlatformCopies:
    """What pre-labelling and the audit publish on the platform, for this app's task: the
    controller and the audit service are given one there (None elsewhere).

    Args: the SDK client, the team, this app's task (its workflow records each project)."""

    def __init__(self, api: Any, team_id: int, task_id: int | None) -> None:
        self.api = api
        self.workflow = PlatformWorkflow(api, team_id, task_id or 0)

    def check(self, project_dir: str | Path) -> None:
        """A ``RequestError`` now, before any work, for a project that cannot be published:
        an image without a platform id."""
        check_ids(project_dir)

    def prelabelled(
        self, copy_dir: str | Path, run_id: str, weights_of: Callable[[str], str | None]
    ) -> dict[str, Any]:
        """A pre-labelled copy as a project (JSON); the run's weights in Team Files
        (``weights_of(run_id)``, looked up here: its failure names the copy too) are its
        input."""

        def publish() -> PublishedProject:
            weights = weights_of(run_id)
            return publish_copy(
                self.api, copy_dir, f"pre-labelled by {run_id}",
                f"Predictions of run {run_id} ({APP_NAME}) added to the images that had no "
                "labels; each predicted object has a confidence tag",
                record=lambda new, _: self.workflow.record_copy(new, weights_path=weights),
            )  # fmt: skip

        return published(publish, copy_dir)

    def audited(self, copy_dir: str | Path, audit_id: str) -> dict[str, Any]:
        """An audit's tagged copy as a project (JSON); the audited project is its input."""
        return published(
            lambda: publish_copy(
                self.api, copy_dir, f"label audit {audit_id}",
                f"Label audit {audit_id} ({APP_NAME}): objects suspected of a label error are "
                "tagged label_suspect (their kind) and label_suspect_score; objects the labels "
                "missed are added with the same tags. The audit suggests; a person decides.",
                record=lambda new, source: self.workflow.record_copy(new, source_id=source),
            ),
            copy_dir,
        )  # fmt: skip
