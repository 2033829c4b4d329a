"""A project downloaded from the platform over real HTTP (the real ``sly.Api`` against
``tests/sly_server.py``): its cache, a changed project, an interrupted download."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from src.data.project import download_project
from tests import sly_server
from tests.sly_server import PROJECT_ID


def _files(root: Path) -> dict[str, bytes]:
    """The images of a project, by path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("img/*"))}


def _anns(root: Path) -> dict[str, dict]:
    """Annotations and meta, parsed; without the objects' ids, which the server gives each
    figure (a local project has none)."""
    found = {}
    for path in sorted(root.rglob("ann/*.json")):
        ann = json.loads(path.read_text())
        for obj in ann.get("objects", []):
            obj.pop("id", None)
        found[path.relative_to(root).as_posix()] = ann
    return {**found, "meta": json.loads((root / "meta.json").read_text())}


@pytest.fixture
def downloaded(monkeypatch) -> list[int]:
    """The ids of the images the server sent (each ``images.bulk.download``'s ``imageIds``)."""
    ids: list[int] = []
    real = sly_server._Handler.m_images_bulk_download

    def recording(handler, body: dict) -> None:
        ids.extend(body["imageIds"])
        real(handler, body)

    monkeypatch.setattr(sly_server._Handler, "m_images_bulk_download", recording)
    return ids


def test_download_then_cache_then_changed_project(fake, tmp_path, hard_project, downloaded):
    api = fake.api()
    done = []
    project = download_project(api, PROJECT_ID, tmp_path / "cache", progress=done.append)
    assert project.project_id == PROJECT_ID and project.name == hard_project.name
    assert project.images == 28 and sum(done) == 28
    every_image = sorted(i.id for i in fake.state.projects[PROJECT_ID].images)
    assert sorted(downloaded) == every_image  # each image once
    assert project.datasets == ["train", "train/extra", "val"]
    assert _files(project.directory) == _files(hard_project)
    assert _anns(project.directory) == _anns(hard_project)

    fake.state.calls.clear()
    downloaded.clear()
    again = download_project(api, PROJECT_ID, tmp_path / "cache")
    assert again.directory == project.directory
    assert fake.state.calls == ["projects.info"] and downloaded == []  # nothing downloaded

    changed = fake.state.projects[PROJECT_ID].images[0]
    fake.state.touch_project(PROJECT_ID, changed.name, b"new bytes")
    fake.state.calls.clear()
    downloaded.clear()
    updated = download_project(api, PROJECT_ID, tmp_path / "cache")
    assert updated.directory != project.directory and not project.directory.exists()
    assert downloaded == [changed.id]  # only the changed image
    img = next(updated.directory.rglob(f"img/{changed.name}"))
    assert img.read_bytes() == b"new bytes"


def test_interrupted_download_is_never_used_and_resumes(fake, tmp_path, hard_project, downloaded):
    api = fake.api(retry_count=1)
    fake.state.fail("images.bulk.download", 403, after=1)  # the second dataset's images fail
    # the SDK's error for the refused images reaches the caller as it is
    with pytest.raises(requests.HTTPError, match=r"^403 Client Error.*/images\.bulk\.download"):
        download_project(api, PROJECT_ID, tmp_path / "cache")
    leftovers = [p.name for p in (tmp_path / "cache").iterdir()]
    assert len(leftovers) == 1 and leftovers[0].endswith(".partial")  # never a usable folder

    before = list(downloaded)  # the first dataset's images, the one answered call
    assert before

    fake.state.calls.clear()
    downloaded.clear()
    project = download_project(api, PROJECT_ID, tmp_path / "cache")
    n_datasets_with_images = len({i.dataset_id for i in fake.state.projects[PROJECT_ID].images})
    assert fake.state.calls.count("images.bulk.download") == n_datasets_with_images - 1
    every_image = sorted(i.id for i in fake.state.projects[PROJECT_ID].images)
    assert sorted(before + downloaded) == every_image  # the rest, none of them again
    assert _files(project.directory) == _files(hard_project)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [project.directory.name]
