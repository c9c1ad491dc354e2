"""A Travis CI API v3 emulator replaying the shared fixtures.

Payloads come from `emulators.SHARED_FIXTURES / "travis"` at run time (never copied
into the project); where a file is absent, a generated payload of the same shape is used.

Routes (API v3, `Travis-API-Version: 3` is not enforced):

* ``GET /repo/{id|owner%2Frepo}/builds`` — ``limit``, ``offset``, ``sort_by``
  (``number``/``id`` with ``:asc``/``:desc``), ``branch.name``, ``state``; answers the
  ``builds`` collection with a recomputed ``@pagination`` and an ``ETag`` (``If-None-Match``
  → 304);
* ``GET /repo/{ref}``, ``GET /build/{id}``, ``GET /build/{id}/jobs``, ``GET /job/{id}``,
  ``GET /job/{id}/log`` (``{"@type": "log", "content": …}``).

Errors use Travis' body shape: the recorded 403 (``insufficient_access``) when a required
token is missing or wrong, and a ``not_found`` body for unknown repositories, builds or jobs.
Faults, latency and recorded requests come from `Emulator`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

from emulators.base import Emulator, Reply, Request

DEFAULT_SLUG = "kevinburke/travis"
DEFAULT_REPO_ID = 18699435
DEFAULT_LOG = (
    "travis_fold:start:worker_info\nWorker information\n...\nDone. Your build exited with 0.\n"
)


def fixtures_dir() -> Path:
    from emulators import SHARED_FIXTURES

    return SHARED_FIXTURES / "travis"


def _load_json(name: str) -> Any | None:
    try:
        return json.loads((fixtures_dir() / name).read_text())
    except (OSError, ValueError):
        return None


def _load_text(name: str) -> str | None:
    try:
        return (fixtures_dir() / name).read_text(errors="replace")
    except OSError:
        return None


def iso(value: datetime | str | None) -> str | None:
    """Travis time format: ``%Y-%m-%dT%H:%M:%SZ``."""
    if value is None or isinstance(value, str):
        return value
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- generated payloads (used when the shared fixtures are absent) -----------------------


def _generated_build() -> dict:
    return {
        "@type": "build",
        "@href": "/build/1",
        "@representation": "standard",
        "@permissions": {"read": True, "cancel": True, "restart": True},
        "id": 1,
        "number": "1",
        "state": "passed",
        "duration": 60,
        "event_type": "push",
        "previous_state": "passed",
        "pull_request_title": None,
        "pull_request_number": None,
        "started_at": "2021-05-03T10:26:13Z",
        "finished_at": "2021-05-03T10:27:13Z",
        "private": False,
        "priority": False,
        "repository": {
            "@type": "repository",
            "@href": f"/repo/{DEFAULT_REPO_ID}",
            "@representation": "minimal",
            "id": DEFAULT_REPO_ID,
            "name": "travis",
            "slug": DEFAULT_SLUG,
        },
        "branch": {
            "@type": "branch",
            "@href": f"/repo/{DEFAULT_REPO_ID}/branch/master",
            "@representation": "minimal",
            "name": "master",
        },
        "tag": None,
        "commit": {
            "@type": "commit",
            "@representation": "minimal",
            "id": 1,
            "sha": "0" * 40,
            "ref": "refs/heads/master",
            "message": "generated",
            "compare_url": "https://github.com/kevinburke/travis/compare/a...b",
            "committed_at": "2021-05-03T10:25:04Z",
        },
        "jobs": [{"@type": "job", "@href": "/job/2", "@representation": "minimal", "id": 2}],
        "stages": [],
        "created_by": {
            "@type": "user",
            "@href": "/user/1",
            "@representation": "minimal",
            "id": 1,
            "login": "someone",
        },
        "updated_at": "2021-05-03T10:27:13.000Z",
    }


def _generated_job() -> dict:
    return {
        "@type": "job",
        "@href": "/job/2",
        "@representation": "standard",
        "@permissions": {
            "read": True,
            "delete_log": True,
            "cancel": True,
            "restart": True,
            "debug": True,
        },
        "id": 2,
        "allow_failure": False,
        "number": "1.1",
        "state": "passed",
        "started_at": "2021-05-03T10:26:13Z",
        "finished_at": "2021-05-03T10:27:13Z",
        "build": {
            "@type": "build",
            "@href": "/build/1",
            "@representation": "minimal",
            "id": 1,
            "number": "1",
            "state": "passed",
        },
        "queue": "builds.gce",
        "repository": {
            "@type": "repository",
            "@href": f"/repo/{DEFAULT_REPO_ID}",
            "@representation": "minimal",
            "id": DEFAULT_REPO_ID,
            "name": "travis",
            "slug": DEFAULT_SLUG,
        },
        "commit": {"@type": "commit", "@representation": "minimal", "id": 1, "sha": "0" * 40},
        "owner": {
            "@type": "user",
            "@href": "/user/1",
            "@representation": "minimal",
            "id": 1,
            "login": "someone",
        },
        "stage": None,
        "created_at": "2021-05-03T10:25:52.318Z",
        "updated_at": "2021-05-03T10:27:13.000Z",
    }


GENERATED_403 = {
    "@type": "error",
    "error_type": "insufficient_access",
    "error_message": "operation requires read access to repository",
    "resource_type": "repository",
}


class TravisEmulator(Emulator):
    """Travis API v3 on loopback. Program it with `set_builds`, `set_log`, `require_token`,
    `rate_limit` (and the base class' `fault`); read `requests` / `count()`."""

    def __init__(self, latency: float = 0.0, *, load_fixtures: bool = True) -> None:
        self.repos: dict[int, dict] = {}  # id -> {"id", "name", "slug", "builds": [...]}
        self.jobs: dict[int, dict] = {}
        self.logs: dict[int, str] = {}
        self.required_token: str | None = None
        self.etags = True
        listing = _load_json("builds.standard.kevinburke-travis.branch-master.json")
        single = _load_json("build.standard.crs4-iwc.769307075.json")
        job = _load_json("job.standard.769307076.json")
        self.from_fixtures = bool(load_fixtures and listing and single and job)
        self.build_template = copy.deepcopy(single) if self.from_fixtures else _generated_build()
        self.job_template = copy.deepcopy(job) if self.from_fixtures else _generated_job()
        self.error_403 = (
            _load_json("error.403.insufficient_access.json") if load_fixtures else None
        ) or GENERATED_403
        self.default_log = (
            _load_text("job-log.failure.kevinburke.txt") if load_fixtures else None
        ) or DEFAULT_LOG
        self._recorded = (listing, single, job)
        self._initial_latency = latency
        super().__init__(latency)
        self.reset()

    def reset(self) -> None:
        """Back to the initial state: recorded data, no faults, no token, no requests. Lets
        one server serve a whole test module (starting and stopping one costs ~0.5 s)."""
        with self._lock:
            self.faults.clear()
            self.requests.clear()
        self.latency = self._initial_latency
        self.repos.clear()
        self.jobs.clear()
        self.logs.clear()
        self.required_token = None
        self.etags = True
        if self.from_fixtures:
            self._replay_fixtures(*self._recorded)
        else:
            self.set_builds(
                [self.make_build(1, "passed")], slug=DEFAULT_SLUG, repo_id=DEFAULT_REPO_ID
            )

    # -- programming ---------------------------------------------------------------------
    def _replay_fixtures(self, listing: dict, single: dict, job: dict) -> None:
        """The recorded payloads, as recorded: kevinburke/travis (2 builds) and crs4/iwc
        (build 769307075 with job 769307076 and its log excerpt)."""
        for build in [*listing["builds"], single]:
            repo = build["repository"]
            entry = self.repos.setdefault(
                repo["id"],
                {"id": repo["id"], "name": repo["name"], "slug": repo["slug"], "builds": []},
            )
            entry["builds"].append(copy.deepcopy(build))
            for ref in build.get("jobs", []):
                self.jobs.setdefault(ref["id"], self._job_for(build, ref["id"]))
        self.jobs[job["id"]] = copy.deepcopy(job)
        excerpt = _load_text("job-log.excerpt.769307076.txt")
        if excerpt:
            self.logs[job["id"]] = excerpt

    def make_build(
        self,
        build_id: int,
        state: str = "passed",
        *,
        number: int | str | None = None,
        started_at: datetime | str | None = "auto",
        finished_at: datetime | str | None = "auto",
        duration: int | None = None,
        sha: str | None = None,
        branch: str = "master",
        jobs: int = 1,
    ) -> dict:
        """A standard-representation build from the recorded template. Times default to a
        plausible past (started 10 min ago; finished unless the build is still going);
        pass None for a null field."""
        b = copy.deepcopy(self.build_template)
        now = datetime.now(UTC).replace(microsecond=0)
        if started_at == "auto":
            started_at = (
                None
                if state in {"created", "received", "queued"}
                else (now - timedelta(minutes=10))
            )
        if finished_at == "auto":
            finished_at = (
                None
                if state in {"created", "received", "queued", "started"}
                else now - timedelta(minutes=5)
            )
        b.update(
            {
                "@href": f"/build/{build_id}",
                "id": build_id,
                "number": str(number if number is not None else build_id),
                "state": state,
                "started_at": iso(started_at),
                "finished_at": iso(finished_at),
            }
        )
        if duration is not None:
            b["duration"] = duration
        elif isinstance(started_at, datetime) and isinstance(finished_at, datetime):
            b["duration"] = int((finished_at - started_at).total_seconds())
        else:
            b["duration"] = None
        if isinstance(b.get("commit"), dict):
            b["commit"]["sha"] = sha or hashlib.sha256(str(build_id).encode()).hexdigest()[:40]
        if isinstance(b.get("branch"), dict):
            b["branch"]["name"] = branch
        b["jobs"] = [
            {
                "@type": "job",
                "@href": f"/job/{build_id * 10 + n}",
                "@representation": "minimal",
                "id": build_id * 10 + n,
            }
            for n in range(1, jobs + 1)
        ]
        return b

    def set_builds(
        self, builds: list[dict], *, slug: str = "owner/repo", repo_id: int | None = None
    ) -> int:
        """Replace a repository's builds (given newest first or in any order: the emulator
        sorts as asked). Returns the repository id; jobs are created for each build."""
        owner_repo = self.repo_for_slug(slug)
        rid = repo_id or (owner_repo["id"] if owner_repo else 10_000 + len(self.repos))
        name = slug.split("/", 1)[1]
        entry = {"id": rid, "name": name, "slug": slug, "builds": []}
        for build in builds:
            b = copy.deepcopy(build)
            b["repository"] = {
                "@type": "repository",
                "@href": f"/repo/{rid}",
                "@representation": "minimal",
                "id": rid,
                "name": name,
                "slug": slug,
            }
            entry["builds"].append(b)
            for ref in b.get("jobs", []):
                self.jobs[ref["id"]] = self._job_for(b, ref["id"])
        self.repos[rid] = entry
        return rid

    def set_log(self, job_id: int, text: str) -> None:
        self.logs[job_id] = text

    def require_token(self, token: str | None) -> None:
        self.required_token = token

    def rate_limit(
        self, retry_after: float | None = 60, *, times: int | None = None, pattern: str = r"^/"
    ) -> None:
        headers = {"X-RateLimit-Remaining": "0"}
        if retry_after is not None:
            headers["Retry-After"] = str(int(retry_after))
        self.fault(
            pattern,
            status=429,
            headers=headers,
            times=times,
            body={
                "@type": "error",
                "error_type": "rate_limit",
                "error_message": "rate limit exceeded",
            },
        )

    def count(self, pattern: str = r".*") -> int:
        return len(self.requests_to(pattern))

    def repo_for_slug(self, slug: str) -> dict | None:
        return next((r for r in self.repos.values() if r["slug"] == slug), None)

    # -- routes --------------------------------------------------------------------------
    def setup_routes(self) -> None:
        self.route("GET", r"/repo/(?P<repo>[^/]+)/builds", self._builds)
        self.route("GET", r"/repo/(?P<repo>[^/]+)", self._repo)
        self.route("GET", r"/build/(?P<id>\d+)", self._build)
        self.route("GET", r"/build/(?P<id>\d+)/jobs", self._build_jobs)
        self.route("GET", r"/job/(?P<id>\d+)", self._job)
        self.route("GET", r"/job/(?P<id>\d+)/log", self._log)

    def _denied(self, req: Request) -> Reply | None:
        if self.required_token is None:
            return None
        if req.headers.get("authorization") == f"token {self.required_token}":
            return None
        return Reply(403, copy.deepcopy(self.error_403))

    @staticmethod
    def _not_found(kind: str) -> Reply:
        return Reply(
            404,
            {
                "@type": "error",
                "error_type": "not_found",
                "error_message": f"{kind} not found (or insufficient access)",
                "resource_type": kind,
            },
        )

    def _find_repo(self, ref: str) -> dict | None:
        if ref.isdigit():
            return self.repos.get(int(ref))
        return self.repo_for_slug(unquote(ref))

    def _conditional(self, req: Request, body: dict) -> Reply:
        if not self.etags:
            return Reply(200, body)
        data = json.dumps(body, sort_keys=True).encode()
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        if req.headers.get("if-none-match") == etag:
            return Reply(304, b"", {"ETag": etag})
        return Reply(200, body, {"ETag": etag})

    def _builds(self, req: Request) -> Reply:
        denied = self._denied(req)
        if denied:
            return denied
        repo = self._find_repo(req.match["repo"])
        if repo is None:
            return self._not_found("repository")
        builds = list(repo["builds"])
        branch = req.arg("branch.name")
        if branch:
            builds = [b for b in builds if (b.get("branch") or {}).get("name") == branch]
        state = req.arg("state")
        if state:
            builds = [b for b in builds if b.get("state") in state.split(",")]
        sort_by = req.arg("sort_by")
        if sort_by:
            field, _, order = sort_by.partition(":")
            if field in {"number", "id"}:
                builds.sort(key=lambda b: int(b.get(field) or 0), reverse=order == "desc")
        limit = min(int(req.arg("limit", "25")), 100)
        offset = int(req.arg("offset", "0"))
        page = builds[offset : offset + limit]
        path = f"/repo/{req.match['repo']}/builds"
        query = {k: v[0] for k, v in req.query.items() if k not in {"limit", "offset"}}

        def href(off: int) -> dict:
            q = urlencode({**query, **({"offset": off} if off else {}), "limit": limit})
            return {"@href": f"{path}?{q}", "offset": off, "limit": limit}

        last_offset = max(0, (len(builds) - 1) // limit * limit)
        body = {
            "@type": "builds",
            "@href": f"{path}?{urlencode({k: v[0] for k, v in req.query.items()})}".rstrip("?"),
            "@representation": "standard",
            "@pagination": {
                "limit": limit,
                "offset": offset,
                "count": len(builds),
                "is_first": offset == 0,
                "is_last": offset + limit >= len(builds),
                "next": href(offset + limit) if offset + limit < len(builds) else None,
                "prev": href(max(0, offset - limit)) if offset > 0 else None,
                "first": href(0),
                "last": href(last_offset),
            },
            "builds": copy.deepcopy(page),
        }
        return self._conditional(req, body)

    def _repo(self, req: Request) -> Reply:
        denied = self._denied(req)
        if denied:
            return denied
        repo = self._find_repo(req.match["repo"])
        if repo is None:
            return self._not_found("repository")
        owner = repo["slug"].split("/", 1)[0]
        return Reply(
            200,
            {
                "@type": "repository",
                "@href": f"/repo/{repo['id']}",
                "@representation": "standard",
                "id": repo["id"],
                "name": repo["name"],
                "slug": repo["slug"],
                "description": None,
                "github_id": None,
                "vcs_id": None,
                "vcs_type": "GithubRepository",
                "owner_name": owner,
                "private": False,
                "active": True,
                "default_branch": {
                    "@type": "branch",
                    "@representation": "minimal",
                    "@href": f"/repo/{repo['id']}/branch/master",
                    "name": "master",
                },
                "starred": False,
            },
        )

    def _all_builds(self) -> dict[int, dict]:
        return {b["id"]: b for r in self.repos.values() for b in r["builds"]}

    def _build(self, req: Request) -> Reply:
        denied = self._denied(req)
        if denied:
            return denied
        build = self._all_builds().get(int(req.match["id"]))
        return Reply(200, copy.deepcopy(build)) if build else self._not_found("build")

    def _build_jobs(self, req: Request) -> Reply:
        denied = self._denied(req)
        if denied:
            return denied
        build = self._all_builds().get(int(req.match["id"]))
        if build is None:
            return self._not_found("build")
        jobs = [
            copy.deepcopy(self.jobs.get(ref["id"]) or self._job_for(build, ref["id"]))
            for ref in build.get("jobs", [])
        ]
        return Reply(
            200,
            {
                "@type": "jobs",
                "@href": f"/build/{build['id']}/jobs",
                "@representation": "standard",
                "jobs": jobs,
            },
        )

    def _job(self, req: Request) -> Reply:
        denied = self._denied(req)
        if denied:
            return denied
        job = self.jobs.get(int(req.match["id"]))
        return Reply(200, copy.deepcopy(job)) if job else self._not_found("job")

    def _log(self, req: Request) -> Reply:
        denied = self._denied(req)
        if denied:
            return denied
        job_id = int(req.match["id"])
        if job_id not in self.jobs:
            return self._not_found("job")
        # The recorded material is only the `content` text; this is the documented envelope.
        return Reply(
            200,
            {
                "@type": "log",
                "@href": f"/job/{job_id}/log",
                "@representation": "standard",
                "id": job_id,
                "content": self.logs.get(job_id, self.default_log),
                "log_parts": [],
            },
        )

    def _job_for(self, build: dict, job_id: int) -> dict:
        job = copy.deepcopy(self.job_template)
        index = next(
            (n for n, ref in enumerate(build.get("jobs", []), 1) if ref.get("id") == job_id), 1
        )
        job.update(
            {
                "@href": f"/job/{job_id}",
                "id": job_id,
                "number": f"{build.get('number')}.{index}",
                "state": build.get("state"),
                "started_at": build.get("started_at"),
                "finished_at": build.get("finished_at"),
            }
        )
        job["build"] = {
            "@type": "build",
            "@href": f"/build/{build['id']}",
            "@representation": "minimal",
            "id": build["id"],
            "number": build.get("number"),
            "state": build.get("state"),
        }
        if isinstance(build.get("repository"), dict):
            job["repository"] = copy.deepcopy(build["repository"])
        return job


def encoded_slug(slug: str) -> str:
    """How a slug appears in a `/repo/{slug}` path."""
    return quote(slug, safe="")
