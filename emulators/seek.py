"""A WorkflowHub (SEEK) emulator replaying the shared fixtures.

The catalogue is LifeMonitor's own test SEEK instance (`seek/lifemonitor-test-instance/
index.json`: workflows 20-24, their uuids, visibility and uploaded crate zips). Bodies follow
the JSON:API shapes of `seek/api_examples/`; error bodies are the ones in `seek/errors/`.
Fixture files are read from `emulators.SHARED_FIXTURES` at run time, never copied.
Without that folder the emulator serves a small generated catalogue (one public and one
private workflow, each with a minimal Workflow Testing RO-Crate built here), so tests that
depend only on our own payloads still run; `has_real_fixtures` says which one is served.

SEEK behaviour reproduced (and where it comes from):

* JSON only when asked for (`?format=json`, a `.json` suffix, or an Accept naming JSON);
  otherwise 406 with `errors/notAcceptable` (real SEEK would send HTML).
* Access (`policy_access_type` of index.json: 0 private, 1 view, 2 download, ...): private
  workflows answer **403** `Forbidden` / `You may not view workflow:ID` (SEEK's
  `find_and_authorize_requested_item` for JSON, also for anonymous callers; note the
  `details` key) unless the Bearer token maps (`tokens`) to the contributor or an admin
  (`admins`, the seeded admin person 1). `ro_crate` needs *download* access.
* Unknown Bearer tokens answer 401 (`errors/unauthorized`), as Doorkeeper does.
* `/people/current` without a user answers 404 `No user logged in`.
* Doorkeeper, the OAuth provider LifeMonitor logs people in with: `/oauth/authorize` shows
  a login form for the people of index.json (login from its `users`, password
  `DEFAULT_PASSWORD` unless `.passwords` says otherwise), `/oauth/token` exchanges codes
  (PKCE checked when a challenge was sent) and rotates refresh tokens; tests register our
  OAuth app with `register_oauth_app(redirect_uris)`. Issued tokens join `.tokens`.
* `attributes.policy` is only in workflow bodies for those who may manage the workflow.
* `links.self` is relative, as SEEK sends it; `meta.base_url`, `versions[].url` and
  `content_blobs[].link` are absolute and point at this emulator.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import uuid as uuidlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulators.base import Emulator, Reply, Request
from emulators.crates import CONTEXT_0_1, TEST_NS
from emulators.oauth_provider import OAuthProviderMixin

JSONAPI_CT = "application/vnd.api+json; charset=utf-8"
ACCESS_NAMES = {0: "no_access", 1: "view", 2: "download", 3: "edit", 4: "manage"}
VIEW, DOWNLOAD, MANAGE = 1, 2, 4
TIMESTAMP = "2021-04-22T13:09:00.000Z"

# Status of each `errors/` body, by the first part of its file name.
ERROR_STATUS = {
    "forbidden": 403,
    "notFound": 404,
    "unauthorized": 401,
    "notAcceptable": 406,
    "unprocessableEntity": 422,
    "noUserLoggedIn": 404,
}

# The same structures, for when the fixture folder is absent.
_BUILTIN_ERRORS: dict[str, dict] = {
    "forbidden.workflow": {
        "errors": [{"title": "Forbidden", "details": "You may not view workflow:21"}]
    },
    "noUserLoggedIn.people-current": {"errors": [{"title": "No user logged in"}]},
    "notAcceptable.spec-example": {
        "errors": [{"title": "Not Acceptable", "detail": "Only Application/json is supported."}]
    },
    "notFound.spec-example": {
        "errors": [{"title": "Not found", "detail": "Couldn't find Institution with 'id'=[70]"}]
    },
    "notFound.workflow": {
        "errors": [{"title": "Not found", "detail": "Couldn't find Workflow with 'id'=[999999]"}]
    },
    "unauthorized.spec-example": {
        "errors": [
            {"title": "Unauthorized", "detail": "You are not authorized to perform this action."}
        ]
    },
    "unprocessableEntity.spec-example": {
        "errors": [
            {"detail": "id specified by the PUT request does not match object-id in the JSON input"}
        ]
    },
}

# index.json has no project memberships: these are inferred from the project titles
# (person ids equal user ids there: 1 admin, 2 user1, 3 user2).
_INFERRED_MEMBERSHIPS = {"1": ["1"], "2": ["2", "3"], "3": ["4", "3"]}


def _shared_seek_dir() -> Path:
    from emulators import SHARED_FIXTURES

    return SHARED_FIXTURES / "seek"


# -- a minimal Workflow Testing RO-Crate ----------------------------------------------------

_SERVICES = {
    "github": ("GithubService", "Github Actions", "https://github.com"),
    "travis": ("TravisService", "Travis", "https://travis-ci.org"),
    "jenkins": ("JenkinsService", "Jenkins", "https://www.jenkins.io"),
}
_TEST_NS = TEST_NS


def build_minimal_crate(
    name: str = "generated-workflow-with-tests",
    *,
    service: str = "github",
    instance_url: str = "https://api.github.com",
    resource: str = "repos/PyGithub/PyGithub/actions/workflows/check.yml",
) -> bytes:
    """A small, valid Workflow Testing RO-Crate zip (Galaxy workflow, one suite, one
    instance), byte-for-byte reproducible. The default instance is the GitHub workflow the
    shared GitHub fixtures were recorded from (PyGithub's `check.yml`)."""
    service_type, service_name, service_home = _SERVICES[service]
    definition = "test/test1/workflow-test.yml"
    metadata = {
        "@context": CONTEXT_0_1,
        "@graph": [
            {
                "@id": "ro-crate-metadata.json",
                "@type": "CreativeWork",
                "about": {"@id": "./"},
                "conformsTo": {"@id": "https://w3id.org/ro/crate/1.1"},
            },
            {
                "@id": "./",
                "@type": "Dataset",
                "name": name,
                "license": "Apache-2.0",
                "description": "generated by the WorkflowHub emulator",
                "mainEntity": {"@id": "workflow.ga"},
                "hasPart": [{"@id": "workflow.ga"}, {"@id": "README.md"}, {"@id": definition}],
                "mentions": [{"@id": "#test1"}],
            },
            {
                "@id": "workflow.ga",
                "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow"],
                "programmingLanguage": {"@id": "#galaxy"},
                "name": name,
            },
            {"@id": "README.md", "@type": "File"},
            {
                "@id": "#galaxy",
                "@type": "ComputerLanguage",
                "name": "Galaxy",
                "identifier": {"@id": "https://galaxyproject.org/"},
                "url": {"@id": "https://galaxyproject.org/"},
            },
            {
                "@id": "#test1",
                "@type": "TestSuite",
                "name": "test1",
                "mainEntity": {"@id": "workflow.ga"},
                "instance": [{"@id": "#test1_1"}],
                "definition": {"@id": definition},
            },
            {
                "@id": "#test1_1",
                "@type": "TestInstance",
                "name": "test1_1",
                "runsOn": {"@id": _TEST_NS + service_type},
                "url": instance_url,
                "resource": resource,
            },
            {
                "@id": definition,
                "@type": ["File", "TestDefinition"],
                "conformsTo": {"@id": _TEST_NS + "PlanemoEngine"},
                "engineVersion": ">=0.70",
            },
            {
                "@id": _TEST_NS + service_type,
                "@type": "TestService",
                "name": service_name,
                "url": {"@id": service_home},
            },
            {
                "@id": _TEST_NS + "PlanemoEngine",
                "@type": "SoftwareApplication",
                "name": "Planemo",
                "url": {"@id": "https://github.com/galaxyproject/planemo"},
            },
        ],
    }
    workflow = {
        "a_galaxy_workflow": "true",
        "format-version": "0.1",
        "name": name,
        "annotation": "",
        "steps": {},
    }
    files = {
        "ro-crate-metadata.json": json.dumps(metadata, indent=2),
        "workflow.ga": json.dumps(workflow, indent=2),
        "README.md": f"# {name}\n\nGenerated Workflow Testing RO-Crate.\n",
        definition: "- doc: generated test\n  job: {}\n  outputs: {}\n",
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, text in files.items():
            info = zipfile.ZipInfo(path, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text)
    return buf.getvalue()


# -- catalogue ------------------------------------------------------------------------------


@dataclass
class CatalogueWorkflow:
    """One workflow of the emulated instance."""

    id: str
    title: str
    uuid: str
    contributor: str  # person id
    projects: list[str]  # project ids
    access: int  # SEEK policy access_type for everyone: 0 private, 1 view, 2 download, ...
    crates: dict[str, Path | bytes]  # version → crate zip (a fixture path or bytes)
    workflow_class: dict = field(default_factory=lambda: {"title": "Galaxy", "key": "galaxy"})
    original_filename: str = "workflow.crate.zip"
    fixture_file: str | None = None  # name under lifemonitor-test-instance/, if real

    @property
    def versions(self) -> list[str]:
        return sorted(self.crates, key=lambda v: (len(v), v))

    @property
    def latest_version(self) -> str:
        return self.versions[-1]

    @property
    def visibility(self) -> str:
        return ACCESS_NAMES.get(self.access, "no_access")

    @property
    def public(self) -> bool:
        """Anyone may download the crate (what LifeMonitor calls a public workflow)."""
        return self.access >= DOWNLOAD

    def crate(self, version: str) -> bytes:
        source = self.crates[version]
        return source.read_bytes() if isinstance(source, Path) else source


DEFAULT_PASSWORD = "seek-emulator"  # noqa: S105 - the emulated people's password


class WorkflowHubEmulator(OAuthProviderMixin, Emulator):
    """`WorkflowHubEmulator()` serves the real catalogue when the shared fixtures exist
    (`use_real_fixtures=False` forces the generated one). Use as a context manager; `.url` is
    the base URL to give a `Registry`/`SeekClient`. Tests map Bearer tokens to person ids in
    `.tokens` (e.g. `{"tok": 2}`: user1, contributor of workflows 20-24)."""

    def __init__(
        self,
        latency: float = 0.0,
        *,
        use_real_fixtures: bool = True,
        fixtures_dir: Path | str | None = None,
    ) -> None:
        self.seek_dir = Path(fixtures_dir) if fixtures_dir else _shared_seek_dir()
        index = self.seek_dir / "lifemonitor-test-instance" / "index.json"
        self.has_real_fixtures = use_real_fixtures and index.is_file()
        self.tokens: dict[str, int | str] = {}
        self.passwords: dict[str, str] = {}  # login -> password (default DEFAULT_PASSWORD)
        self.admins: set[str | int] = {"1"}  # person ids that may see everything
        self.oauth_title = "WorkflowHub: sign in"
        self.reset_oauth()
        self.people: dict[str, dict] = {}
        self.projects: dict[str, str] = {}
        self.workflows: dict[str, CatalogueWorkflow] = {}
        self._errors: dict[str, dict] = {}
        self._load_catalogue()
        super().__init__(latency)

    def reset(self) -> None:
        """Back to the initial state (catalogue, tokens, admins, faults, recorded requests),
        so one started emulator can serve many tests."""
        self.tokens.clear()
        self.passwords.clear()
        self.reset_oauth()
        self.admins = {"1"}
        self.clear_faults()
        with self._lock:
            self.requests.clear()
        self._load_catalogue()

    # -- catalogue API for tests ----------------------------------------------------------
    def uuid_of(self, identifier: str | int) -> str:
        """The workflow's `meta.uuid` (stable: from index.json, or derived from the id)."""
        return self.workflows[str(identifier)].uuid

    def workflow(self, identifier: str | int) -> CatalogueWorkflow:
        return self.workflows[str(identifier)]

    def public_ids(self) -> list[str]:
        return sorted((w.id for w in self.workflows.values() if w.public), key=_id_key)

    def private_ids(self) -> list[str]:
        return sorted((w.id for w in self.workflows.values() if w.access == 0), key=_id_key)

    @property
    def public_id(self) -> str:
        """A publicly downloadable workflow: 21 (real) or 1 (generated)."""
        return self.public_ids()[0]

    @property
    def private_id(self) -> str:
        return self.private_ids()[0]

    def crate_bytes(self, identifier: str | int, version: str | int | None = None) -> bytes:
        wf = self.workflow(identifier)
        return wf.crate(str(version) if version is not None else wf.latest_version)

    def add_workflow(
        self,
        identifier: str | int,
        title: str,
        crates: dict[str | int, Path | bytes] | Path | bytes | None = None,
        *,
        access: int = DOWNLOAD,
        contributor: str | int = "2",
        projects: list[str | int] | None = None,
        uuid: str | None = None,
    ) -> CatalogueWorkflow:
        """Add (or replace) a workflow; `crates` maps versions to zips (default: one
        version with a generated crate named `title`)."""
        if crates is None:
            crates = build_minimal_crate(title)
        if not isinstance(crates, dict):
            crates = {"1": crates}
        wf = CatalogueWorkflow(
            id=str(identifier),
            title=title,
            uuid=uuid or self._derived_uuid(identifier),
            contributor=str(contributor),
            projects=[str(p) for p in projects or ["2"]],
            access=access,
            crates={str(v): c for v, c in crates.items()},
        )
        self.workflows[wf.id] = wf
        return wf

    def set_crate(self, identifier: str | int, version: str | int, crate: Path | bytes) -> None:
        """Serve another zip for one version, e.g. a `converted/` crate as SEEK regenerates it."""
        self.workflow(identifier).crates[str(version)] = crate

    def converted_crates(self) -> list[Path]:
        """The crates SEEK itself regenerated (`converted/`); not mapped to workflow ids."""
        folder = self.seek_dir / "lifemonitor-test-instance" / "converted"
        return sorted(folder.glob("*.zip")) if self.has_real_fixtures else []

    def error_body(self, name: str) -> dict:
        """An `errors/` body by file stem (e.g. "forbidden.workflow"), as a fresh copy."""
        if name not in self._errors:
            path = self.seek_dir / "errors" / f"{name}.json"
            if self.has_real_fixtures and path.is_file():
                self._errors[name] = json.loads(path.read_text())
            else:
                self._errors[name] = _BUILTIN_ERRORS[name]
        return copy.deepcopy(self._errors[name])

    def error_reply(self, name: str, **replace: str) -> Reply:
        """`name`'s body with the status of its file name; `replace` sets fields of the
        first error (e.g. details="...")."""
        body = self.error_body(name)
        body["errors"][0].update(replace)
        return Reply(ERROR_STATUS[name.split(".", 1)[0]], body, content_type=JSONAPI_CT)

    # -- loading --------------------------------------------------------------------------
    @staticmethod
    def _derived_uuid(identifier: str | int) -> str:
        return str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"workflowhub-emulator/{identifier}"))

    def _load_catalogue(self) -> None:
        self.people, self.projects, self.workflows = {}, {}, {}
        if self.has_real_fixtures:
            self._load_index(self.seek_dir / "lifemonitor-test-instance" / "index.json")
        else:
            self._load_generated()

    def _load_index(self, index: Path) -> None:
        data = json.loads(index.read_text())
        folder = index.parent
        self.projects = {str(p["id"]): p["title"] for p in data["projects"]}
        logins = {str(u["id"]): u["login"] for u in data.get("users", [])}
        for p in data["people"]:
            pid = str(p["id"])
            self.people[pid] = {
                "first_name": p["first_name"],
                "last_name": p["last_name"],
                "email": p.get("email"),
                "login": logins.get(pid),
                "projects": [x for x in _INFERRED_MEMBERSHIPS.get(pid, []) if x in self.projects],
            }
        for w in data["workflows"]:
            blob = w["content_blob"]
            self.workflows[str(w["id"])] = CatalogueWorkflow(
                id=str(w["id"]),
                title=w["title"],
                uuid=w["uuid"],
                contributor=str(w["contributor_person_id"]),
                projects=[str(p["id"]) for p in w["projects"]],
                access=int(w["policy_access_type"]),
                # Every fixture workflow has one version: its uploaded content blob.
                crates={str(w["latest_version"]): folder / blob["fixture_file"]},
                workflow_class=dict(w["workflow_class"]),
                original_filename=blob["original_filename"],
                fixture_file=blob["fixture_file"],
            )

    def _load_generated(self) -> None:
        self.projects = {"1": "Default Project", "2": "User1Project"}
        self.people = {
            "1": {
                "first_name": "Admin",
                "last_name": "User",
                "email": "admin@seek.emulator",
                "login": "admin",
                "projects": ["1"],
            },
            "2": {
                "first_name": "First",
                "last_name": "User",
                "email": "user1@seek.emulator",
                "login": "user1",
                "projects": ["2"],
            },
        }
        self.add_workflow(1, "generated-workflow-with-tests", access=DOWNLOAD)
        self.add_workflow(2, "generated-private-workflow", access=0)

    # -- routes ---------------------------------------------------------------------------
    def setup_routes(self) -> None:
        self.route("GET", r"/", self._home)
        self.route("GET", r"/workflows(?:\.json)?", self._index)
        self.route("GET", r"/workflows/(?P<id>[^/.]+)(?P<ext>\.json)?", self._show)
        self.route("GET", r"/workflows/(?P<id>[^/.]+)/ro_crate", self._ro_crate)
        self.route("GET", r"/people(?:\.json)?", self._people)
        self.route("GET", r"/people/current(?:\.json)?", self._current)
        self.route("GET", r"/people/(?P<id>[^/.]+)(?:\.json)?", self._person)
        self.setup_oauth_routes("/oauth/authorize", "/oauth/token")

    def oauth_authenticate(self, login: str, password: str) -> str | None:
        for pid, person in self.people.items():
            if login and person.get("login") == login:
                expected = self.passwords.get(login, DEFAULT_PASSWORD)
                return pid if password == expected else None
        return None

    # -- helpers for handlers ---------------------------------------------------------------
    def _caller(self, req: Request) -> tuple[str | None, Reply | None]:
        """(person id or None, or an error reply for credentials we do not accept)."""
        header = req.headers.get("authorization")
        if not header:
            return None, None
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token in self.tokens:
            if not self.access_token_valid(token):
                return None, self.error_reply("unauthorized.spec-example")
            return str(self.tokens[token]), None
        return None, self.error_reply("unauthorized.spec-example")

    @staticmethod
    def _wants_json(req: Request) -> bool:
        if req.path.endswith(".json"):
            return True
        fmt = req.arg("format")
        if fmt is not None:
            return fmt == "json"
        accept = req.headers.get("accept", "")
        return not accept or "json" in accept or "*/*" in accept

    def _can(self, person: str | None, wf: CatalogueWorkflow, level: int) -> bool:
        if wf.access >= level:
            return True
        return person is not None and (
            person == wf.contributor or person in {str(a) for a in self.admins}
        )

    def _json(self, body: dict, status: int = 200) -> Reply:
        return Reply(status, body, content_type=JSONAPI_CT)

    def _not_found(self, identifier: str, model: str = "Workflow") -> Reply:
        detail = f"Couldn't find {model} with 'id'=[{identifier}]"
        return self.error_reply("notFound.workflow", detail=detail)

    def _forbidden(self, privilege: str, identifier: str) -> Reply:
        return self.error_reply(
            "forbidden.workflow", details=f"You may not {privilege} workflow:{identifier}"
        )

    def _preamble(self, req: Request) -> tuple[str | None, Reply | None]:
        if not self._wants_json(req):
            return None, self.error_reply("notAcceptable.spec-example")
        return self._caller(req)

    # -- handlers ---------------------------------------------------------------------------
    def _home(self, req: Request) -> Reply:
        return Reply(
            200,
            "<html><body>WorkflowHub emulator</body></html>",
            content_type="text/html; charset=utf-8",
        )

    def _index(self, req: Request) -> Reply:
        person, error = self._preamble(req)
        if error:
            return error
        items = [
            {
                "id": wf.id,
                "type": "workflows",
                "attributes": {"title": wf.title},
                "links": {"self": f"/workflows/{wf.id}"},
            }
            for wf in sorted(self.workflows.values(), key=lambda w: _id_key(w.id))
            if self._can(person, wf, VIEW)
        ]
        page = "/workflows?page%5Bnumber%5D=1&page%5Bsize%5D=1000000"
        return self._json(
            {
                "data": items,
                "jsonapi": {"version": "1.0"},
                "links": {"self": page, "first": page, "prev": None, "next": None, "last": page},
                "meta": {"base_url": self.url, "api_version": "0.3"},
            }
        )

    def _show(self, req: Request) -> Reply:
        person, error = self._preamble(req)
        if error:
            return error
        wf, version, error = self._version_for(req, person, VIEW, "view")
        if error:
            return error
        return self._json(
            {"data": self._workflow_data(wf, version, person), "jsonapi": {"version": "1.0"}}
        )

    def _version_for(self, req: Request, person, permission, verb: str):
        """The asked workflow and version (`?version`, else the latest) if `person` may
        `permission` it: (workflow, version, None), or (None, None, the error reply)."""
        identifier = req.match["id"]
        wf = self.workflows.get(identifier)
        if wf is None:
            return None, None, self._not_found(identifier)
        if not self._can(person, wf, permission):
            return None, None, self._forbidden(verb, identifier)
        version = req.arg("version") or wf.latest_version
        if version not in wf.crates:
            return None, None, self._not_found(version, "Workflow::Version")
        return wf, version, None

    def _ro_crate(self, req: Request) -> Reply:
        # The crate answers whatever the Accept header says (LifeMonitor sends JSON:API's).
        person, error = self._caller(req)
        if error:
            return error
        wf, version, error = self._version_for(req, person, DOWNLOAD, "download")
        if error:
            return error
        filename = f"workflow-{wf.id}-{version}.crate.zip"
        return Reply(
            200,
            wf.crate(version),
            content_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    def _people(self, req: Request) -> Reply:
        _person, error = self._preamble(req)
        if error:
            return error
        items = [
            {
                "id": pid,
                "type": "people",
                "attributes": {"title": self._name(pid)},
                "links": {"self": f"/people/{pid}"},
            }
            for pid in sorted(self.people, key=_id_key)
        ]
        return self._json(
            {
                "data": items,
                "jsonapi": {"version": "1.0"},
                "meta": {"base_url": self.url, "api_version": "0.3"},
            }
        )

    def _current(self, req: Request) -> Reply:
        person, error = self._preamble(req)
        if error:
            return error
        if person is None or person not in self.people:
            return self.error_reply("noUserLoggedIn.people-current")
        return self._json({"data": self._person_data(person), "jsonapi": {"version": "1.0"}})

    def _person(self, req: Request) -> Reply:
        _person, error = self._preamble(req)
        if error:
            return error
        pid = req.match["id"]
        if pid not in self.people:
            return self._not_found(pid, "Person")
        return self._json({"data": self._person_data(pid), "jsonapi": {"version": "1.0"}})

    # -- bodies (shapes of api_examples/workflowResponse.json and personResponse.json) ----
    def _name(self, pid: str) -> str:
        p = self.people[pid]
        return f"{p['first_name']} {p['last_name']}"

    def _workflow_data(self, wf: CatalogueWorkflow, version: str, person: str | None) -> dict:
        crate = wf.crate(version)
        base = self.url
        attributes: dict[str, Any] = {}
        if self._can(person, wf, MANAGE):  # SEEK shows the policy to managers only
            attributes["policy"] = {
                "access": wf.visibility,
                "permissions": [
                    {"resource": {"id": p, "type": "projects"}, "access": "manage"}
                    for p in wf.projects
                ],
            }
        attributes.update(
            {
                "discussion_links": [],
                "title": wf.title,
                "license": "Apache-2.0",
                "description": None,
                "latest_version": _num(wf.latest_version),
                "tags": [],
                "versions": [
                    {
                        "version": _num(v),
                        "revision_comments": None,
                        "url": f"{base}/workflows/{wf.id}?version={v}",
                        "doi": None,
                    }
                    for v in wf.versions
                ],
                "version": _num(version),
                "revision_comments": None,
                "created_at": TIMESTAMP,
                "updated_at": TIMESTAMP,
                "doi": None,
                "content_blobs": [
                    {
                        "original_filename": wf.original_filename,
                        "url": None,
                        "md5sum": hashlib.md5(crate).hexdigest(),  # noqa: S324 - SEEK's checksum
                        "sha1sum": hashlib.sha1(crate).hexdigest(),  # noqa: S324 - SEEK's checksum
                        "content_type": "application/zip",
                        "link": f"{base}/workflows/{wf.id}/content_blobs/{wf.id}{version}",
                        "size": len(crate),
                    }
                ],
                "creators": [],
                "other_creators": None,
                "workflow_class": {"description": None, **wf.workflow_class},
                "operation_annotations": [],
                "topic_annotations": [],
                "internals": {},
                "tools": [],
            }
        )
        submitter = [{"id": wf.contributor, "type": "people"}]
        empty = {"data": []}
        return {
            "id": wf.id,
            "type": "workflows",
            "attributes": attributes,
            "relationships": {
                "creators": {"data": []},
                "submitter": {"data": submitter},
                "people": {"data": submitter},
                "projects": {"data": [{"id": p, "type": "projects"} for p in wf.projects]},
                **{
                    k: dict(empty)
                    for k in (
                        "investigations",
                        "studies",
                        "assays",
                        "publications",
                        "sops",
                        "presentations",
                        "data_files",
                        "documents",
                    )
                },
            },
            "links": {"self": f"/workflows/{wf.id}?version={version}"},
            "meta": {
                "created": TIMESTAMP,
                "modified": TIMESTAMP,
                "api_version": "0.3",
                "base_url": base,
                "uuid": wf.uuid,
            },
        }

    def _person_data(self, pid: str) -> dict:
        p = self.people[pid]
        mbox = hashlib.sha1(f"mailto:{p.get('email') or ''}".encode()).hexdigest()  # noqa: S324
        workflows = [
            {"id": w.id, "type": "workflows"}
            for w in sorted(self.workflows.values(), key=lambda w: _id_key(w.id))
            if w.contributor == pid
        ]
        return {
            "id": pid,
            "type": "people",
            "attributes": {
                "avatar": None,
                "title": self._name(pid),
                "description": None,
                "first_name": p["first_name"],
                "last_name": p["last_name"],
                "orcid": None,
                "mbox_sha1sum": mbox,
                "expertise": [],
                "tools": [],
                "login": p.get("login"),
            },
            "relationships": {
                "projects": {"data": [{"id": x, "type": "projects"} for x in p["projects"]]},
                "institutions": {"data": []},
                "workflows": {"data": workflows},
            },
            "links": {"self": f"/people/{pid}"},
            "meta": {
                "created": TIMESTAMP,
                "modified": TIMESTAMP,
                "api_version": "0.3",
                "base_url": self.url,
                "uuid": str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"person/{pid}")),
            },
        }


def _id_key(value: str) -> tuple:
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


def _num(version: str) -> int | str:
    return int(version) if version.isdigit() else version
