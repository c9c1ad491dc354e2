"""A GitLab (REST API v4) pipelines emulator, built from GitLab's documented JSON shapes.

There is no recorded GitLab fixture; payloads follow the "Pipelines API" documentation:
the list shape ``{id, iid, project_id, sha, ref, status, source, created_at, updated_at,
web_url, name}`` and, for a single pipeline, additionally ``before_sha, tag, yaml_errors,
user, started_at, finished_at, committed_at, duration, queued_duration, coverage,
detailed_status``.

Routes (under ``/api/v4``):

* ``GET /projects/{id|url-encoded path}/pipelines`` — ``per_page`` (default 20, max 100),
  ``page``, ``order_by`` (``id``, ``status``, ``ref``, ``updated_at``), ``sort``
  (``asc``/``desc``, default desc), ``ref``, ``status``; pagination headers (``X-Total``,
  ``X-Page``, ``X-Per-Page``, ``X-Next-Page``…) and a weak ``ETag`` (``If-None-Match`` → 304);
* ``GET /projects/{ref}/pipelines/{id}`` and ``GET /projects/{ref}``.

Auth as GitLab answers it: without a required token a private project is ``404 Project Not
Found``; a wrong token is ``401 Unauthorized``. `rate_limit()` installs GitLab's 429
(``Retry later`` with ``RateLimit-*`` and ``Retry-After`` headers).
"""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

from emulators.base import Emulator, Reply, Request

LIST_FIELDS = (
    "id",
    "iid",
    "project_id",
    "sha",
    "ref",
    "status",
    "source",
    "created_at",
    "updated_at",
    "web_url",
    "name",
)
FINISHED = {"success", "failed", "canceled", "skipped"}
NOT_STARTED = {"created", "waiting_for_resource", "preparing", "pending", "scheduled", "manual"}
DEFAULT_PROJECT = "group/sub/project"


def iso(value: datetime | str | None) -> str | None:
    """GitLab's time format: milliseconds and ``Z``."""
    if value is None or isinstance(value, str):
        return value
    return (
        value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    )


class GitlabEmulator(Emulator):
    """GitLab pipelines on loopback. Program it with `set_builds` (pipelines made with
    `make_pipeline`), `require_token`, `rate_limit` and the base class' `fault`."""

    def __init__(self, latency: float = 0.0) -> None:
        self.projects: dict[int, dict] = {}  # id -> {"id", "path", "pipelines": [...]}
        self.required_token: str | None = None
        self.etags = True
        self._initial_latency = latency
        super().__init__(latency)
        self.reset()

    def reset(self) -> None:
        """Back to the initial state (one project, one pipeline, no faults, no token, no
        requests). Lets one server serve a whole test module."""
        with self._lock:
            self.faults.clear()
            self.requests.clear()
        self.latency = self._initial_latency
        self.projects.clear()
        self.required_token = None
        self.etags = True
        self.set_builds([self.make_pipeline(1, "success")], project=DEFAULT_PROJECT, project_id=1)

    # -- programming ---------------------------------------------------------------------
    def make_pipeline(
        self,
        pipeline_id: int,
        status: str = "success",
        *,
        ref: str = "main",
        sha: str | None = None,
        source: str = "push",
        created_at: datetime | str | None = "auto",
        started_at: datetime | str | None = "auto",
        finished_at: datetime | str | None = "auto",
        updated_at: datetime | str | None = "auto",
        duration: float | str | None = "auto",
        iid: int | None = None,
        web_url: str | None = None,
    ) -> dict:
        """A single-pipeline payload (the full documented shape). ``"auto"`` times are
        plausible for the status: created 10 min ago, started 9 min ago unless not
        started yet, finished 5 min ago when finished."""
        now = datetime.now(UTC).replace(microsecond=0)
        created = now - timedelta(minutes=10) if created_at == "auto" else created_at
        started = (
            (None if status in NOT_STARTED else now - timedelta(minutes=9))
            if started_at == "auto"
            else started_at
        )
        finished = (
            (now - timedelta(minutes=5) if status in FINISHED else None)
            if finished_at == "auto"
            else finished_at
        )
        updated = (finished or started or created) if updated_at == "auto" else updated_at
        if duration == "auto":
            duration = (
                int((finished - started).total_seconds())
                if isinstance(finished, datetime) and isinstance(started, datetime)
                else None
            )
        return {
            "id": pipeline_id,
            "iid": iid if iid is not None else pipeline_id,
            "project_id": None,
            "name": "Build pipeline",
            "sha": sha or hashlib.sha256(str(pipeline_id).encode()).hexdigest()[:40],
            "ref": ref,
            "status": status,
            "source": source,
            "created_at": iso(created),
            "updated_at": iso(updated),
            "web_url": web_url,
            "before_sha": "0" * 40,
            "tag": False,
            "yaml_errors": None,
            "user": {
                "id": 1,
                "username": "root",
                "name": "Administrator",
                "state": "active",
                "avatar_url": None,
                "web_url": None,
            },
            "started_at": iso(started),
            "finished_at": iso(finished),
            "committed_at": None,
            "duration": duration,
            "queued_duration": 1.5 if started else None,
            "coverage": None,
            "detailed_status": {
                "icon": f"status_{status}",
                "text": status,
                "label": status,
                "group": status,
                "tooltip": status,
                "has_details": False,
                "details_path": None,
                "illustration": None,
                "favicon": None,
            },
        }

    def set_builds(
        self,
        pipelines: list[dict],
        *,
        project: str = DEFAULT_PROJECT,
        project_id: int | None = None,
    ) -> int:
        """Replace a project's pipelines; returns its id. ``project_id`` and a missing
        ``web_url`` are filled in."""
        existing = self.project_for_path(project)
        pid = project_id or (existing["id"] if existing else 100 + len(self.projects))
        if existing and existing["id"] != pid:
            self.projects.pop(existing["id"])
        stored = []
        for p in pipelines:
            p = copy.deepcopy(p)
            p["project_id"] = pid
            stored.append(p)
        self.projects[pid] = {"id": pid, "path": project, "pipelines": stored}
        return pid

    def require_token(self, token: str | None) -> None:
        self.required_token = token

    def rate_limit(
        self,
        retry_after: float | None = 60,
        *,
        reset_in: float | None = None,
        times: int | None = None,
        pattern: str = r"^/api/v4/",
    ) -> None:
        """GitLab's throttle answer; ``retry_after=None`` sends only ``RateLimit-Reset``."""
        reset = int(
            datetime.now(UTC).timestamp()
            + (reset_in if reset_in is not None else (retry_after or 60))
        )
        headers = {
            "RateLimit-Name": "throttle_authenticated_api",
            "RateLimit-Limit": "60",
            "RateLimit-Observed": "61",
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": str(reset),
        }
        if retry_after is not None:
            headers["Retry-After"] = str(int(retry_after))
        self.fault(pattern, status=429, headers=headers, body="Retry later\n", times=times)

    def count(self, pattern: str = r".*") -> int:
        return len(self.requests_to(pattern))

    def project_for_path(self, path: str) -> dict | None:
        return next((p for p in self.projects.values() if p["path"] == path), None)

    # -- routes --------------------------------------------------------------------------
    def setup_routes(self) -> None:
        self.route("GET", r"/api/v4/projects/(?P<project>[^/]+)/pipelines", self._list)
        self.route(
            "GET", r"/api/v4/projects/(?P<project>[^/]+)/pipelines/(?P<id>\d+)", self._single
        )
        self.route("GET", r"/api/v4/projects/(?P<project>[^/]+)", self._project)

    def _auth(self, req: Request) -> Reply | None:
        if self.required_token is None:
            return None
        sent = req.headers.get("private-token")
        bearer = req.headers.get("authorization", "")
        if sent == self.required_token or bearer == f"Bearer {self.required_token}":
            return None
        if sent or bearer:
            return Reply(401, {"message": "401 Unauthorized"})
        return Reply(404, {"message": "404 Project Not Found"})  # private: not revealed

    def _find(self, ref: str) -> dict | None:
        if ref.isdigit():
            return self.projects.get(int(ref))
        return self.project_for_path(unquote(ref))

    def _lookup(self, req: Request) -> tuple[dict | None, Reply | None]:
        denied = self._auth(req)
        if denied:
            return None, denied
        project = self._find(req.match["project"])
        if project is None:
            return None, Reply(404, {"message": "404 Project Not Found"})
        return project, None

    def _full(self, project: dict, pipeline: dict) -> dict:
        p = copy.deepcopy(pipeline)
        web = f"{self.url}/{project['path']}/-/pipelines/{p.get('id')}"
        if not p.get("web_url"):
            p["web_url"] = web
        if isinstance(p.get("detailed_status"), dict) and not p["detailed_status"].get(
            "details_path"
        ):
            p["detailed_status"]["details_path"] = f"/{project['path']}/-/pipelines/{p.get('id')}"
        return p

    def _list(self, req: Request) -> Reply:
        project, error = self._lookup(req)
        if error:
            return error
        assert project is not None
        items = [self._full(project, p) for p in project["pipelines"]]
        if req.arg("ref"):
            items = [p for p in items if p.get("ref") == req.arg("ref")]
        if req.arg("status"):
            items = [p for p in items if p.get("status") == req.arg("status")]
        order_by = req.arg("order_by", "id")
        if order_by not in {"id", "status", "ref", "updated_at", "user_id"}:
            return Reply(400, {"error": "order_by does not have a valid value"})
        sort = req.arg("sort", "desc")
        if sort not in {"asc", "desc"}:
            return Reply(400, {"error": "sort does not have a valid value"})
        key = "id" if order_by == "user_id" else order_by
        items.sort(key=lambda p: (p.get(key) is None, p.get(key) or 0), reverse=sort == "desc")
        per_page = max(1, min(int(req.arg("per_page", "20")), 100))
        page = max(1, int(req.arg("page", "1")))
        total = len(items)
        pages = max(1, -(-total // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        body: list[dict[str, Any]] = [{k: p.get(k) for k in LIST_FIELDS} for p in chunk]
        headers = {
            "X-Page": str(page),
            "X-Per-Page": str(per_page),
            "X-Total": str(total),
            "X-Total-Pages": str(pages),
            "X-Next-Page": str(page + 1) if page < pages else "",
            "X-Prev-Page": str(page - 1) if page > 1 else "",
        }
        if self.etags:
            digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
            etag = f'W/"{digest[:32]}"'
            headers["ETag"] = etag
            if req.headers.get("if-none-match") == etag:
                return Reply(304, b"", headers)
        return Reply(200, body, headers)

    def _single(self, req: Request) -> Reply:
        project, error = self._lookup(req)
        if error:
            return error
        assert project is not None
        wanted = int(req.match["id"])
        for p in project["pipelines"]:
            if p.get("id") == wanted:
                return Reply(200, self._full(project, p))
        return Reply(404, {"message": "404 Not found"})

    def _project(self, req: Request) -> Reply:
        project, error = self._lookup(req)
        if error:
            return error
        assert project is not None
        path = project["path"]
        return Reply(
            200,
            {
                "id": project["id"],
                "name": path.rsplit("/", 1)[-1],
                "path": path.rsplit("/", 1)[-1],
                "path_with_namespace": path,
                "name_with_namespace": " / ".join(path.split("/")),
                "default_branch": "main",
                "visibility": "public",
                "web_url": f"{self.url}/{path}",
                "http_url_to_repo": f"{self.url}/{path}.git",
            },
        )


def encoded_path(path: str) -> str:
    """How a project path appears in ``/projects/{path}``."""
    return quote(path, safe="")
