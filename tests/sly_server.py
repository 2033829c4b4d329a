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

It refuses what the platform refuses: every body is checked against the keys and types the pinned
SDK's own ``Api`` methods send (``SCHEMAS``; a method without a schema is unknown), the workflow's
nodes against what ``api.app.workflow`` builds (and the entities they name must exist), and a
refusal is the platform's error answer (a 4xx with ``{"error": ..., "details": ...}``), recorded in
``state.refusals``. A bug in a handler (a ``KeyError`` included) is a 500 recorded in
``state.server_errors``, never a 404 the SDK would read as "not found". Leaving the ``with`` block
raises when either list is not empty: a test that expects a refusal takes it with
``state.take_refusals()``.
"""

from __future__ import annotations

import json
import mimetypes
import threading
import time
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from requests_toolbelt import MultipartDecoder, MultipartEncoder
from supervisely.annotation.annotation import Annotation

PREFIX = "/public/api/v3/"
STORAGE = "/storage-files"  # where fullStorageUrl points (served by GET)
PER_PAGE = 5  # small, so that pagination is exercised with test-sized projects
PROJECT_ID, TEAM_ID, TASK_ID = 77, 1, 4242  # the ids the platform tests start the app with
CURRENT_VERSION = {"id": 31, "version": 3}  # a served project's version unless told otherwise
NONE = type(None)


class NumericId:
    """An id given as an int or as a string of digits (the platform's validation converts it):
    the SDK's own ``convert_train_to_experiment_info`` asks ``tasks.info`` for the task id it
    read off a Team Files folder name, a string."""


# What each served method must get, as the pinned SDK's own methods send it (the file and method
# named). ``key?``: optional; a tuple: any of those types; ``[spec]``: a list of such items; a dict:
# an object of that shape. Keys not named are let through (the SDK adds some per call).
_FILTER = [{"field": str, "operator": str, "value": object}]
SCHEMAS: dict[str, dict[str, Any]] = {
    "instance.version": {},  # api.py Api.instance_version
    "users.me": {},  # user_api.py UserApi.get_my_info
    # project_api.py: get_info_by_id, get_list, get_meta, create, remove, update_meta, settings
    "projects.info": {"id": int},
    "projects.list": {"filter": _FILTER, "fields?": [str], "workspaceId?": int, "groupId?": int},
    "projects.meta": {"id": int},
    "projects.add": {"name": str, "workspaceId": int, "description": (str, NONE), "type": str,
                     "settings?": dict, "customData?": dict},
    "projects.archive": {"id": int},
    "projects.settings.update": {"id": int, "settings": dict},
    "projects.meta.update": {"id": int, "meta": {"classes": list, "tags": list}},
    # project/data_version.py DataVersion: reserve, commit, cancel_reservation
    "projects.versions.reserve": {"projectId": int},
    "projects.versions.commit": {"id": int, "commitToken": str, "projectUpdatedAt": str,
                                 "teamFileId": int, "title?": str, "description?": str,
                                 "previewProjectId?": int},
    "projects.versions.cancel-reservation": {"id": int, "commitToken": str},
    # workspace_api.py: get_list, create, change_visibility
    "workspaces.list": {"teamId": int, "filter": _FILTER},
    "workspaces.add": {"teamId": int, "name": str, "description": (str, NONE)},
    "workspaces.visibility.set": {"id": int, "hidden": bool},
    # dataset_api.py: get_list, get_info_by_id, create
    "datasets.list": {"projectId": int, "filter": _FILTER, "recursive": bool},
    "datasets.info": {"id": int},
    "datasets.add": {"projectId": int, "name": str, "description": (str, NONE),
                     "parentId": (int, NONE)},
    # image_api.py: get_list, get_info_by_id, upload_ids (_upload_bulk_add), _download_batch
    "images.list": {"datasetId": (int, NONE), "projectId?": (int, NONE), "filter": _FILTER},
    "images.info": {"id": int},
    "images.bulk.add": {"datasetId": int, "images": [{"title": str}]},
    "images.bulk.download": {"datasetId": int, "imageIds": [int]},
    # annotation_api.py: download_batch / upload_anns; figure_api.py download; tag_api.py
    "annotations.bulk.info": {"datasetId": int, "imageIds": [int]},
    "annotations.bulk.add": {"datasetId": int, "annotations": [{"imageId": int,
                                                                "annotation": dict}]},
    "figures.list": {"datasetId": int, "fields": [str], "filter": _FILTER},
    "figures.tags.bulk.add": {"projectId": int, "tags": [{"tagId": int, "figureId": int}]},
    # file_api.py: list, _download, remove, get_info_by_id, upload_bulk; storage_api.py list
    "file-storage.list": {"teamId": int, "path": str, "recursive": bool},
    "file-storage.v2.list": {"teamId": int, "path": str, "recursive": bool, "files": bool,
                             "folders": bool, "withMetadata?": bool, "limit?": int},
    "file-storage.download": {"teamId": int, "path": str},
    "file-storage.remove": {"teamId": int, "path": str},
    "file-storage.info": {"id": int},
    "file-storage.bulk.upload": {"teamId": int},  # the query string; the parts are checked
    # task_api.py: get_info_by_id, set_output_experiment (and the other outputs), app content
    "tasks.info": {"id": NumericId},
    "tasks.output.set": {"taskId": int, "output": dict},
    "tasks.app-v2.data.set": {"taskId": int, "payload": dict},
    "tasks.meta.update": {"id": int},  # update_meta (the app's offline UI dump names its folder)
    # app_api.py AppApi.Workflow._add_edge (the node's own checks in _workflow_node)
    "workflow.node.add-input": {"teamId": int, "node": {"type": str, "id": int}, "type": str,
                                "id?": (int, str), "meta?": dict},
    "workflow.node.add-output": {"teamId": int, "node": {"type": str, "id": int}, "type": str,
                                 "id?": (int, str), "meta?": dict},
}  # fmt: skip
# app_api.py: the types of data each transaction takes, and how the data is named
WORKFLOW_TYPES = {
    "input": {"project", "project_version", "dataset", "file", "model_weight", "folder", "task",
              "job"},
    "output": {"project", "dataset", "file", "model_weight", "folder", "app_session", "task"},
}  # fmt: skip
# app_api.py AppApi.Workflow.__custom_meta_schema: a node's customization
_SETTINGS_KEYS = {"icon", "title", "description", "mainLink"}


class Refusal(Exception):
    """The platform's answer to a request it does not take: ``status`` with its JSON body."""

    def __init__(self, status: int, error: str, details: dict | None = None) -> None:
        super().__init__(f"{status} {error}: {details}")
        self.status, self.error = status, error
        self.details = details if details is not None else {"message": error}


def not_found(what: str) -> Refusal:
    """A lookup of something that is not there (the SDK reads a 404 of ``*.info`` as None)."""
    return Refusal(404, f"{what} not found")


def invalid(message: str) -> Refusal:
    return Refusal(400, "Validation error", {"message": message})


def _type_name(expected: Any) -> str:
    if isinstance(expected, tuple):
        return " or ".join(_type_name(t) for t in expected)
    if isinstance(expected, list):
        return "array"
    if isinstance(expected, dict):
        return "object"
    return {NONE: "null"}.get(expected, expected.__name__)


def check(value: Any, spec: Any, where: str = "body") -> None:
    """Raise ``Refusal(400)`` naming the first key of ``value`` that ``spec`` does not allow."""
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise invalid(f"{where} must be an object, got {type(value).__name__}")
        for key, sub in spec.items():
            name, optional = key.rstrip("?"), key.endswith("?")
            if name not in value:
                if not optional:
                    raise invalid(f"{where}.{name} is required")
                continue
            check(value[name], sub, f"{where}.{name}")
    elif isinstance(spec, list):
        if not isinstance(value, list):
            raise invalid(f"{where} must be an array, got {type(value).__name__}")
        for i, item in enumerate(value):
            check(item, spec[0], f"{where}[{i}]")
    elif spec is NumericId:
        if not (isinstance(value, int) and not isinstance(value, bool)) and not (
            isinstance(value, str) and value.isdigit()
        ):
            raise invalid(f"{where} must be an id, got {json.dumps(value)[:80]}")
    elif spec is not object:
        types = spec if isinstance(spec, tuple) else (spec,)
        is_bool = isinstance(value, bool)
        if not isinstance(value, types) or (is_bool and bool not in types):
            raise invalid(f"{where} must be {_type_name(spec)}, got {json.dumps(value)[:80]}")


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
    # the platform's ``version`` of the project ({"id", "version"}; None: never versioned) and
    # the project's update time that version was made of (changed since: a new one can be made)
    version: dict | None = None
    versioned_at: str | None = None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


class SuperviselyState:
    """What the fake instance holds; tests read and change it directly."""

    def __init__(self, team_files_root: Path) -> None:
        self.team_files_root = Path(team_files_root)
        self.team_files_root.mkdir(parents=True, exist_ok=True)
        self.projects: dict[int, RemoteProject] = {}
        self.address = ""  # where the server listens (set by FakeSupervisely)
        self.teams = {TEAM_ID}  # a team id not here is refused (403), as another team's is
        self.outputs: dict[int, dict] = {}  # task id -> output set with tasks.output.set
        self.task_meta: dict[int, dict] = {}  # task id -> what tasks.meta.update set
        self.workflow: list[tuple[str, dict]] = []  # ("input" | "output", the node's body)
        self.workspaces: dict[int, dict] = {1: {"id": 1, "name": "workspace", "teamId": 1}}
        # project versions: reserved (id -> {"projectId", "commitToken"}), committed (the commit
        # bodies, in order; also the project's ``version``)
        self.reservations: dict[int, dict] = {}
        self.versions: dict[int, dict] = {}  # version id -> {"projectId", "version", commit body}
        self.calls: list[str] = []  # every method called, in order
        self.bodies: list[tuple[str, Any]] = []  # (method, body) of every call, in order
        self.refusals: list[tuple[str, int, str]] = []  # (method, status, why): 4xx but 404
        self.server_errors: list[str] = []  # a handler's bug: method and traceback
        self.app_content_updates = 0
        self._faults: dict[str, list[int]] = {}
        self._file_ids: dict[str, int] = {}
        self._next_id = 1000
        self.lock = threading.Lock()

    # ---------------------------------------------------------------- setup helpers
    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def add_project(
        self, local_dir: Path, project_id: int = 77, version: dict | None = CURRENT_VERSION
    ) -> RemoteProject:
        """Serve a local Supervisely project (nested datasets too) as project ``project_id``;
        ``version``: its current version, made of the project as it is now (None: the project
        was never versioned)."""
        local_dir = Path(local_dir)
        meta = json.loads((local_dir / "meta.json").read_text())
        project = RemoteProject(project_id, local_dir.name, meta, _now())
        if version is not None:
            project.version, project.versioned_at = dict(version), project.updated_at
            self.versions[version["id"]] = {"projectId": project_id, **version}

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

    def take_refusals(self) -> list[tuple[str, int, str]]:
        """The refusals so far (method, status, why), forgotten: a test that expects them."""
        with self.lock:
            taken, self.refusals = self.refusals, []
        return taken

    def bodies_of(self, method: str) -> list[Any]:
        """What the client sent to ``method``, in order."""
        return [body for name, body in self.bodies if name == method]

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
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return {
            "id": file_id,
            "teamId": 1,
            "userId": 1,
            "name": path.name,
            "path": remote,
            "storagePath": f"/teams_storage/1{remote}",
            "hash": None,
            "meta": {"size": stat.st_size, "ext": path.suffix.lstrip("."), "mime": mime},
            "createdAt": stamp,
            "updatedAt": stamp,
            "fullStorageUrl": f"{self.address}{STORAGE}{remote}",  # GET: the file's bytes
        }

    def file_id(self, remote_path: str) -> int | None:
        return self._file_ids.get(remote_path)

    def file_path(self, file_id: int) -> str | None:
        """The Team Files path of a file id the server gave, if the file is still there."""
        for remote, known in list(self._file_ids.items()):
            if known == file_id and self.local(remote).is_file():
                return remote
        return None


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

    def do_GET(self) -> None:
        """A Team Files file's ``fullStorageUrl``; else the SDK's https-redirect probe and
        version checks, which find nothing."""
        path = self.path.partition("?")[0]
        if path.startswith(STORAGE + "/"):
            local = self.state.local(path[len(STORAGE) :])
            if local.is_file():
                return self._send(200, local.read_bytes(), "application/octet-stream")
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
        try:
            self._dispatch(method, raw, query)
        except Refusal as refusal:
            if refusal.status != 404:  # a lookup of what is not there is no refusal
                with self.state.lock:
                    self.state.refusals.append((method, refusal.status, str(refusal.details)))
            self._json({"error": refusal.error, "details": refusal.details}, refusal.status)
        except Exception as exc:  # a bug of this server (a KeyError too): loud, not a 404
            with self.state.lock:
                self.state.server_errors.append(f"{method}: {traceback.format_exc()}")
            self._error(500, f"the test server failed on {method}: {exc!r}")

    def _dispatch(self, method: str, raw: bytes, query: str) -> None:
        schema = SCHEMAS.get(method)
        handler = getattr(self, "m_" + method.replace(".", "_").replace("-", "_"), None)
        if schema is None or handler is None:  # what the platform has no method for
            raise Refusal(400, "Unknown API method", {"message": f"no method {method!r}"})
        if self.headers.get("Content-Type", "").startswith("multipart/"):
            params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
            if params.get("teamId", "").isdigit():
                params["teamId"] = int(params["teamId"])
            self.state.bodies.append((method, params))
            check(params, schema, "query")
            self._check_team(params)
            handler(MultipartDecoder(raw, self.headers["Content-Type"]), params)
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise invalid("the body is not JSON") from None
        self.state.bodies.append((method, body))
        check(body, schema)
        self._check_team(body)
        handler(body)

    def _check_team(self, body: dict) -> None:
        if "teamId" in body and body["teamId"] not in self.state.teams:
            raise Refusal(403, "Access denied", {"message": f"no access to team {body['teamId']}"})

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
        if int(project_id) not in self.state.projects:
            raise not_found(f"project {project_id}")
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
            "version": p.version,
        }

    def m_projects_versions_reserve(self, body: dict) -> None:
        """A new version's id and commit token; when nothing changed since the project's
        current version, the platform's 400 with ``useExistingVersion`` instead (an answer, not
        a refusal: the SDK then returns the version its map in Team Files names, or none)."""
        p = self._project(body["projectId"])
        if p.version is not None and p.versioned_at == p.updated_at:
            return self._json(
                {"error": "No changes", "details": {"useExistingVersion": True,
                 "version": p.version, "message": "no changes since the last version"}},
                status=400,
            )  # fmt: skip
        with self.state.lock:
            if any(r["projectId"] == p.id for r in self.state.reservations.values()):
                raise invalid(f"project {p.id}: a version is already committing")
            version_id = self.state.new_id()
            token = f"commit-{version_id}"
            self.state.reservations[version_id] = {"projectId": p.id, "commitToken": token}
        self._json({"id": version_id, "commitToken": token})

    def _reservation(self, body: dict) -> dict:
        reservation = self.state.reservations.get(body["id"])
        if reservation is None or reservation["commitToken"] != body["commitToken"]:
            raise invalid(f"version {body['id']}: no reservation with this commit token")
        return reservation

    def m_projects_versions_commit(self, body: dict) -> None:
        """The version's archive must be in Team Files; the project's version is now it."""
        reservation = self._reservation(body)
        if self.state.file_path(body["teamFileId"]) is None:
            raise invalid(f"teamFileId {body['teamFileId']} is not a file in Team Files")
        p = self._project(reservation["projectId"])
        number = 1 + max(
            (v["version"] for v in self.state.versions.values() if v["projectId"] == p.id),
            default=0,
        )
        del self.state.reservations[body["id"]]
        self.state.versions[body["id"]] = {"projectId": p.id, "version": number, **body}
        p.version, p.versioned_at = {"id": body["id"], "version": number}, body["projectUpdatedAt"]
        self._json({"success": True})

    def m_projects_versions_cancel_reservation(self, body: dict) -> None:
        self._reservation(body)
        del self.state.reservations[body["id"]]
        self._json({"success": True})

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
            if tag["tagId"] not in names or tag["figureId"] not in figures:
                raise invalid(
                    f"tag {tag['tagId']} or figure {tag['figureId']} is not in the project"
                )
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
        raise not_found(f"image {image_id}")

    def _project_of_dataset(self, dataset_id: int) -> RemoteProject:
        for p in self.state.projects.values():
            if any(d.id == int(dataset_id) for d in p.datasets):
                return p
        raise not_found(f"dataset {dataset_id}")

    def m_images_bulk_add(self, body: dict) -> None:
        """Images added by id (``api.image.upload_ids``): the same bytes, no annotation."""
        p = self._project_of_dataset(body["datasetId"])
        added = []
        for entry in body["images"]:
            if "imageId" not in entry:  # by hash or link: not what the app sends
                raise NotImplementedError(f"images.bulk.add of {sorted(entry)}")
            source = self._image_by_id(entry["imageId"])
            image = RemoteImage(self.state.new_id(), entry["title"], int(body["datasetId"]),
                                source.data, {"size": source.ann.get("size", {}), "tags": [],
                                              "objects": []}, _now())  # fmt: skip
            p.images.append(image)
            added.append(image)
        self._json([self._image_json(i) for i in added])

    def m_workflow_node_add_input(self, body: dict) -> None:
        self._workflow_node("input", body)

    def m_workflow_node_add_output(self, body: dict) -> None:
        self._workflow_node("output", body)

    def _workflow_node(self, kind: str, body: dict) -> None:
        """A node's input or output as ``api.app.workflow`` sends it: a task node, a data type
        this transaction takes, the id of something that exists, a customization of the
        schema the SDK validates against."""
        if body["node"]["type"] != "task":
            raise invalid(f"node.type must be 'task', got {body['node']['type']!r}")
        data_type, data_id = body["type"], body.get("id")
        if data_type not in WORKFLOW_TYPES[kind]:
            raise invalid(f"type {data_type!r} is not an {kind} type")
        if data_type != "app_session" and data_id is None:
            raise invalid(f"id is required for type {data_type!r}")
        if data_type == "folder":
            if not (isinstance(data_id, str) and data_id.startswith("/")):
                raise invalid(f"a folder is a Team Files path, got {data_id!r}")
            if not self.state.local(data_id).is_dir():
                raise invalid(f"folder {data_id} is not in Team Files")
        elif data_type != "app_session" and not isinstance(data_id, int):
            raise invalid(f"id of a {data_type!r} must be an integer, got {data_id!r}")
        exists = {
            "project": lambda: data_id in self.state.projects,
            "project_version": lambda: data_id in self.state.versions,
            "file": lambda: self.state.file_path(data_id) is not None,
            "model_weight": lambda: self.state.file_path(data_id) is not None,
            "dataset": lambda: any(
                d.id == data_id for p in self.state.projects.values() for d in p.datasets
            ),
        }.get(data_type)
        if exists is not None and not exists():
            raise invalid(f"{data_type} {data_id} does not exist")
        self._check_workflow_meta(body.get("meta"))
        self.state.workflow.append((kind, body))
        self._json({"success": True})

    @staticmethod
    def _check_workflow_meta(meta: dict | None) -> None:
        if meta is None:
            return
        parts = {"customRelationSettings", "customNodeSettings"}
        if set(meta) - parts or not set(meta) & parts:
            raise invalid(f"meta must have {sorted(parts)} only, got {sorted(meta)}")
        for name, settings in meta.items():
            if not isinstance(settings, dict) or set(settings) - _SETTINGS_KEYS:
                raise invalid(f"meta.{name} has unknown keys: {settings}")
            check(settings, {"title?": str, "description?": str,
                             "icon?": {"icon": str, "color": str, "backgroundColor": str},
                             "mainLink?": {"url": str, "title": str}}, f"meta.{name}")  # fmt: skip
            for part, keys in (("icon", {"icon", "color", "backgroundColor"}),
                               ("mainLink", {"url", "title"})):  # fmt: skip
                if part in settings and set(settings[part]) != keys:
                    raise invalid(f"meta.{name}.{part} must have exactly {sorted(keys)}")

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
        raise not_found(f"dataset {dataset_id}")

    def _images_in(self, dataset_id: int, image_ids: list[int]) -> dict[int, RemoteImage]:
        """The dataset's images by id; an id not in the dataset is refused."""
        by_id = {i.id: i for i in self._images_of(dataset_id)}
        missing = [i for i in image_ids if i not in by_id]
        if missing:
            raise invalid(f"images {missing} are not in dataset {dataset_id}")
        return by_id

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
        if body["datasetId"] is None:  # a whole project's images: not what the app asks
            raise NotImplementedError("images.list by projectId")
        self._page([self._image_json(i) for i in self._images_of(body["datasetId"])], body)

    def m_images_bulk_download(self, body: dict) -> None:
        by_id = self._images_in(body["datasetId"], body["imageIds"])
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
        by_id = self._images_in(body["datasetId"], body["imageIds"])
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

    def m_figures_list(self, body: dict) -> None:
        """The figures of a dataset's images (``api.image.figure.download``: the project
        version's backup reads them), filtered by image id."""
        p = self._project_of_dataset(body["datasetId"])
        wanted = None
        for rule in body["filter"]:
            if rule["field"] != "entityId" or rule["operator"] != "in":
                raise NotImplementedError(f"figures.list filter {rule}")
            wanted = set(rule["value"])
        class_ids = {c["title"]: c.get("id") for c in p.meta.get("classes", [])}
        rows = []
        for image in self._images_of(body["datasetId"]):
            if wanted is not None and image.id not in wanted:
                continue
            for obj in image.ann.get("objects", []):
                geometry = {k: obj[k] for k in ("points", "bitmap") if k in obj}
                rows.append({
                    "id": obj["id"], "classId": class_ids.get(obj["classTitle"]),
                    "updatedAt": image.updated_at, "createdAt": image.updated_at,
                    "entityId": image.id, "objectId": None, "projectId": p.id,
                    "datasetId": image.dataset_id, "geometryType": obj["geometryType"],
                    "geometry": geometry, "geometryMeta": {}, "tags": obj.get("tags", []),
                    "meta": {}, "area": None, "priority": None, "customData": {},
                })  # fmt: skip
        self._page(rows, body)

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
                if set(pending) != {"name", "path"}:
                    raise invalid("each file part must follow its path and name parts")
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

    def m_tasks_meta_update(self, body: dict) -> None:
        self.state.task_meta.setdefault(body["id"], {}).update(body)
        self._json({"success": True})

    def m_tasks_output_set(self, body: dict) -> None:
        self.state.outputs[int(body["taskId"])] = body["output"]
        self._json({"success": True})


class FakeSupervisely:
    """Runs the server in a thread on 127.0.0.1; ``address`` is the SERVER_ADDRESS to use.
    Leaving the ``with`` block (with no exception on the way) raises ``AssertionError`` if a
    request was refused and not taken with ``state.take_refusals()``, or a handler failed."""

    def __init__(self, team_files_root: Path) -> None:
        self.state = SuperviselyState(team_files_root)
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.state.address = self.address
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeSupervisely:
        self._thread.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        if exc_type is None:
            self.check_clean()

    def check_clean(self) -> None:
        """No refusal left untaken and no handler failure: what the client sent, the platform
        would have taken."""
        problems = [f"refused {m} ({status}): {why}" for m, status, why in self.state.refusals]
        problems += [f"the test server failed: {error}" for error in self.state.server_errors]
        if problems:
            raise AssertionError("\n".join(problems))

    def api(self, retry_count: int = 3):
        """A real ``sly.Api`` client pointed at this server (no waiting between retries)."""
        import supervisely as sly

        return sly.Api(
            self.address, "x" * 128, retry_count=retry_count, retry_sleep_sec=0,
            ignore_task_id=True,
        )  # fmt: skip
