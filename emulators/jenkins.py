"""A Jenkins emulator: the JSON API (with `tree=` filtering), folders, multibranch projects,
build pages and consoleText, optional Basic authentication.

It replays the recorded bodies from the shared fixtures (`jenkins/api4jenkins`,
`jenkins/jenkins-rest`), with the recorded hosts rewritten to the emulator's URL, and
regenerates bodies in the same shapes for programmed build sequences:

    with JenkinsEmulator() as jenkins:
        jenkins.set_builds("job/a/job/b", [{"result": "SUCCESS"}, {"building": True}])
        ...  # newest first; numbers, times, durations are filled in

Replayed jobs (when the fixtures are present; generated look-alikes otherwise):
``job/Level1_WorkflowJob`` (builds 52..45), ``job/folder`` (a folder) with
``job/folder/job/pipeline`` (recorded build #52, FAILURE), ``job/Level1_multibranchjob``
(multibranch) with ``.../job/master``, ``job/fish`` (FreeStyle, #7 building) and
``job/freestylejob`` (recorded build #14). Every build's consoleText is the recorded log
unless `set_log` says otherwise.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from emulators.base import Emulator, Reply, Request

PLACEHOLDER = "http://jenkins.emulator"  # generated bodies; rewritten when served
RECORDED_BASES = ("http://0.0.0.0:8080", "http://localhost:32769", "http://localhost:8080")
FOLDER_CLASS = "com.cloudbees.hudson.plugins.folder.Folder"
MULTIBRANCH_CLASS = "org.jenkinsci.plugins.workflow.multibranch.WorkflowMultiBranchProject"
PIPELINE_CLASS = "org.jenkinsci.plugins.workflow.job.WorkflowJob"
FREESTYLE_CLASS = "hudson.model.FreeStyleProject"
RUN_CLASSES = {
    "pipeline": "org.jenkinsci.plugins.workflow.job.WorkflowRun",
    "freestyle": "hudson.model.FreeStyleBuild",
}
COLORS = {
    "SUCCESS": "blue",
    "FAILURE": "red",
    "UNSTABLE": "yellow",
    "ABORTED": "aborted",
    "NOT_BUILT": "notbuilt",
    None: "notbuilt",
}
_JOB = r"(?P<job>(?:(?:job|view)/[^/]+/)*job/[^/]+)"
_BUILD_REF = r"(?P<ref>\d+|lastBuild|lastCompletedBuild|lastSuccessfulBuild|lastFailedBuild)"

# Shapes used when the shared fixtures are absent (the fields our adapter and Jenkins
# clients read, as recorded).
_FALLBACK_RUN: dict[str, Any] = {
    "_class": RUN_CLASSES["pipeline"],
    "actions": [{"_class": "hudson.model.CauseAction", "causes": []}],
    "artifacts": [],
    "building": False,
    "description": None,
    "displayName": "#1",
    "duration": 60000,
    "estimatedDuration": 60000,
    "executor": None,
    "fullDisplayName": "job #1",
    "id": "1",
    "keepLog": False,
    "number": 1,
    "queueId": 1,
    "result": "SUCCESS",
    "timestamp": 1559281453240,
    "url": f"{PLACEHOLDER}/job/job/1/",
    "changeSets": [],
    "culprits": [],
    "nextBuild": None,
    "previousBuild": None,
}
_FALLBACK_JOB: dict[str, Any] = {
    "_class": PIPELINE_CLASS,
    "actions": [],
    "description": "",
    "displayName": "job",
    "displayNameOrNull": None,
    "fullDisplayName": "job",
    "fullName": "job",
    "name": "job",
    "url": f"{PLACEHOLDER}/job/job/",
    "buildable": True,
    "builds": [],
    "color": "blue",
    "healthReport": [],
    "inQueue": False,
    "keepDependencies": False,
    "nextBuildNumber": 1,
    "property": [],
    "queueItem": None,
    "concurrentBuild": True,
    "resumeBlocked": False,
}
_FALLBACK_FOLDER: dict[str, Any] = {
    "_class": FOLDER_CLASS,
    "actions": [],
    "description": "",
    "displayName": "folder",
    "displayNameOrNull": None,
    "fullDisplayName": "folder",
    "fullName": "folder",
    "name": "folder",
    "url": f"{PLACEHOLDER}/job/folder/",
    "jobs": [],
    "primaryView": {"_class": "hudson.model.AllView", "name": "All", "url": ""},
    "views": [],
}
_FALLBACK_LOG = "Started by user anonymous\nRunning as SYSTEM\nBuilding...\nFinished: SUCCESS\n"


def fixtures_dir() -> Path | None:
    from emulators import SHARED_FIXTURES

    path = SHARED_FIXTURES / "jenkins"
    return path if path.is_dir() else None


def _load(relative: str) -> Any | None:
    base = fixtures_dir()
    if base is None or not (base / relative).is_file():
        return None
    text = (base / relative).read_text(encoding="utf-8")
    return text if relative.endswith(".txt") else json.loads(text)


# -- `tree=` (Jenkins' field selector) ------------------------------------------------------


def parse_tree(text: str) -> list[tuple[str, list | None, slice | None]]:
    """``a,b[c,d[e]]{0,10}`` → [(name, sub-spec, range)]; ValueError on bad syntax."""
    pos = 0

    def parse_list() -> list:
        nonlocal pos
        items = []
        while True:
            m = re.compile(r"[^,\[\]{}]*").match(text, pos)
            name = m.group(0).strip()
            pos = m.end()
            if not name:
                raise ValueError(f"empty field name at {pos}")
            sub = rng = None
            if pos < len(text) and text[pos] == "[":
                pos += 1
                sub = parse_list()
                if pos >= len(text) or text[pos] != "]":
                    raise ValueError("missing ]")
                pos += 1
            if pos < len(text) and text[pos] == "{":
                end = text.index("}", pos)
                rng = _range(text[pos + 1 : end])
                pos = end + 1
            items.append((name, sub, rng))
            if pos < len(text) and text[pos] == ",":
                pos += 1
                continue
            return items

    spec = parse_list()
    if pos != len(text):
        raise ValueError(f"unexpected {text[pos]!r} at {pos}")
    return spec


def _range(text: str) -> slice:
    if "," not in text:
        n = int(text)
        return slice(n, n + 1)
    low, high = text.split(",", 1)
    return slice(int(low) if low.strip() else 0, int(high) if high.strip() else None)


def apply_tree(value: Any, spec: list) -> Any:
    if isinstance(value, list):
        return [apply_tree(v, spec) for v in value]
    if not isinstance(value, dict):
        return value
    out = {"_class": value["_class"]} if "_class" in value else {}  # Jenkins always adds it
    for name, sub, rng in spec:
        if name not in value:
            continue
        item = value[name]
        if rng is not None and isinstance(item, list):
            item = item[rng]
        if sub is not None:
            item = apply_tree(item, sub)
        elif isinstance(item, dict | list):
            item = _shallow(item)
        out[name] = item
    return out


def _shallow(value: Any) -> Any:
    # A field named without a sub-selection shows only the nested objects' class.
    if isinstance(value, list):
        return [_shallow(v) for v in value]
    if isinstance(value, dict):
        return {"_class": value["_class"]} if "_class" in value else {}
    return value


# -- the emulator ---------------------------------------------------------------------------


@dataclass
class Job:
    path: str  # "job/a/job/b"
    kind: str  # pipeline | freestyle | folder | multibranch
    body: dict  # the job's own fields (templates as recorded, placeholder host)
    builds: list[dict] = field(default_factory=list)  # full build bodies, newest first
    logs: dict[int, str] = field(default_factory=dict)

    @property
    def is_container(self) -> bool:
        return self.kind in {"folder", "multibranch"}


def _to_ms(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


def _names(path: str) -> list[str]:
    return [p for i, p in enumerate(path.split("/")) if i % 2 == 1]


def normalise(path: str) -> str:
    """``/job/a/view/x/job/b/`` → ``job/a/job/b`` (views do not change which job it is)."""
    parts = path.strip("/").split("/")
    pairs = [(parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]
    return "/".join(f"job/{name}" for kind, name in pairs if kind == "job")


class JenkinsEmulator(Emulator):
    """Jenkins on loopback. `replay=False` starts empty (only programmed jobs)."""

    def __init__(self, latency: float = 0.0, *, replay: bool = True) -> None:
        self.jobs: dict[str, Job] = {}
        self.auth: tuple[str, str] | None = None
        self.default_log = _load("jenkins-rest/build-consoleText.txt") or _FALLBACK_LOG
        self._run_templates = {
            "pipeline": _load("api4jenkins/run/workflowrun.json") or _FALLBACK_RUN,
            "freestyle": _load("api4jenkins/run/freestylebuild.json")
            or {**_FALLBACK_RUN, "_class": RUN_CLASSES["freestyle"]},
        }
        self._job_templates = {
            "pipeline": _load("api4jenkins/job/pipeline.json") or _FALLBACK_JOB,
            "freestyle": _load("jenkins-rest/job-info.json")
            or {**_FALLBACK_JOB, "_class": FREESTYLE_CLASS},
            "folder": _load("api4jenkins/job/folder.json") or _FALLBACK_FOLDER,
            "multibranch": _load("api4jenkins/job/mbranch.json")
            or {**_FALLBACK_FOLDER, "_class": MULTIBRANCH_CLASS},
        }
        super().__init__(latency=latency)
        if replay:
            self._replay()

    # -- programming ----------------------------------------------------------------------
    def add_folder(self, path: str, *, multibranch: bool = False) -> Job:
        path = normalise(path)
        self._ensure_parents(path)
        kind = "multibranch" if multibranch else "folder"
        job = Job(path, kind, self._job_body(path, kind))
        self.jobs[path] = job
        return job

    def add_job(self, path: str, *, kind: str = "pipeline") -> Job:
        path = normalise(path)
        self._ensure_parents(path)
        job = self.jobs.get(path)
        if job is None or job.kind != kind:
            job = Job(path, kind, self._job_body(path, kind))
            self.jobs[path] = job
        return job

    def set_builds(self, path: str, builds: list[dict], *, kind: str | None = None) -> list[dict]:
        """Replace a job's builds, given **newest first** as short specs:
        ``number`` (default: counting down to 1), ``result`` (SUCCESS, FAILURE, ABORTED,
        UNSTABLE, NOT_BUILT or None; default SUCCESS), ``building`` (default False),
        ``timestamp`` (ms or datetime; default one hour apart, ending now), ``duration``
        (ms; default 60 s, 0 while building) and ``sha`` (git revision). Parent folders are
        created. Returns the generated full build bodies."""
        existing = self.jobs.get(normalise(path))
        job = self.add_job(
            path,
            kind=kind or (existing.kind if existing and not existing.is_container else "pipeline"),
        )
        now_ms = int(time.time() * 1000)
        bodies = []
        for i, spec in enumerate(builds):
            number = int(spec.get("number", len(builds) - i))
            bodies.append(self._build_body(job, number, spec, now_ms - (i + 1) * 3_600_000))
        job.builds = sorted(bodies, key=lambda b: b["number"], reverse=True)
        return copy.deepcopy(job.builds)

    def set_log(self, path: str, number: int, text: str) -> None:
        self.jobs[normalise(path)].logs[int(number)] = text

    def require_auth(self, user: str, token: str) -> None:
        """Answer 403 without credentials and 401 with wrong ones (as Jenkins does)."""
        self.auth = (user, token)

    def job_url(self, path: str) -> str:
        return f"{self.url}/{normalise(path)}/"

    def api_requests(self, path: str | None = None) -> list[Request]:
        """Requests to a job's (or any job's) JSON API."""
        if path is None:
            return self.requests_to(r"/api/json$")
        return self.requests_to(rf"^/{re.escape(normalise(path))}/api/json$")

    def reset_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- routes ---------------------------------------------------------------------------
    def setup_routes(self) -> None:
        self.route("GET", r"/api/json", self._root)
        self.route("GET", rf"/{_JOB}/?api/json", self._job_api)
        self.route("GET", rf"/{_JOB}/{_BUILD_REF}/api/json", self._build_api)
        self.route("GET", rf"/{_JOB}/{_BUILD_REF}/consoleText", self._console)
        self.route("GET", rf"/{_JOB}/?", self._job_page)

    def _guard(self, req: Request) -> Reply | None:
        if self.auth is None:
            return None
        header = req.headers.get("authorization", "")
        if not header:
            return Reply(
                403,
                "<html><body>Authentication required</body></html>",
                {"X-You-Are-Authenticated-As": "anonymous"},
                content_type="text/html;charset=utf-8",
            )
        expected = "Basic " + base64.b64encode(":".join(self.auth).encode()).decode()
        if header != expected:
            return Reply(
                401,
                "<html><body>Invalid password/token for user</body></html>",
                {"WWW-Authenticate": 'Basic realm="Jenkins"'},
                content_type="text/html;charset=utf-8",
            )
        return None

    def _json(self, body: Any, status: int = 200) -> Reply:
        text = json.dumps(body)
        for recorded in (PLACEHOLDER, *RECORDED_BASES):
            text = text.replace(recorded, self.url)
        return Reply(
            status,
            text.encode(),
            {"X-Jenkins": "2.440.3"},
            content_type="application/json;charset=utf-8",
        )

    def _tree(self, req: Request, body: dict) -> Reply:
        tree = req.arg("tree")
        if tree:
            try:
                body = apply_tree(body, parse_tree(tree))
            except (ValueError, IndexError) as exc:
                return Reply(400, f"Bad tree expression: {exc}", content_type="text/plain")
        return self._json(body)

    def _lookup(self, req: Request) -> Job | None:
        return self.jobs.get(normalise(req.match["job"]))

    def _root(self, req: Request) -> Reply:
        denied = self._guard(req)
        if denied:
            return denied
        template = _load("api4jenkins/jenkins/jenkins.json") or {"_class": "hudson.model.Hudson"}
        body = {**template, "jobs": self._children("")}
        return self._tree(req, body)

    def _job_api(self, req: Request) -> Reply:
        denied = self._guard(req)
        if denied:
            return denied
        job = self._lookup(req)
        if job is None:
            return self._not_found()
        body = self._job_full(job) if req.arg("tree") else self._job_full_depth0(job)
        return self._tree(req, body)

    def _build_api(self, req: Request) -> Reply:
        denied = self._guard(req)
        if denied:
            return denied
        job = self._lookup(req)
        build = self._find_build(job, req.match["ref"]) if job else None
        if build is None:
            return self._not_found()
        return self._tree(req, build)

    def _console(self, req: Request) -> Reply:
        denied = self._guard(req)
        if denied:
            return denied
        job = self._lookup(req)
        build = self._find_build(job, req.match["ref"]) if job else None
        if job is None or build is None:
            return self._not_found()
        text = job.logs.get(build["number"], self.default_log)
        return Reply(200, text.encode(), content_type="text/plain;charset=utf-8")

    def _job_page(self, req: Request) -> Reply:
        if self._lookup(req) is None:
            return self._not_found()
        return Reply(200, "<html><body>Jenkins job</body></html>", content_type="text/html")

    @staticmethod
    def _not_found() -> Reply:
        # Jenkins answers an HTML error page (no recorded body exists; contract gap).
        return Reply(
            404,
            "<html><body><h2>HTTP ERROR 404 Not Found</h2></body></html>",
            content_type="text/html;charset=utf-8",
        )

    # -- bodies ---------------------------------------------------------------------------
    def _job_body(self, path: str, kind: str) -> dict:
        body = copy.deepcopy(self._job_templates[kind])
        names = _names(path)
        full = "/".join(names)
        body.update(
            {
                "name": names[-1],
                "displayName": names[-1],
                "fullName": full,
                "fullDisplayName": " » ".join(names),
                "url": f"{PLACEHOLDER}/{path}/",
            }
        )
        for key in (
            "builds",
            "jobs",
            "lastBuild",
            "firstBuild",
            "lastCompletedBuild",
            "lastFailedBuild",
            "lastStableBuild",
            "lastSuccessfulBuild",
            "lastUnstableBuild",
            "lastUnsuccessfulBuild",
            "queueItem",
        ):
            body.pop(key, None)
        if kind == "pipeline":
            body["_class"] = PIPELINE_CLASS
        elif kind == "freestyle":
            body["_class"] = FREESTYLE_CLASS
        return body

    def _build_body(self, job: Job, number: int, spec: dict, default_ts: int) -> dict:
        body = copy.deepcopy(self._run_templates.get(job.kind, self._run_templates["pipeline"]))
        building = bool(spec.get("building", False))
        result = None if building else spec.get("result", "SUCCESS")
        body.update(
            {
                "_class": RUN_CLASSES.get(job.kind, RUN_CLASSES["pipeline"]),
                "number": number,
                "id": str(number),
                "displayName": f"#{number}",
                "fullDisplayName": f"{' » '.join(_names(job.path))} #{number}",
                "building": building,
                "result": result,
                "timestamp": _to_ms(spec.get("timestamp", default_ts)),
                "duration": 0 if building else int(spec.get("duration", 60_000)),
                "url": f"{PLACEHOLDER}/{job.path}/{number}/",
                "executor": {"_class": "hudson.model.OneOffExecutor"} if building else None,
            }
        )
        actions = [
            a
            for a in body.get("actions", [])
            if not (isinstance(a, dict) and "lastBuiltRevision" in a)
        ]
        if spec.get("sha"):
            actions.append(
                {
                    "_class": "hudson.plugins.git.util.BuildData",
                    "lastBuiltRevision": {
                        "SHA1": spec["sha"],
                        "branch": [{"SHA1": spec["sha"], "name": "refs/remotes/origin/main"}],
                    },
                    "remoteUrls": ["https://example.org/repo.git"],
                }
            )
        body["actions"] = actions
        return body

    def _ref(self, build: dict | None) -> dict | None:
        if build is None:
            return None
        return {"_class": build.get("_class"), "number": build["number"], "url": build["url"]}

    def _children(self, path: str) -> list[dict]:
        depth = len(path.split("/")) + 2 if path else 2
        prefix = f"{path}/" if path else ""
        out = []
        for child in sorted(self.jobs.values(), key=lambda j: j.path):
            if child.path.startswith(prefix) and len(child.path.split("/")) == depth:
                entry = {
                    "_class": child.body.get("_class"),
                    "name": _names(child.path)[-1],
                    "url": f"{PLACEHOLDER}/{child.path}/",
                }
                if not child.is_container:
                    last = next((b for b in child.builds if not b["building"]), None)
                    entry["color"] = COLORS.get(last["result"] if last else None, "notbuilt")
                out.append(entry)
        return out

    def _job_full(self, job: Job) -> dict:
        body = copy.deepcopy(job.body)
        if job.is_container:
            body["jobs"] = self._children(job.path)
            return body
        builds = job.builds

        def first(pred) -> dict | None:
            return next((b for b in builds if pred(b)), None)

        done = [b for b in builds if not b["building"]]
        body.update(
            {
                # Full objects: `tree=builds[...]` reaches any field; plain depth 0 is trimmed.
                "builds": copy.deepcopy(builds[:100]),
                "allBuilds": copy.deepcopy(builds),
                "firstBuild": self._ref(builds[-1] if builds else None),
                "lastBuild": self._ref(builds[0] if builds else None),
                "lastCompletedBuild": self._ref(done[0] if done else None),
                "lastSuccessfulBuild": self._ref(first(lambda b: b["result"] == "SUCCESS")),
                "lastStableBuild": self._ref(first(lambda b: b["result"] == "SUCCESS")),
                "lastFailedBuild": self._ref(first(lambda b: b["result"] == "FAILURE")),
                "lastUnstableBuild": self._ref(first(lambda b: b["result"] == "UNSTABLE")),
                "lastUnsuccessfulBuild": self._ref(
                    first(lambda b: not b["building"] and b["result"] != "SUCCESS")
                ),
                "nextBuildNumber": (builds[0]["number"] + 1) if builds else 1,
                "color": COLORS.get(done[0]["result"] if done else None, "notbuilt")
                + ("_anime" if builds and builds[0]["building"] else ""),
            }
        )
        return body

    def _job_full_depth0(self, job: Job) -> dict:
        body = self._job_full(job)
        if not job.is_container:
            body["builds"] = [self._ref(b) for b in job.builds[:100]]
            body.pop("allBuilds", None)
        return body

    def _find_build(self, job: Job, ref: str) -> dict | None:
        builds = job.builds
        if ref.isdigit():
            return next((b for b in builds if b["number"] == int(ref)), None)
        pick = {
            "lastBuild": lambda b: True,
            "lastCompletedBuild": lambda b: not b["building"],
            "lastSuccessfulBuild": lambda b: b["result"] == "SUCCESS",
            "lastFailedBuild": lambda b: b["result"] == "FAILURE",
        }[ref]
        return next((b for b in builds if pick(b)), None)

    def _ensure_parents(self, path: str) -> None:
        parts = path.split("/")
        for end in range(2, len(parts), 2):
            parent = "/".join(parts[:end])
            if parent not in self.jobs:
                self.jobs[parent] = Job(parent, "folder", self._job_body(parent, "folder"))
            elif not self.jobs[parent].is_container:
                raise ValueError(f"{parent} is a job, not a folder")

    # -- replay of the recorded fixtures --------------------------------------------------
    def _replay(self) -> None:
        now_ms = 1559281453240  # the recorded pipeline build's time; older ones an hour apart
        results = {52: "FAILURE", 51: "UNSTABLE", 50: "ABORTED"}  # consistent with the
        # recorded last*Build pointers (lastFailed 52, lastSuccessful 49)
        self.set_builds(
            "job/Level1_WorkflowJob",
            [
                {
                    "number": n,
                    "result": results.get(n, "SUCCESS"),
                    "timestamp": now_ms - (52 - n) * 3_600_000,
                    "duration": 324447,
                }
                for n in range(52, 44, -1)
            ],
        )
        self.add_folder("job/folder")
        recorded = _load("api4jenkins/run/workflowrun.json")
        pipeline = self.add_job("job/folder/job/pipeline")
        pipeline.builds = [recorded] if recorded else []
        if not recorded:
            self.set_builds("job/folder/job/pipeline", [{"number": 52, "result": "FAILURE"}])
        self.add_folder("job/Level1_multibranchjob", multibranch=True)
        self.set_builds(
            "job/Level1_multibranchjob/job/master",
            [
                {"number": 3, "result": "FAILURE", "timestamp": now_ms},
                {"number": 2, "result": "SUCCESS", "timestamp": now_ms - 3_600_000},
                {"number": 1, "result": "SUCCESS", "timestamp": now_ms - 7_200_000},
            ],
        )
        # jenkins-rest's FreeStyle job: #7 is running (recorded color blue_anime, inQueue).
        info = _load("jenkins-rest/build-info-git-commit.json")
        ts = info["timestamp"] if info else now_ms
        self.set_builds(
            "job/fish",
            [
                {"number": 7, "building": True, "timestamp": ts},
                *(
                    {
                        "number": n,
                        "result": "SUCCESS",
                        "timestamp": ts - (7 - n) * 3_600_000,
                        "duration": 60750,
                    }
                    for n in range(6, 0, -1)
                ),
            ],
            kind="freestyle",
        )
        freestyle = _load("api4jenkins/run/freestylebuild.json")
        job = self.add_job("job/freestylejob", kind="freestyle")
        job.builds = [freestyle] if freestyle else []
        if not freestyle:
            self.set_builds("job/freestylejob", [{"number": 14}], kind="freestyle")
