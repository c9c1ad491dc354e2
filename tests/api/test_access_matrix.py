"""Who may call what: every API route, every kind of caller, a private workflow, a public
one and identifiers that do not exist (contract §1.1, §1.2, §1.7, with the holes of §12
closed: anonymous callers read public workflows only, changes need ownership — the owner
user or the submitting registry — and `workflow.write`).

The expected status of every cell is written out below, by hand; nothing is derived from the
code under test. The route list itself comes from the app, so a new route without
expectations fails `test_every_route_has_expectations`.

One module-scoped world holds the shared objects (two registries, two users, a private and
a public workflow submitted by the registry on behalf of the owner). Cells that delete run
on fresh objects; cells that create remove what they created.
"""

from __future__ import annotations

import json
import uuid as uuidlib
from dataclasses import dataclass

import pytest

import app as app_module
from tests.support import api_data
from tests.support.api_data import b64, build, crate

# -- callers ---------------------------------------------------------------------------------

A = "anonymous"
O = "owner"  # noqa: E741 - the owner's API key (all user scopes)
U = "other_user"  # another user's API key (all user scopes)
R = "registry"  # the submitting registry's client token (WorkflowHub's scope list)
R2 = "other_registry"  # another registry's client token
S = "wrong_scope"  # the owner's API key with only `user.profile`
PRINCIPALS = (A, O, U, R, R2, S)

OK = 200  # any 2xx
PRIVATE, PUBLIC, MISSING, ANY = "private", "public", "missing", "any"


def wf(**cells: tuple[int, int, int]) -> dict[str, dict[str, int]]:
    """Per caller: (private workflow, public workflow, nonexistent uuid)."""
    return {p: dict(zip((PRIVATE, PUBLIC, MISSING), cells[p], strict=True)) for p in PRINCIPALS}


def one(**cells: int | tuple[int, int]) -> dict[str, dict[str, int]]:
    """Per caller: a route not about one workflow; a pair is (existing, nonexistent id)."""
    out = {}
    for p in PRINCIPALS:
        value = cells[p]
        out[p] = {ANY: value[0], MISSING: value[1]} if isinstance(value, tuple) else {ANY: value}
    return out


def flag(**cells: int | tuple[int, int]) -> dict[str, dict[str, int]]:
    """A creating route whose body says `public: false/true`; a pair adds the status for a
    nonexistent id in the path."""
    out = {}
    for p in PRINCIPALS:
        value = cells[p]
        code, missing = value if isinstance(value, tuple) else (value, None)
        out[p] = {PRIVATE: code, PUBLIC: code}
        if missing is not None:
            out[p][MISSING] = missing
    return out


# Reads of a workflow or of its suites, instances and builds.
READ = wf(
    **{
        A: (403, OK, 404),
        O: (OK, OK, 404),
        U: (403, OK, 404),
        R: (OK, OK, 404),
        R2: (403, OK, 404),
        S: (403, 403, 403),
    }
)
# Changes: the owner or the submitting registry, with workflow.write.
WRITE = wf(
    **{
        A: (401, 401, 401),
        O: (OK, OK, 404),
        U: (403, 403, 404),
        R: (OK, OK, 404),
        R2: (403, 403, 404),
        S: (403, 403, 403),
    }
)
# Subscriptions belong to users who can read the workflow.
SUBSCRIBE = wf(
    **{
        A: (401, 401, 401),
        O: (OK, OK, 404),
        U: (403, OK, 404),
        R: (403, 403, 403),
        R2: (403, 403, 403),
        S: (403, 403, 403),
    }
)
# A registry client's own record and lists.
REGISTRY_ONLY = one(**{A: 401, O: 403, U: 403, R: OK, R2: OK, S: 403})
# A user's own things, read with user.workflow.read.
USER_READ = one(**{A: 401, O: OK, U: OK, R: 403, R2: 403, S: 403})
# The profile and notifications (user.profile, a user).
PROFILE = one(**{A: 401, O: OK, U: OK, R: 403, R2: 403, S: OK})

EXPECTED: dict[tuple[str, str], dict[str, dict[str, int]]] = {
    # registries (contract rows 1-10)
    ("GET", "/registries"): one(**{p: OK for p in PRINCIPALS}),
    ("GET", "/registries/{registry_uuid}"): one(**{p: (OK, 404) for p in PRINCIPALS}),
    ("GET", "/registries/current"): REGISTRY_ONLY,
    ("GET", "/registries/current/users"): REGISTRY_ONLY,
    ("GET", "/registries/current/workflows"): REGISTRY_ONLY,
    ("POST", "/registries/current/workflows"): flag(
        **{A: 401, O: 403, U: 403, R: OK, R2: OK, S: 403}
    ),
    ("GET", "/registries/{registry_uuid}/index"): one(
        **{A: 401, O: (OK, 404), U: (OK, 404), R: 403, R2: 403, S: 403}
    ),
    ("GET", "/registries/{registry_uuid}/index/{registry_workflow_identifier}"): one(
        **{A: 401, O: (OK, 404), U: (OK, 404), R: 403, R2: 403, S: 403}
    ),
    ("GET", "/registries/{registry_uuid}/workflows"): one(
        **{A: 401, O: (OK, 404), U: (OK, 404), R: 403, R2: 403, S: 403}
    ),
    ("POST", "/registries/{registry_uuid}/workflows"): flag(
        **{A: (401, 401), O: (OK, 404), U: (OK, 404), R: (403, 403), R2: (403, 403), S: (403, 403)}
    ),
    # users (rows 11-20): a registry reads and submits for its users, named by their id on the
    # registry (their WorkflowHub person id); 401 when nobody has that identity on it
    ("GET", "/users/{user_id}/workflows"): one(
        **{A: (401, 401), O: (403, 403), U: (403, 403), R: (OK, 401), R2: (401, 401), S: (403, 403)}
    ),
    ("POST", "/users/{user_id}/workflows"): flag(
        **{A: (401, 401), O: (403, 403), U: (403, 403), R: (OK, 401), R2: (401, 401), S: (403, 403)}
    ),
    ("GET", "/users/current"): PROFILE,
    ("GET", "/users/current/notifications"): PROFILE,
    ("PUT", "/users/current/notifications"): PROFILE,
    ("PATCH", "/users/current/notifications"): PROFILE,
    # The notification belongs to the owner: another user cannot see (so delete) it.
    ("DELETE", "/users/current/notifications/{notification_uuid}"): one(
        **{A: (401, 401), O: (OK, 404), U: (404, 404), R: (403, 403), R2: (403, 403), S: (OK, 404)}
    ),
    ("GET", "/users/current/workflows"): USER_READ,
    ("POST", "/users/current/workflows"): flag(**{A: 401, O: OK, U: OK, R: 403, R2: 403, S: 403}),
    ("GET", "/users/current/subscriptions"): USER_READ,
    # workflows (rows 21-37)
    ("GET", "/workflows"): one(**{A: OK, O: OK, U: OK, R: OK, R2: OK, S: 403}),
    ("GET", "/workflows/{wf_uuid}"): READ,
    ("PUT", "/workflows/{wf_uuid}"): WRITE,
    ("DELETE", "/workflows/{wf_uuid}"): WRITE,
    ("POST", "/workflows/{wf_uuid}/subscribe"): SUBSCRIBE,
    ("PUT", "/workflows/{wf_uuid}/subscribe"): SUBSCRIBE,
    ("POST", "/workflows/{wf_uuid}/unsubscribe"): SUBSCRIBE,
    ("GET", "/workflows/{wf_uuid}/versions"): READ,
    ("GET", "/workflows/{wf_uuid}/versions/{wf_version}"): READ,
    ("PUT", "/workflows/{wf_uuid}/versions/{wf_version}"): WRITE,
    ("DELETE", "/workflows/{wf_uuid}/versions/{wf_version}"): WRITE,
    ("GET", "/workflows/{wf_uuid}/status"): READ,
    ("GET", "/workflows/{wf_uuid}/rocrate/{wf_version}/metadata"): READ,
    ("GET", "/workflows/{wf_uuid}/rocrate/{wf_version}/download"): READ,
    ("GET", "/workflows/{wf_uuid}/suites"): READ,
    # suites and instances (rows 38-47)
    ("GET", "/suites/{suite_uuid}"): READ,
    ("PUT", "/suites/{suite_uuid}"): WRITE,
    ("GET", "/suites/{suite_uuid}/status"): READ,
    ("GET", "/suites/{suite_uuid}/instances"): READ,
    ("POST", "/suites/{suite_uuid}/instances"): WRITE,
    ("GET", "/instances/{instance_uuid}"): READ,
    ("PUT", "/instances/{instance_uuid}"): WRITE,
    ("DELETE", "/instances/{instance_uuid}"): WRITE,
    ("GET", "/instances/{instance_uuid}/latest-builds"): READ,
    ("GET", "/instances/{instance_uuid}/builds/{build_id}"): READ,
    # build history (our addition): the access rules of the resource it describes
    ("GET", "/workflows/{wf_uuid}/history"): READ,
    ("GET", "/instances/{instance_uuid}/history"): READ,
    # badges (ours): public routes, public workflows only (404 otherwise), whoever asks
    **{
        ("GET", path): wf(**{p: (404, OK, 404) for p in PRINCIPALS})
        for path in (
            "/workflows/{wf_uuid}/badge.svg",
            "/workflows/{wf_uuid}/badge.json",
            "/workflows/{wf_uuid}/versions/{wf_version}/badge.svg",
            "/workflows/{wf_uuid}/versions/{wf_version}/badge.json",
            "/suites/{suite_uuid}/badge.svg",
            "/suites/{suite_uuid}/badge.json",
            "/instances/{instance_uuid}/badge.svg",
            "/instances/{instance_uuid}/badge.json",
        )
    },
    # outbound webhooks (ours): a user's or a registry's own endpoints; registering one for
    # a workflow needs read access to it.
    ("GET", "/webhook-endpoints"): one(**{A: 401, O: OK, U: OK, R: OK, R2: OK, S: 403}),
    ("POST", "/webhook-endpoints"): wf(
        **{
            A: (401, 401, 401),
            O: (OK, OK, 404),
            U: (403, OK, 404),
            R: (OK, OK, 404),
            R2: (403, OK, 404),
            S: (403, 403, 403),
        }
    ),
    **{
        (method, "/webhook-endpoints/{endpoint_uuid}"): one(
            **{
                A: (401, 401),
                O: (OK, 404),
                U: (404, 404),
                R: (404, 404),
                R2: (404, 404),
                S: (403, 403),
            }
        )
        for method in ("GET", "PATCH", "DELETE")
    },
    # an asynchronous registration's status: its own principal only (any key of that user,
    # whatever its scopes); everybody else gets the 404 of an unknown id.
    ("GET", "/jobs/status/{job_id}"): one(
        **{A: (404, 404), O: (OK, 404), U: (404, 404), R: (404, 404), R2: (404, 404), S: (OK, 404)}
    ),
}

# Cells that destroy what they touch run on fresh objects.
DESTRUCTIVE = {
    ("DELETE", "/workflows/{wf_uuid}"),
    ("DELETE", "/workflows/{wf_uuid}/versions/{wf_version}"),
    ("DELETE", "/instances/{instance_uuid}"),
}
# The OAuth2 endpoints authenticate clients themselves (tests/api/test_oauth*.py).
EXCLUDED_PATHS = ("/health", "/openapi.json", "/oauth2/token", "/oauth2/revoke")
# CI webhooks authenticate deliveries by signature or shared token, never by our
# credentials: they have their own check below (test_webhooks_ignore_our_credentials).
WEBHOOKS = "/webhooks/"
EXCLUDED_PREFIXES = ("/ui", "/integrations/", "/workflows/issues", WEBHOOKS)


def app_routes() -> list[tuple[str, str]]:
    # Web pages (chalicelib/web) are for browsers with a session, not API credentials.
    from chalicelib.web.routing import PAGES

    return sorted(
        (method, path)
        for path, methods in app_module.app.routes.items()
        for method in methods
        if path not in EXCLUDED_PATHS
        and not path.startswith(EXCLUDED_PREFIXES)
        and (path, method) not in PAGES
        and method != "HEAD"  # mirrors GET (tests/api/test_errors.py)
    )


PERSON_ID = "424242"  # the owner's person id on the submitting registry (WorkflowHub)
KNOWN_BUGS: dict = {}  # (method, path, principal) -> reason, for strict xfails


def test_every_route_has_expectations():
    assert set(app_routes()) == set(EXPECTED)


def _cells():
    for method, path in app_routes():
        for principal, targets in EXPECTED.get((method, path), {}).items():
            bug = KNOWN_BUGS.get((method, path, principal))
            marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
            for target, status in targets.items():
                yield pytest.param(
                    method,
                    path,
                    principal,
                    target,
                    status,
                    id=f"{method} {path} {principal} {target}",
                    marks=marks,
                )


# -- the world -------------------------------------------------------------------------------


@dataclass
class Objects:
    """What the path placeholders of one cell stand for."""

    wf_uuid: str
    suite_uuid: str
    instance_uuid: str
    wf_version: str = "1"
    build_id: str = "1"

    def params(self, world, target: str) -> dict[str, str]:
        missing = target == MISSING
        d = world.data
        return {
            "wf_uuid": self.wf_uuid,
            "wf_version": self.wf_version,
            "suite_uuid": self.suite_uuid,
            "instance_uuid": self.instance_uuid,
            "build_id": self.build_id,
            "registry_uuid": str(uuidlib.uuid4()) if missing else d[R].registry_uuid,
            "registry_workflow_identifier": d["wfh"].public_id,
            "user_id": "987654" if missing else PERSON_ID,
            "notification_uuid": str(uuidlib.uuid4()),
        }


def _missing() -> Objects:
    return Objects(str(uuidlib.uuid4()), str(uuidlib.uuid4()), str(uuidlib.uuid4()))


@pytest.fixture(scope="module")
def wfh():
    from emulators.seek import WorkflowHubEmulator

    with WorkflowHubEmulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def world(database_url, chalice_app, tmp_path_factory, wfh):
    env = {"ALLOW_PRIVATE_URLS": "1"}  # the WorkflowHub emulator listens on loopback
    with api_data.open_world(database_url, chalice_app, tmp_path_factory, env=env) as w:
        d = w.data
        d["wfh"] = wfh
        d[A] = api_data.ANONYMOUS
        d[O] = api_data.make_user("alice")
        d[U] = api_data.make_user("bob")
        d[S] = api_data.make_user("alice", ["user.profile"])
        d[R] = api_data.make_registry(
            w.client, "WorkflowHub", "wfh-app", api_url=wfh.url, client_name="wfhub"
        )
        d[R2] = api_data.make_registry(
            w.client, "Other Hub", "other-app", api_url="https://other-hub.example"
        )
        api_data.link_identity(d[O].user_id, d[R].registry_id, "wfhub", PERSON_ID)
        for target, public in ((PRIVATE, False), (PUBLIC, True)):
            d[target] = _submitted(w, public)
        yield w


def _submitted(world, public: bool) -> Objects:
    """A workflow the registry submitted on behalf of the owner, with one build."""
    d = world.data
    r = api_data.submit(
        world.client,
        d[R],
        {
            "rocrate": b64(crate(f"seed-{public}")),
            "version": "1",
            "public": public,
            "user_id": d[O].user_id,  # our id; `submitter_id` is the registry's
        },
        path="/registries/current/workflows",
    )
    assert r.status_code == 201, r.body
    wf_uuid = r.json_body["uuid"]
    [instance] = api_data.instance_uuids(wf_uuid)
    api_data.store_builds(instance, [build("1", "passed")])
    return Objects(wf_uuid, _suite_of(instance), instance)


def _suite_of(instance_uuid: str) -> str:
    from chalicelib.db import session_scope
    from chalicelib.models import TestInstance, TestSuite

    with session_scope() as s:
        return (
            s.query(TestSuite.uuid)
            .join(TestInstance)
            .filter(TestInstance.uuid == instance_uuid)
            .scalar()
        )


def _fresh(world, public: bool) -> Objects:
    """Like `_submitted`, written straight to the database (cheap, for destructive cells)."""
    from chalicelib.db import session_scope
    from chalicelib.models import (
        Permission,
        RegistryWorkflowVersion,
        TestingService,
        TestInstance,
        TestSuite,
        Workflow,
        WorkflowVersion,
    )

    d = world.data
    with session_scope() as s:
        service = s.query(TestingService).filter_by(
            url="https://ci.example/fresh"
        ).first() or TestingService(type="jenkins", url="https://ci.example/fresh")
        workflow = Workflow(name="fresh", public=public)
        version = WorkflowVersion(
            workflow=workflow,
            version="1",
            name="fresh",
            submitter_id=d[O].user_id,
            crate_metadata={},
            crate_origin="local file uploaded",
        )
        suite = TestSuite(workflow_version=version, roc_suite="#test1", name="test1")
        instance = TestInstance(
            suite=suite, resource="job/fresh/", name="fresh", testing_service=service
        )
        s.add_all([workflow, version, suite, instance])
        s.flush()
        s.add(Permission(user_id=d[O].user_id, workflow_id=workflow.id, roles=["owner"]))
        s.add(
            RegistryWorkflowVersion(
                registry_id=d[R].registry_id, workflow_version=version, identifier=workflow.uuid
            )
        )
        return Objects(workflow.uuid, suite.uuid, instance.uuid)


def _notification_of(user_id: int) -> str:
    from chalicelib.db import session_scope
    from chalicelib.models import Notification, UserNotification

    with session_scope() as s:
        n = Notification(event="BUILD_FAILED", name="TestBuild '1' FAILED", data={})
        s.add(n)
        s.flush()
        s.add(UserNotification(user_id=user_id, notification_id=n.id))
        return n.uuid


def _endpoint_of(user_id: int) -> str:
    """An outbound webhook endpoint of the owner (made when a cell deleted the last one)."""
    from chalicelib.db import session_scope
    from chalicelib.models import WebhookEndpoint

    with session_scope() as s:
        found = s.query(WebhookEndpoint).filter_by(user_id=user_id).first()
        if found is None:
            found = WebhookEndpoint(user_id=user_id, url="https://hooks.example/x", events=["ALL"])
            s.add(found)
            s.flush()
        return found.uuid


def _job_of(user_id: int) -> str:
    """A finished registration job the owner started (`async: true`)."""
    from chalicelib.db import session_scope
    from chalicelib.models import RegistrationJob

    with session_scope() as s:
        job = RegistrationJob(
            status="completed",
            principal={"method": "api_key", "user_id": user_id, "scopes": []},
            route="user",
            params={},
            body={"version": "1"},
            result={"uuid": str(uuidlib.uuid4()), "wf_version": "1", "name": "x", "meta": {}},
        )
        s.add(job)
        s.flush()
        return job.uuid


@pytest.fixture(autouse=True)
def _world_env(world, monkeypatch):
    world.activate(monkeypatch)


# -- request bodies -------------------------------------------------------------------------


def _body(world, method: str, path: str, target: str) -> dict | list | None:
    public = target == PUBLIC
    d = world.data
    if (method, path) in {
        ("POST", "/registries/current/workflows"),
        ("POST", "/users/{user_id}/workflows"),
        ("POST", "/users/current/workflows"),
    }:
        return {
            "rocrate": b64(crate(f"cell-{uuidlib.uuid4().hex[:6]}")),
            "version": "1",
            "public": public,
        }
    if (method, path) == ("POST", "/registries/{registry_uuid}/workflows"):
        return {"identifier": d["wfh"].public_id, "version": "1", "public": public}
    if (method, path) == ("PUT", "/users/current/notifications"):
        return {"items": []}
    if (method, path) == ("PATCH", "/users/current/notifications"):
        return []
    if (method, path) == ("PUT", "/workflows/{wf_uuid}/subscribe"):
        return ["ALL"]
    if (method, path) == ("POST", "/webhook-endpoints"):
        workflow = d[target].wf_uuid if target in (PRIVATE, PUBLIC) else str(uuidlib.uuid4())
        return {"url": "https://hooks.example/cell", "workflow": workflow}
    if (method, path) == ("PATCH", "/webhook-endpoints/{endpoint_uuid}"):
        return {"events": ["BUILD_FAILED"]}
    if (method, path) == ("POST", "/suites/{suite_uuid}/instances"):
        return {
            "managed": False,
            "name": "added",
            "resource": "job/added/",
            "service": {"type": "jenkins", "url": "https://ci.example/added"},
        }
    if method == "PUT":
        return {"name": f"renamed-{target}"}
    return None


# -- the matrix --------------------------------------------------------------------------------


def _created(method: str, path: str, response) -> tuple[str, str] | None:
    if method != "POST" or response.status_code != 201 or not isinstance(response.json_body, dict):
        return None
    if path == "/suites/{suite_uuid}/instances":
        return ("instance", response.json_body["uuid"])
    if path.endswith("/workflows"):
        return ("workflow", response.json_body["uuid"])
    if path == "/webhook-endpoints":
        return ("webhook", response.json_body["uuid"])
    return None


def _remove(kind: str, uuid: str) -> None:
    from chalicelib.db import session_scope
    from chalicelib.models import TestInstance

    if kind == "workflow":
        api_data.delete_workflow_rows(uuid)
        return
    if kind == "webhook":
        from chalicelib.models import WebhookEndpoint

        with session_scope() as s:
            s.query(WebhookEndpoint).filter_by(uuid=uuid).delete()
        return
    with session_scope() as s:
        s.query(TestInstance).filter_by(uuid=uuid).delete()


@pytest.mark.parametrize(("method", "path", "principal", "target", "expected"), list(_cells()))
def test_access(world, method, path, principal, target, expected):
    d = world.data
    fresh = None
    if target == MISSING:
        objects = _missing()
    elif (method, path) in DESTRUCTIVE:
        objects = fresh = _fresh(world, public=target == PUBLIC)
    else:
        objects = d[PUBLIC if target == PUBLIC else PRIVATE]
    params = objects.params(world, target)
    if "{notification_uuid}" in path and target != MISSING:
        params["notification_uuid"] = _notification_of(d[O].user_id)
    if "{endpoint_uuid}" in path:
        params["endpoint_uuid"] = (
            _endpoint_of(d[O].user_id) if target != MISSING else str(uuidlib.uuid4())
        )
    if "{job_id}" in path:
        params["job_id"] = _job_of(d[O].user_id) if target != MISSING else str(uuidlib.uuid4())
    url = path.format(**params)
    body = _body(world, method, path, target)
    headers = dict(d[principal].headers)
    if path.endswith("/download"):
        headers["Accept"] = "application/zip"
    if body is not None:
        headers["Content-Type"] = "application/json"
    r = world.http.request(
        method, url, headers=headers, body=json.dumps(body).encode() if body is not None else b""
    )
    created = _created(method, path, r)
    try:
        if expected == OK:
            assert 200 <= r.status_code < 300, (r.status_code, r.body[:300])
        else:
            assert r.status_code == expected, (r.status_code, r.body[:300])
            ctype = {k.lower(): v for k, v in r.headers.items()}.get("content-type", "")
            assert ctype.startswith("application/problem+json")
    finally:
        if created:
            _remove(*created)
        if fresh is not None:
            api_data.delete_workflow_rows(fresh.wf_uuid)


# -- what each caller sees in the lists ----------------------------------------------------------

OWN = "own_private"  # the owner's private workflow submitted with their own API key
NOTHING: set[str] = set()
LISTS = {
    # GET /workflows: exactly what each caller may read one by one.
    "/workflows": {
        A: {PUBLIC},
        O: {PRIVATE, PUBLIC, OWN},
        U: {PUBLIC},
        R: {PRIVATE, PUBLIC},
        R2: {PUBLIC},
        S: 403,
    },
    "/users/current/workflows": {
        A: 401,
        O: {PRIVATE, PUBLIC, OWN},
        U: NOTHING,
        R: 403,
        R2: 403,
        S: 403,
    },
    # A registry reading a person's list sees what it may read of it: not the private
    # workflow the owner submitted with their own key (issue 9, defect 4).
    "/users/{person}/workflows": {
        A: 401,
        O: 403,
        U: 403,
        R: {PRIVATE, PUBLIC},
        R2: 401,
        S: 403,
    },
    "/registries/current/workflows": {
        A: 401,
        O: 403,
        U: 403,
        R: {PRIVATE, PUBLIC},
        R2: NOTHING,
        S: 403,
    },
    "/registries/{registry}/workflows": {
        A: 401,
        O: {PRIVATE, PUBLIC},
        U: NOTHING,
        R: 403,
        R2: 403,
        S: 403,
    },
}
LIST_FLAGS = ["", "?status=true", "?versions=true", "?status=true&versions=true"]


def _own_private(world) -> Objects:
    d = world.data
    if OWN not in d:
        r = api_data.submit(
            world.client,
            d[O],
            {"rocrate": b64(crate("own-private")), "version": "1", "public": False},
        )
        assert r.status_code == 201, r.body
        wf_uuid = r.json_body["uuid"]
        [instance] = api_data.instance_uuids(wf_uuid)
        api_data.store_builds(instance, [build("1", "failed")])
        d[OWN] = Objects(wf_uuid, _suite_of(instance), instance)
    return d[OWN]


def test_every_list_route_has_expectations():
    lists = {
        path
        for method, path in app_routes()
        if method == "GET" and path.endswith("/workflows") and "{wf_uuid}" not in path
    }
    assert lists == {
        p.replace("{person}", "{user_id}").replace("{registry}", "{registry_uuid}") for p in LISTS
    }


@pytest.mark.parametrize("flags", LIST_FLAGS)
@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("path", list(LISTS))
def test_lists_show_exactly_what_single_reads_allow(world, path, principal, flags):
    d = world.data
    _own_private(world)
    url = path.format(registry=d[R].registry_uuid, person=PERSON_ID) + flags
    r = world.http.get(url, headers=d[principal].headers)
    expected = LISTS[path][principal]
    if isinstance(expected, int):
        assert r.status_code == expected, (r.status_code, r.body[:300])
        return
    assert r.status_code == 200, r.body
    shown = {i["uuid"] for i in r.json_body["items"]}
    assert shown == {d[t].wf_uuid for t in expected}
    # The rule is the single read's: every listed workflow opens for the same caller.
    for wf_uuid in shown:
        single = world.http.get(f"/workflows/{wf_uuid}", headers=d[principal].headers)
        assert single.status_code == 200, (wf_uuid, single.status_code)
    # ... and nothing the caller may not open is listed, status reasons included.
    for target in {PRIVATE, PUBLIC, OWN} - set(expected):
        assert d[target].wf_uuid not in r.body.decode()


def test_denied_changes_change_nothing(world):
    """After every cell has run, the shared workflows kept their visibility."""
    d = world.data
    for target, public in ((PRIVATE, False), (PUBLIC, True)):
        r = world.http.get(f"/workflows/{d[target].wf_uuid}", headers=d[O].headers)
        assert r.status_code == 200
        assert r.json_body["public"] is public


# -- webhooks: our credentials are not theirs -------------------------------------------------

WEBHOOK_SECRETS = {
    "webhooks/github/secret": "gh-secret",
    "webhooks/jenkins/token": "jenkins-token",
    "webhooks/gitlab/secret": "gitlab-secret",
}


def _webhook_routes() -> list[tuple[str, str]]:
    return sorted(
        (method, path)
        for path, methods in app_module.app.routes.items()
        for method in methods
        if path.startswith(WEBHOOKS)
    )


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_webhooks_ignore_our_credentials(world, principal):
    """An unsigned delivery is refused whoever sends it (with the secrets configured)."""
    from chalicelib.secrets import get_secrets

    store = get_secrets()
    for key, value in WEBHOOK_SECRETS.items():
        store.put(key, value)
    try:
        for method, path in _webhook_routes():
            headers = {**world.data[principal].headers, "Content-Type": "application/json"}
            r = world.http.request(method, path, headers=headers, body=b"{}")
            assert r.status_code in (401, 403), (path, r.status_code, r.body[:300])
            ctype = {k.lower(): v for k, v in r.headers.items()}.get("content-type", "")
            assert ctype.startswith("application/problem+json")
    finally:
        for key in WEBHOOK_SECRETS:
            store.delete(key)


def test_registry_names_the_submitter_by_their_person_id(world):
    d = world.data
    body = {"rocrate": b64(crate("by-person-id")), "version": "1", "submitter_id": PERSON_ID}
    r = api_data.submit(world.client, d[R], body, path="/registries/current/workflows")
    created = r.json_body.get("uuid") if r.status_code == 201 else None
    try:
        assert r.status_code == 201, r.body
        mine = world.http.get("/users/current/workflows", headers=d[O].headers).json_body
        assert created in {i["uuid"] for i in mine["items"]}
    finally:
        if created:
            api_data.delete_workflow_rows(created)


def test_subscriptions_do_not_outlive_read_access(world):
    d = world.data
    fresh = _fresh(world, public=True)
    try:
        r = world.http.post(f"/workflows/{fresh.wf_uuid}/subscribe", headers=d[U].headers)
        assert r.status_code == 201, r.body
        r = world.http.put(
            f"/workflows/{fresh.wf_uuid}",
            headers=d[O].json(),
            body=json.dumps({"public": False}),
        )
        assert r.status_code == 204, r.body
        assert (
            world.http.get(f"/workflows/{fresh.wf_uuid}", headers=d[U].headers).status_code == 403
        )
        r = world.http.get(
            "/users/current/workflows?subscriptions=true&status=true", headers=d[U].headers
        )
        assert r.status_code == 200, r.body
        assert fresh.wf_uuid not in {i["uuid"] for i in r.json_body["items"]}
    finally:
        api_data.delete_workflow_rows(fresh.wf_uuid)


# -- a registry names submitters among its own users only (issue 9, defect 8) ----------------


def test_a_registry_attaches_workflows_only_to_users_linked_to_it(world):
    d = world.data
    before = api_data.row_counts()

    def submit(actor, user_id):
        body = {"rocrate": b64(crate("attach")), "version": "1", "user_id": user_id}
        return api_data.submit(world.client, actor, body, path="/registries/current/workflows")

    # bob has no identity on the registry, 987654 is nobody: the same answer for both, so
    # ids cannot be enumerated.
    refused = [submit(d[R], d[U].user_id), submit(d[R], 987654), submit(d[R2], d[O].user_id)]
    bodies = [r.json_body for r in refused]
    assert [r.status_code for r in refused] == [400, 400, 400], bodies
    assert all(b["extra_info"].get("field") == "user_id" for b in bodies)
    assert bodies[0]["detail"].replace(str(d[U].user_id), "N") == bodies[1]["detail"].replace(
        "987654", "N"
    )
    assert api_data.row_counts() == before
    ok = submit(d[R], d[O].user_id)  # alice signed in to us with her account there
    assert ok.status_code == 201, ok.body
    api_data.delete_workflow_rows(ok.json_body["uuid"])
