"""A small HTTP server that speaks the subset of the Supervisely REST API the app's calls use.

Written from the SDK's own client code (``supervisely/api/*_api.py``, version in requirements):
the same method names under ``/public/api/v3/``, the same JSON fields, pagination
(``total``/``perPage``/``pagesCount``/``entities``), the multipart upload the SDK sends to
``file-storage.bulk.upload`` and the multipart response it decodes from ``images.bulk.download``.
The real ``sly.Api`` client talks to it over real HTTP, so the app's platform code is exercised on
the wire; only the server side is ours.

State: one images project (loaded from a local Supervisely-format project), Team Files in a folder
on disk, and the outputs set on tasks. ``fail(method, status, times)`` makes the next calls of a
method answer with an error, to test retries and failures.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from requests_toolbelt import MultipartDecoder, MultipartEncoder
from supervisely.annotation.annotation import Annotation

PREFIX = "/public/api/v3/"
PER_PAGE = 5  # small, so that pagination is exercised with test-sized projects
PROJECT_ID, TEAM_ID, TASK_ID = 77, 1, 4242  # the ids the platform tests start the app with


@dataclass
class RemoteImage:
    id: int
    name: str
    dataset_id: int
    data: bytes
    ann: dict
    updated_at: str


@dataclass
class RemoteDataset:
    id: int
    name: str
    parent_id: int | None
    project_id: int


@dataclass
class RemoteProject:
    id: int
    name: str
    meta: dict
    updated_at: str
    datasets: list[RemoteDataset] = field(default_factory=list)
    images: list[RemoteImage] = field(default_factory=list)
    workspace_id: int = 1


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


class SuperviselyState:
    """What the fake instance holds; tests read and change it directly."""

    def __init__(self, team_files_root: Path) -> None:
        self.team_files_root = Path(team_files_root)
        self.team_files_root.mkdir(parents=True, exist_ok=True)
        self.projects: dict[int, RemoteProject] = {}
        self.outputs: dict[int, dict] = {}  # task id -> output set with tasks.output.set
        self.workflow: list[tuple[str, dict]] = []  # ("input" | "output", the node's body)
        self.workspaces: dict[int, dict] = {1: {"id": 1, "name": "workspace", "teamId": 1}}
        # projects.versions.reserve: the platform's answer when nothing changed since the
        # project's current version (this id), so the SDK creates none and the app uses it
        self.project_version = {"id": 31, "version": 3}
        self.calls: list[str] = []  # every method called, in order
        self.app_content_updates = 0
        self._faults: dict[str, list[int]] = {}
        self._file_ids: dict[str, int] = {}
        self._next_id = 1000
        self.lock = threading.Lock()

    # ---------------------------------------------------------------- setup helpers
    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def add_project(self, local_dir: Path, project_id: int = 77) -> RemoteProject:
        """Serve a local Supervisely project (nested datasets too) as project ``project_id``."""
        local_dir = Path(local_dir)
        meta = json.loads((local_dir / "meta.json").read_text())
        project = RemoteProject(project_id, local_dir.name, meta, _now())

        def add_dataset(path: Path, name: str, parent: int | None) -> None:
            ds = RemoteDataset(self.new_id(), name, parent, project_id)
            project.datasets.append(ds)
            if (path / "img").is_dir():
                for img in sorted((path / "img").iterdir()):
                    ann = json.loads((path / "ann" / f"{img.name}.json").read_text())
                    # stored as the server stores what the SDK uploads (subpixel coordinates)
                    ann = Annotation._to_subpixel_coordinate_system_json(ann)
                    for obj in ann.get("objects", []):  # each a figure with its id
                        obj["id"] = self.new_id()
                    project.images.append(
                        RemoteImage(self.new_id(), img.name, ds.id, img.read_bytes(), ann, _now())
                    )
            children = path / "datasets"
            if children.is_dir():
                for child in sorted(p for p in children.iterdir() if p.is_dir()):
                    add_dataset(child, child.name, ds.id)

        for path in sorted(p for p in local_dir.iterdir() if p.is_dir()):
            add_dataset(path, path.name, None)
        self.projects[project_id] = project
        return project

    def touch_project(self, project_id: int, image_name: str, data: bytes) -> None:
        """Change one image's bytes: the project's and the image's update times move on."""
        time.sleep(1.1)  # the SDK's times have 1 s resolution
        project = self.projects[project_id]
        for image in project.images:
            if image.name == image_name:
                image.data, image.updated_at = data, _now()
        project.updated_at = _now()

    def fail(self, method: str, status: int, times: int = 1, after: int = 0) -> None:
        """After ``after`` more good calls, the next ``times`` calls of ``method`` answer
        ``status`` (e.g. 500, 403)."""
        self._faults.setdefault(method, []).extend([None] * after + [status] * times)

    def stall(self, method: str, seconds: float, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` wait ``seconds`` before answering (a
        connection that stopped moving)."""
        self._faults.setdefault(method, []).extend([float(seconds)] * times)

    def heal(self) -> None:
        """No more injected failures."""
        with self.lock:
            self._faults.clear()

    def take_fault(self, method: str) -> int | None:
        with self.lock:
            queue = self._faults.get(method)
            return queue.pop(0) if queue else None

    # ---------------------------------------------------------------- team files
    def local(self, remote_path: str) -> Path:
        path = (self.team_files_root / remote_path.lstrip("/")).resolve()
        if self.team_files_root.resolve() not in [path, *path.parents]:
            raise ValueError(f"path outside team files: {remote_path}")
        return path

    def file_json(self, path: Path) -> dict:
        remote = "/" + path.relative_to(self.team_files_root.resolve()).as_posix()
        with self.lock:
            file_id = self._file_ids.setdefault(remote, self.new_id())
        stat = path.stat()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(stat.st_mtime))
        return {
            "id": file_id,
            "teamId": 1,
            "userId": 1,
            "name": path.name,
            "path": remote,
            "storagePath": f"/teams_storage/1{remote}",
            "hash": None,
            "meta": {"size": stat.st_size, "ext": path.suffix.lstrip(".")},
            "createdAt": stamp,
            "updatedAt": stamp,
            "fullStorageUrl": f"http://storage{remote}",
        }

    def file_id(self, remote_path: str) -> int | None:
        return self._file_ids.get(remote_path)


class _Handler(BaseHTTPRequestHandler):
    state: SuperviselyState  # set on the subclass made per server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # ---------------------------------------------------------------- plumbing
    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, value: Any, status: int = 200) -> None:
        self._send(status, json.dumps(value).encode())

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message, "details": {"message": message}}, status)

    def do_GET(self) -> None:  # the SDK's https-redirect probe and version checks
        self._error(404, "not found")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        if not path.startswith(PREFIX):
            return self._error(404, f"unknown path {path}")
        method = path[len(PREFIX) :]
        self.state.calls.append(method)
        fault = self.state.take_fault(method)
        if isinstance(fault, float):
            time.sleep(fault)  # the client has given up long before
            return self._error(504, f"stalled {method}")
        if fault is not None:
            return self._error(fault, f"injected failure of {method}")
        handler = getattr(self, "m_" + method.replace(".", "_").replace("-", "_"), None)
        if handler is None:
            return self._error(404, f"method {method} is not served by the test server")
        try:
            if self.headers.get("Content-Type", "").startswith("multipart/"):
                decoder = MultipartDecoder(raw, self.headers["Content-Type"])
                handler(decoder, dict(p.split("=", 1) for p in query.split("&") if "=" in p))
            else:
                handler(json.loads(raw or b"{}"))
        except KeyError as exc:
            self._error(404, f"not found: {exc}")

    def _page(self, entities: list[dict], body: dict) -> None:
        per_page = int(body.get("per_page", PER_PAGE))
        page = int(body.get("page", 1))
        total = len(entities)
        self._json(
            {
                "total": total,
                "perPage": per_page,
                "pagesCount": max(1, -(-total // per_page)),
                "entities": entities[(page - 1) * per_page : page * per_page],
            }
        )

    def m_instance_version(self, body: dict) -> None:
        self._json({"version": "99.0.0"})  # newer than any SDK's minimum

    # ---------------------------------------------------------------- projects
    def _project(self, project_id: int) -> RemoteProject:
        return self.state.projects[int(project_id)]

    def m_projects_info(self, body: dict) -> None:
        self._json(self._project_json(self._project(body["id"])))

    def m_projects_list(self, body: dict) -> None:
        """Projects of a workspace, filtered by name (``api.project.get_info_by_name``)."""
        names = [f["value"] for f in body.get("filter") or [] if f.get("field") == "name"]
        rows = [
            self._project_json(p)
            for p in self.state.projects.values()
            if not names or p.name in names
        ]
        self._page(rows, body)

    def _project_json(self, p: RemoteProject) -> dict:
        return {
            "id": p.id,
            "name": p.name,
            "type": "images",
            "workspaceId": p.workspace_id,
            "teamId": 1,
            "imagesCount": len(p.images),
            "itemsCount": len(p.images),
            "datasetsCount": len(p.datasets),
            "settings": {},
            "customData": {},
            "createdAt": p.updated_at,
            "updatedAt": p.updated_at,
            "version": self.state.project_version,
        }

    def m_projects_versions_reserve(self, body: dict) -> None:
        """No change since the current version: the platform's 400 with ``useExistingVersion``
        (the SDK then returns the version its map in Team Files names, or none)."""
        self._json(
            {"details": {"useExistingVersion": True, "version": self.state.project_version,
                         "message": "no changes since the last version"}}, status=400,
        )  # fmt: skip

    # ------------------------------------------ what the SDK's Model Benchmark creates
    def m_workspaces_list(self, body: dict) -> None:
        names = [f["value"] for f in body.get("filter") or [] if f.get("field") == "name"]
        rows = [w for w in self.state.workspaces.values() if not names or w["name"] in names]
        self._page(rows, body)

    def m_workspaces_add(self, body: dict) -> None:
        workspace = {"id": self.state.new_id(), "name": body["name"], "teamId": body["teamId"],
                     "description": body.get("description", "")}  # fmt: skip
        self.state.workspaces[workspace["id"]] = workspace
        self._json(workspace)

    def m_workspaces_visibility_set(self, body: dict) -> None:
        self._json({"success": True})

    def m_projects_add(self, body: dict) -> None:
        project = RemoteProject(self.state.new_id(), body["name"], {"classes": [], "tags": []},
                                _now(), workspace_id=int(body["workspaceId"]))  # fmt: skip
        self.state.projects[project.id] = project
        self._json(self._project_json(project))

    def m_projects_archive(self, body: dict) -> None:  # api.project.remove
        self.state.projects.pop(int(body["id"]), None)
        self._json({"success": True})

    def m_projects_settings_update(self, body: dict) -> None:
        self._json({"success": True})

    def m_projects_meta_update(self, body: dict) -> None:
        """Classes and tags get their ids, as the server gives them."""
        meta = json.loads(json.dumps(body["meta"]))
        for entry in [*meta.get("classes", []), *meta.get("tags", [])]:
            entry.setdefault("id", self.state.new_id())
        self._project(body["id"]).meta = meta
        self._json(meta)

    def m_users_me(self, body: dict) -> None:
        me = {"id": 1, "login": "tester", "role": "admin", "name": "Tester", "email": "t@x.org"}
        self._json(dict(me, createdAt=_now(), updatedAt=_now()))

    def m_figures_tags_bulk_add(self, body: dict) -> None:
        """Tags on figures (``api.image.tag.add_to_objects``), by tag meta id and figure id."""
        p = self._project(body["projectId"])
        names = {t["id"]: t["name"] for t in p.meta.get("tags", []) if "id" in t}
        figures = {o["id"]: o for i in p.images for o in i.ann.get("objects", []) if "id" in o}
        added = []
        for tag in body["tags"]:
            entry = {
                "id": self.state.new_id(),
                "name": names[tag["tagId"]],
                "value": tag.get("value"),
            }
            figures[tag["figureId"]].setdefault("tags", []).append(entry)
            added.append({"id": entry["id"], "tagId": tag["tagId"], "figureId": tag["figureId"],
                          "value": tag.get("value")})  # fmt: skip
        self._json(added)

    def m_datasets_add(self, body: dict) -> None:
        p = self._project(body["projectId"])
        ds = RemoteDataset(self.state.new_id(), body["name"], body.get("parentId"), p.id)
        p.datasets.append(ds)
        self._json(self._dataset_json(p, ds))

    def _image_by_id(self, image_id: int) -> RemoteImage:
        for p in self.state.projects.values():
            for image in p.images:
                if image.id == int(image_id):
                    return image
        raise KeyError(f"image {image_id}")

    def _project_of_dataset(self, dataset_id: int) -> RemoteProject:
        for p in self.state.projects.values():
            if any(d.id == int(dataset_id) for d in p.datasets):
                return p
        raise KeyError(f"dataset {dataset_id}")

    def m_images_bulk_add(self, body: dict) -> None:
        """Images added by id (``api.image.upload_ids``): the same bytes, no annotation."""
        p = self._project_of_dataset(body["datasetId"])
        added = []
        for entry in body["images"]:
            source = self._image_by_id(entry["imageId"])
            image = RemoteImage(self.state.new_id(), entry["title"], int(body["datasetId"]),
                                source.data, {"size": source.ann.get("size", {}), "tags": [],
                                              "objects": []}, _now())  # fmt: skip
            p.images.append(image)
            added.append(image)
        self._json([self._image_json(i) for i in added])

    def m_workflow_node_add_input(self, body: dict) -> None:
        self.state.workflow.append(("input", body))
        self._json({"success": True})

    def m_workflow_node_add_output(self, body: dict) -> None:
        self.state.workflow.append(("output", body))
        self._json({"success": True})

    def m_projects_meta(self, body: dict) -> None:
        self._json(self._project(body["id"]).meta)

    def _dataset_json(self, p: RemoteProject, d: RemoteDataset) -> dict:
        return {
            "id": d.id,
            "name": d.name,
            "projectId": p.id,
            "parentId": d.parent_id,
            "workspaceId": p.workspace_id,
            "teamId": 1,
            "imagesCount": sum(i.dataset_id == d.id for i in p.images),
            "itemsCount": sum(i.dataset_id == d.id for i in p.images),
            "createdAt": p.updated_at,
            "updatedAt": p.updated_at,
        }

    def m_datasets_list(self, body: dict) -> None:
        p = self._project(body["projectId"])
        self._page([self._dataset_json(p, d) for d in p.datasets], body)

    def m_datasets_info(self, body: dict) -> None:
        p = self._project_of_dataset(body["id"])
        self._json(self._dataset_json(p, next(d for d in p.datasets if d.id == int(body["id"]))))

    def _images_of(self, dataset_id: int) -> list[RemoteImage]:
        for p in self.state.projects.values():
            found = [i for i in p.images if i.dataset_id == int(dataset_id)]
            if found or any(d.id == int(dataset_id) for d in p.datasets):
                return found
        raise KeyError(f"dataset {dataset_id}")

    def _image_json(self, i: RemoteImage) -> dict:
        size = i.ann.get("size", {})
        return {
            "id": i.id,
            "name": i.name,
            "datasetId": i.dataset_id,
            "projectId": self._project_of_dataset(i.dataset_id).id,
            "ext": Path(i.name).suffix.lstrip("."),
            "mime": "image/png",
            "size": len(i.data),
            "width": size.get("width"),
            "height": size.get("height"),
            "labelsCount": len(i.ann.get("objects", [])),
            "hash": f"h{i.id}-{i.updated_at}",
            "tags": [],
            "meta": {},
            "createdAt": i.updated_at,
            "updatedAt": i.updated_at,
        }

    def m_images_info(self, body: dict) -> None:
        self._json(self._image_json(self._image_by_id(body["id"])))

    def m_images_list(self, body: dict) -> None:
        self._page([self._image_json(i) for i in self._images_of(body["datasetId"])], body)

    def m_images_bulk_download(self, body: dict) -> None:
        by_id = {i.id: i for i in self._images_of(body["datasetId"])}
        fields = [
            (str(image_id), (by_id[image_id].name, by_id[image_id].data, "image/png"))
            for image_id in body["imageIds"]
        ]
        encoder = MultipartEncoder(fields=fields)
        self._send(200, encoder.to_string(), encoder.content_type)

    def m_annotations_bulk_add(self, body: dict) -> None:
        """Each object gets a figure id, as the server gives it."""
        for entry in body["annotations"]:
            ann = json.loads(json.dumps(entry["annotation"]))
            for obj in ann.get("objects", []):
                obj["id"] = self.state.new_id()
            self._image_by_id(entry["imageId"]).ann = ann
        self._json({"success": True})

    def m_annotations_bulk_info(self, body: dict) -> None:
        by_id = {i.id: i for i in self._images_of(body["datasetId"])}
        self._json(
            [
                {
                    "imageId": image_id,
                    "imageName": by_id[image_id].name,
                    "datasetId": by_id[image_id].dataset_id,
                    "annotation": by_id[image_id].ann,
                    "createdAt": by_id[image_id].updated_at,
                    "updatedAt": by_id[image_id].updated_at,
                }
                for image_id in body["imageIds"]
            ]
        )

    # ---------------------------------------------------------------- team files
    def m_file_storage_list(self, body: dict) -> None:
        base = self.state.local(body["path"])
        recursive = body.get("recursive", True)
        if base.is_file():
            files = [base]
        elif base.is_dir():
            files = sorted(base.rglob("*") if recursive else base.iterdir())
        else:
            files = []
        self._json([self.state.file_json(f) for f in files if f.is_file()])

    def m_file_storage_v2_list(self, body: dict) -> None:
        """``api.storage.list``: files and folders under a path (one page)."""
        base = self.state.local(body["path"])
        entries = []
        if base.is_dir():
            found = sorted(base.rglob("*") if body.get("recursive") else base.iterdir())
            for path in found:
                if path.is_file() and body.get("files", True):
                    entries.append(dict(self.state.file_json(path), type="file"))
                elif path.is_dir() and body.get("folders", True):
                    remote = "/" + path.relative_to(self.state.team_files_root.resolve()).as_posix()
                    entries.append({"type": "folder", "name": path.name, "path": remote + "/",
                                    "teamId": 1, "meta": {}})  # fmt: skip
        self._json({"entities": entries})

    def m_file_storage_bulk_upload(self, decoder: MultipartDecoder, query: dict) -> None:
        infos, pending = [], {}
        for part in decoder.parts:
            disposition = part.headers[b"Content-Disposition"].decode()
            name = disposition.split('name="', 1)[1].split('"', 1)[0]
            if name in ("name", "path"):
                pending[name] = part.text
            elif name == "file":
                target = self.state.local(pending["path"] + pending["name"])
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(part.content)
                infos.append(self.state.file_json(target))
        self._json(infos)

    def m_file_storage_download(self, body: dict) -> None:
        path = self.state.local(body["path"])
        if not path.is_file():
            return self._error(404, f"file {body['path']} not found")
        self._send(200, path.read_bytes(), "application/octet-stream")

    def m_file_storage_remove(self, body: dict) -> None:
        path = self.state.local(body["path"])
        if path.is_dir():
            import shutil

            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        self._json({"success": True})

    def m_file_storage_info(self, body: dict) -> None:
        for remote, file_id in self.state._file_ids.items():
            if file_id == int(body["id"]):
                return self._json(self.state.file_json(self.state.local(remote)))
        self._error(404, f"file {body['id']} not found")

    # ---------------------------------------------------------------- tasks
    def m_tasks_app_v2_data_set(self, body: dict) -> None:
        """The running app pushes its widgets' state and data to the platform."""
        self.state.app_content_updates += 1
        self._json({"success": True})

    def m_tasks_info(self, body: dict) -> None:
        """What the SDK's artifacts classes read of a training task."""
        task_id = int(body["id"])
        meta = {"app": {"id": 555}}  # the app (module) the task runs: the workflow's link
        if task_id in self.state.outputs:
            meta["output"] = self.state.outputs[task_id]  # api.nn.get_experiment_info reads it
        self._json(
            {"id": task_id, "workspaceId": 1, "teamId": 1, "meta": meta,
             "startedAt": "2026-11-27T10:00:00.000Z", "status": "finished"}
        )  # fmt: skip

    def m_tasks_output_set(self, body: dict) -> None:
        self.state.outputs[int(body["taskId"])] = body["output"]
        self._json({"success": True})


class FakeSupervisely:
    """Runs the server in a thread on 127.0.0.1; ``address`` is the SERVER_ADDRESS to use."""

    def __init__(self, team_files_root: Path) -> None:
        self.state = SuperviselyState(team_files_root)
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeSupervisely:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def api(self, retry_count: int = 3):
        """A real ``sly.Api`` client pointed at this server (no waiting between retries)."""
        import supervisely as sly

        return sly.Api(
            self.address, "x" * 128, retry_count=retry_count, retry_sleep_sec=0,
            ignore_task_id=True,
        )  # fmt: skip
