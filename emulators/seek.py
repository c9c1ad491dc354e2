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
* Credentials: `Authorization: Bearer|Token T` (Rails' token schemes) maps `T` through
  `.tokens`; `Basic` checks a person's login and password as the sign-in form does. Unknown
  tokens and wrong passwords answer 401 (`errors/unauthorized`).
* Creating a workflow, SEEK's two-step upload (`api_examples/workflowPost.json` and
  `workflowPostResponse.json`): `POST /workflows` with a JSON:API body (title,
  `workflow_class.key`, `content_blobs` [{original_filename, content_type}], `policy`,
  `relationships.projects`) answers 200 with the workflow, whose content blob has no content
  yet (`size`, `md5sum` null) and a `link`; `PUT` of the bytes to that link answers 200 with
  the size as plain text (SEEK's `ContentBlobsController#update`), and the workflow joins
  the catalogue (`GET /workflows/{id}`, `/ro_crate`). Until then it is listed and shown, but
  has no crate. No caller: 401; a caller outside a named project: 403 (the `errors/forbidden`
  structure); no title, no content blob or an unknown `workflow_class`: 422 (SEEK's
  `json_api_errors`: `source.pointer` + `detail`). The PUT refuses a caller who may not edit
  the workflow with 403, an unknown blob with 404, a blob that has content with 400 `{}`:
  those bodies are `ContentBlobsController`'s own (no `errors` list), as SEEK sends them.
"""

from __future__ import annotations

import base64
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

# `ContentBlobsController` answers in its own shape, not a JSON:API `errors` list
# (seek4science/seek app/controllers/content_blobs_controller.rb,
# find_and_authorize_associated_asset / find_and_authorize_content_blob / update).
_BLOB_FORBIDDEN = "You are not authorized to download the asset linked to content_blob:{blob}"
_BLOB_NOT_FOUND = "The content blob was not found, or not related to the asset"
_ASSET_NOT_FOUND = "The asset could not be found"

# `workflow_class.key` values of SEEK's WorkflowClass (those of the crates we meet), with
# their titles as SEEK shows them.
WORKFLOW_CLASSES = {
    "galaxy": "Galaxy",
    "cwl": "Common Workflow Language",
    "nextflow": "Nextflow",
    "snakemake": "Snakemake",
}
ACCESS_LEVELS = {name: level for level, name in ACCESS_NAMES.items()}

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
    description: str | None = None

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
        # Created by `POST /workflows`, waiting for their content blob's PUT (crate b"").
        self.uploads: dict[str, CatalogueWorkflow] = {}
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
        self.people, self.projects, self.workflows, self.uploads = {}, {}, {}, {}
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
        self.route("POST", r"/workflows(?:\.json)?", self._create)
        self.route("PUT", r"/workflows/(?P<id>[^/.]+)/content_blobs/(?P<blob>[^/.]+)", self._upload)
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
        scheme = scheme.lower()
        # Rails' `authenticate_with_http_token` takes both schemes.
        if scheme in ("bearer", "token") and token in self.tokens:
            if not self.access_token_valid(token):
                return None, self.error_reply("unauthorized.spec-example")
            return str(self.tokens[token]), None
        if scheme == "basic":
            person = self._basic_person(token)
            if person is not None:
                return person, None
        return None, self.error_reply("unauthorized.spec-example")

    def _basic_person(self, encoded: str) -> str | None:
        try:
            login, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return self.oauth_authenticate(login, password) if sep else None

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
            for wf in sorted(
                [*self.workflows.values(), *self.uploads.values()], key=lambda w: _id_key(w.id)
            )
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
        wf, version, error = self._version_for(req, person, VIEW, "view", awaiting=True)
        if error:
            return error
        return self._json(
            {"data": self._workflow_data(wf, version, person), "jsonapi": {"version": "1.0"}}
        )

    def _version_for(self, req: Request, person, permission, verb: str, awaiting: bool = False):
        """The asked workflow and version (`?version`, else the latest) if `person` may
        `permission` it: (workflow, version, None), or (None, None, the error reply).
        `awaiting`: also one whose content blob has not been uploaded yet."""
        identifier = req.match["id"]
        wf = self.workflows.get(identifier)
        if wf is None and awaiting:
            wf = self.uploads.get(identifier)
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

    def _invalid(self, pointer: str, detail: str) -> Reply:
        """422 in SEEK's `json_api_errors` shape."""
        body = {"errors": [{"source": {"pointer": pointer}, "detail": detail}]}
        return self._json(body, status=422)

    def _create(self, req: Request) -> Reply:
        person, error = self._preamble(req)
        if error:
            return error
        if person is None:  # SEEK's `login_required`
            return self.error_reply("unauthorized.spec-example")
        try:
            body = json.loads(req.body or b"null")
        except ValueError:
            body = None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict) or data.get("type") != "workflows":
            return self.error_reply(
                "unprocessableEntity.spec-example",
                detail="A POST request must specify a data:type of 'workflows'",
            )
        attributes = data.get("attributes") if isinstance(data.get("attributes"), dict) else {}
        title = attributes.get("title")
        if not isinstance(title, str) or not title.strip():
            return self._invalid("/data/attributes/title", "can't be blank")
        blobs = attributes.get("content_blobs")
        if (
            not isinstance(blobs, list)
            or not blobs
            or not all(isinstance(b, dict) and b.get("original_filename") for b in blobs)
        ):
            return self._invalid("/data/attributes/content_blobs", "can't be blank")
        workflow_class = attributes.get("workflow_class")
        key = workflow_class.get("key") if isinstance(workflow_class, dict) else None
        if key not in WORKFLOW_CLASSES:
            return self._invalid("/data/attributes/workflow_class", "is not included in the list")
        policy = attributes.get("policy") if isinstance(attributes.get("policy"), dict) else {}
        access = ACCESS_LEVELS.get(policy.get("access", "no_access"))
        if access is None:
            return self._invalid("/data/attributes/policy", "access is not included in the list")
        relationships = data.get("relationships")
        refs = relationships.get("projects", {}) if isinstance(relationships, dict) else {}
        refs = refs.get("data") if isinstance(refs, dict) else None
        projects = [str(r.get("id")) for r in refs or [] if isinstance(r, dict)]
        if not projects:
            return self._invalid("/data/relationships/projects", "can't be blank")
        for project in projects:
            if project not in self.projects:
                return self._not_found(project, "Project")
            if project not in self.people.get(person, {}).get("projects", []):
                return self.error_reply(
                    "forbidden.workflow", details=f"You may not add workflows to project:{project}"
                )
        with self._lock:  # the server is threaded: one id per POST
            ids = [int(i) for i in [*self.workflows, *self.uploads] if i.isdigit()]
            identifier = str(max(ids, default=0) + 1)
            wf = CatalogueWorkflow(
                id=identifier,
                title=title,
                uuid=self._derived_uuid(identifier),
                contributor=person,
                projects=projects,
                access=access,
                crates={"1": b""},
                workflow_class={"title": WORKFLOW_CLASSES[key], "key": key},
                original_filename=str(blobs[0]["original_filename"]),
                description=attributes.get("description"),
            )
            self.uploads[identifier] = wf
        return self._json(
            {"data": self._workflow_data(wf, "1", person), "jsonapi": {"version": "1.0"}}
        )

    def _upload(self, req: Request) -> Reply:
        # ContentBlobsController#update: no `login_required`, the asset's edit right decides;
        # any Accept (SEEK answers `format.all`).
        person, error = self._caller(req)
        if error:
            return error
        identifier, blob = req.match["id"], req.match["blob"]
        wf = self.uploads.get(identifier) or self.workflows.get(identifier)
        if wf is None:
            return self._json({"title": "Not found", "detail": _ASSET_NOT_FOUND}, status=404)
        if person is None or (
            person != wf.contributor and person not in {str(a) for a in self.admins}
        ):
            body = {"title": "Forbidden", "detail": _BLOB_FORBIDDEN.format(blob=blob)}
            return self._json(body, status=403)
        if blob not in {_blob_id(wf.id, v) for v in wf.versions}:
            return self._json({"title": "Not found", "detail": _BLOB_NOT_FOUND}, status=404)
        with self._lock:
            pending = self.uploads.pop(identifier, None)
        if pending is None:  # the blob has content already
            return self._json({}, status=400)
        added = self.add_workflow(
            pending.id,
            pending.title,
            {"1": req.body},
            access=pending.access,
            contributor=pending.contributor,
            projects=pending.projects,
            uuid=pending.uuid,
        )
        added.workflow_class = pending.workflow_class
        added.original_filename = pending.original_filename
        added.description = pending.description
        return Reply(200, str(len(req.body)), content_type="text/plain; charset=utf-8")

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
        # A blob still waiting for its PUT has no checksums and no size (workflowPostResponse).
        uploaded = wf.id not in self.uploads
        blob_id = _blob_id(wf.id, version)
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
                "description": wf.description,
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
                        # SEEK's checksums:
                        "md5sum": hashlib.md5(crate).hexdigest() if uploaded else None,  # noqa: S324
                        "sha1sum": hashlib.sha1(crate).hexdigest() if uploaded else None,  # noqa: S324
                        "content_type": "application/zip",
                        "link": f"{base}/workflows/{wf.id}/content_blobs/{blob_id}",
                        "size": len(crate) if uploaded else None,
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


def _blob_id(workflow_id: str, version: str) -> str:
    """The content blob id of a workflow version (ids are the emulator's, stable)."""
    return f"{workflow_id}{version}"


def _id_key(value: str) -> tuple:
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


def _num(version: str) -> int | str:
    return int(version) if version.isdigit() else version
