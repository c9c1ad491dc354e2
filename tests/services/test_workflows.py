"""Listing workflows (chalicelib/services/workflows.py list_workflows): what each mode returns
for each kind of caller, what is loaded with status/versions/subscriptions, and the number of
SQL statements a list costs — the same for one workflow as for twenty."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from chalicelib.auth.principals import ANONYMOUS, Principal
from chalicelib.services.workflows import list_workflows


@contextlib.contextmanager
def rolled_back_session(database_url: str, data_dir) -> Iterator:
    """A session inside a transaction that is rolled back at the end: nothing to empty. The
    environment is the conftest base one, pointed at the session database."""
    from sqlalchemy.orm import Session

    from chalicelib import secrets
    from chalicelib.db import get_engine
    from tests.conftest import BASE_ENV

    with pytest.MonkeyPatch.context() as mp:
        for name, value in BASE_ENV.items():
            mp.setenv(name, value)
        mp.setenv("DATABASE_URL", database_url)
        mp.setenv("LM_DATA_DIR", str(data_dir))
        secrets.reset()
        conn = get_engine().connect()
        outer = conn.begin()
        session = Session(
            bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        try:
            yield session
        finally:
            session.close()
            outer.rollback()
            conn.close()
            secrets.reset()


def add_workflow(
    s,
    name: str,
    *,
    public: bool = False,
    owner=None,
    registry=None,
    versions: int = 1,
    instances: int = 1,
    builds: bool = True,
):
    """A workflow with `versions` versions (created in order, so the last is the latest),
    each with one suite of `instances` instances and, if asked, one passed build each."""
    from datetime import timedelta

    from chalicelib.jobs.refresh import store_builds
    from chalicelib.models import (
        Permission,
        RegistryWorkflowVersion,
        TestingService,
        TestInstance,
        TestSuite,
        Workflow,
        WorkflowVersion,
        utcnow,
    )
    from tests.support.api_data import build

    service = s.query(TestingService).filter_by(
        url="https://ci.example/j"
    ).one_or_none() or TestingService(type="jenkins", url="https://ci.example/j")
    workflow = Workflow(name=name, public=public)
    s.add(workflow)
    start = utcnow() - timedelta(days=1)
    for n in range(versions):
        version = WorkflowVersion(
            workflow=workflow,
            version=str(n + 1),
            name=name,
            crate_metadata={},
            created=start + timedelta(minutes=n),
        )
        suite = TestSuite(workflow_version=version, roc_suite="#test1", name="test1")
        made = [
            TestInstance(
                suite=suite, resource=f"job/{name}/{n}/{i}", name=f"i{i}", testing_service=service
            )
            for i in range(instances)
        ]
        s.add_all([version, suite, *made])
        s.flush()
        if registry is not None:
            s.add(
                RegistryWorkflowVersion(
                    registry_id=registry.id, workflow_version=version, identifier=f"{name}-{n}"
                )
            )
        if builds:
            for inst in made:
                store_builds(s, inst, [build(f"{name}-{n}", "passed", 10)])
    if owner is not None:
        s.add(Permission(user_id=owner.id, workflow_id=workflow.id, roles=["owner"]))
    s.flush()
    from chalicelib.services.status_upkeep import update_statuses

    # As a submission does: the stored statuses of what was just written.
    update_statuses(s, version_ids=[v.id for v in workflow.versions], workflow_ids=[workflow.id])
    return workflow


@dataclass
class Data:
    alice: object
    bob: object
    r1: object
    r2: object
    wf: dict


def make_data(tx) -> Data:
    from chalicelib.models import Subscription, Workflow
    from chalicelib.services import registries, users

    alice = users.create_user(tx, "alice")
    bob = users.create_user(tx, "bob")
    r1 = registries.add_registry(
        tx,
        name="Hub One",
        type="seek",
        client_id="one",
        client_secret="s1",
        api_url="https://one.example",
    ).registry
    r2 = registries.add_registry(
        tx,
        name="Hub Two",
        type="seek",
        client_id="two",
        client_secret="s2",
        api_url="https://two.example",
    ).registry
    wf = {
        "pub_alice": add_workflow(tx, "pub_alice", public=True, owner=alice, versions=2),
        "priv_alice_r1": add_workflow(tx, "priv_alice_r1", owner=alice, registry=r1),
        "priv_bob_r2": add_workflow(tx, "priv_bob_r2", owner=bob, registry=r2),
        "pub_r1": add_workflow(tx, "pub_r1", public=True, registry=r1, builds=False),
        "priv_nobody": add_workflow(tx, "priv_nobody"),
    }
    empty = Workflow(name="no versions", public=True)  # never listed
    tx.add(empty)
    tx.add(Subscription(user_id=bob.id, workflow_id=wf["pub_alice"].id, events=["ALL"]))
    tx.flush()
    return Data(alice, bob, r1, r2, wf)


def user(u) -> Principal:
    return Principal(method="api_key", user_id=u.id, username=u.username)


def registry(r) -> Principal:
    return Principal(method="oauth2", registry_id=r.id, registry_uuid=r.uuid, client_id="c")


def names(entries) -> list[str]:
    return [e.workflow.name for e in entries]


# -- modes -----------------------------------------------------------------------------------


@pytest.fixture(scope="class")
def tx(database_url, tmp_path_factory):
    with rolled_back_session(database_url, tmp_path_factory.mktemp("modes")) as session:
        yield session


@pytest.fixture(scope="class")
def data(tx) -> Data:
    return make_data(tx)


class TestModes:
    """Read-only tests over one data set, in one transaction rolled back after the class
    (before the query-count test below, which commits through the API)."""

    @pytest.mark.parametrize(
        ("who", "expected"),
        [
            ("anonymous", ["pub_alice", "pub_r1"]),
            ("alice", ["pub_alice", "priv_alice_r1", "pub_r1"]),
            ("bob", ["pub_alice", "priv_bob_r2", "pub_r1"]),
            ("r1", ["pub_alice", "priv_alice_r1", "pub_r1"]),
            ("r2", ["pub_alice", "priv_bob_r2", "pub_r1"]),
        ],
    )
    def test_visible(self, tx, data, who, expected):
        principal = {
            "anonymous": ANONYMOUS,
            "alice": user(data.alice),
            "bob": user(data.bob),
            "r1": registry(data.r1),
            "r2": registry(data.r2),
        }[who]
        assert names(list_workflows(tx, principal, mode="visible")) == expected

    def test_user_mode_lists_owned_workflows(self, tx, data):
        entries = list_workflows(tx, user(data.alice), mode="user", user_id=data.alice.id)
        assert names(entries) == ["pub_alice", "priv_alice_r1"]
        assert all(e.subscriptions == [] for e in entries)

    def test_user_mode_with_subscriptions_adds_subscribed_workflows(self, tx, data):
        plain = list_workflows(tx, user(data.bob), mode="user", user_id=data.bob.id)
        assert names(plain) == ["priv_bob_r2"]
        entries = list_workflows(
            tx, user(data.bob), mode="user", user_id=data.bob.id, with_subscriptions=True
        )
        assert names(entries) == ["pub_alice", "priv_bob_r2"]
        subs = {e.workflow.name: [s.events for s in e.subscriptions] for e in entries}
        assert subs == {"pub_alice": [["ALL"]], "priv_bob_r2": []}

    def test_registry_mode(self, tx, data):
        assert names(
            list_workflows(tx, registry(data.r1), mode="registry", registry_id=data.r1.id)
        ) == ["priv_alice_r1", "pub_r1"]
        assert names(
            list_workflows(tx, registry(data.r2), mode="registry", registry_id=data.r2.id)
        ) == ["priv_bob_r2"]

    def test_user_registry_mode(self, tx, data):
        def listed(u, r):
            return names(
                list_workflows(tx, user(u), mode="user_registry", registry_id=r.id, user_id=u.id)
            )

        assert listed(data.alice, data.r1) == ["priv_alice_r1"]
        assert listed(data.alice, data.r2) == []
        assert listed(data.bob, data.r2) == ["priv_bob_r2"]

    def test_versions_are_newest_first_with_one_latest(self, tx, data):
        [entry] = [e for e in list_workflows(tx, ANONYMOUS) if e.workflow.name == "pub_alice"]
        assert [v.version.version for v in entry.versions] == ["2", "1"]
        assert [v.is_latest for v in entry.versions] == [True, False]
        assert entry.latest.version.version == "2"

    def test_status_is_the_stored_one_and_loads_no_suite(self, tx, data):
        entries = {e.workflow.name: e for e in list_workflows(tx, ANONYMOUS, with_status=True)}
        latest, older = entries["pub_alice"].versions
        assert latest.suites == [] and older.suites == []  # lists never fold over instances
        assert latest.stored.aggregate_test_status == "all_passing"
        assert latest.stored.build is not None and latest.stored.instance is not None
        assert entries["pub_r1"].latest.stored.aggregate_test_status == "not_available"
        assert entries["pub_r1"].latest.stored.reason

    def test_status_with_all_versions_reads_every_version(self, tx, data):
        entries = {
            e.workflow.name: e
            for e in list_workflows(tx, ANONYMOUS, with_status=True, all_versions=True)
        }
        assert all(
            v.stored.aggregate_test_status == "all_passing" for v in entries["pub_alice"].versions
        )

    def test_without_status_nothing_below_versions_is_loaded(self, tx, data):
        entries = list_workflows(tx, ANONYMOUS, all_versions=True)
        assert all(v.suites == [] for e in entries for v in e.versions)

    def test_subscriptions_are_only_for_users(self, tx, data):
        entries = list_workflows(tx, registry(data.r1), with_subscriptions=True)
        assert all(e.subscriptions == [] for e in entries)


# -- query counts ---------------------------------------------------------------------------


def _seed(n: int, registry_id: int, owner_id: int, start: int = 0) -> None:
    from chalicelib.db import session_scope
    from chalicelib.models import Registry, Subscription, User

    with session_scope() as s:
        reg = s.get(Registry, registry_id)
        owner = s.get(User, owner_id)
        for i in range(start, start + n):
            w = add_workflow(
                s, f"wf{i}", public=i % 2 == 0, owner=owner, registry=reg, versions=2, instances=2
            )
            s.add(Subscription(user_id=owner_id, workflow_id=w.id, events=["ALL"]))


def _statements(client, path: str, headers: dict) -> tuple[int, dict]:
    from sqlalchemy import event

    from chalicelib.db import get_engine

    engine = get_engine()
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    client.http.get(path, headers=headers)  # warm up (e.g. an API key's last_used write)
    event.listen(engine, "before_cursor_execute", record)
    try:
        r = client.http.get(path, headers=headers)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert r.status_code == 200, r.body
    return len(seen), r.json_body


LISTS = [
    ("registry", "/registries/current/workflows?status=true&versions=true"),
    ("user", "/workflows?status=true&versions=true&subscriptions=true"),
    ("user", "/users/current/workflows?status=true&versions=true&subscriptions=true"),
    (None, "/workflows?status=true&versions=true"),
]


def test_list_queries_do_not_grow_with_the_number_of_workflows(client, registry_token):
    from tests.support import api_data

    alice = api_data.make_user("alice")
    from chalicelib.db import session_scope
    from chalicelib.models import Registry

    with session_scope() as s:
        registry_id = s.query(Registry.id).scalar()
    callers = {
        "registry": {"Authorization": f"Bearer {registry_token}"},
        "user": alice.headers,
        None: {},
    }

    _seed(1, registry_id, alice.user_id)
    one = {}
    for who, path in LISTS:
        one[path], body = _statements(client, path, callers[who])
        assert len(body["items"]) >= 1
    _seed(19, registry_id, alice.user_id, start=1)
    for who, path in LISTS:
        count, body = _statements(client, path, callers[who])
        expected_items = 20 if who else 10  # anonymous callers see the public half
        assert len(body["items"]) == expected_items
        assert all(len(i["versions"]) == 2 and "status" in i["versions"][0] for i in body["items"])
        assert count == one[path], (path, one[path], count)
        assert count <= 12, (path, count)


# --- rows as JSON arrays (Postgres) ------------------------------------------------------


def test_json_rows_equal_the_driver_rows(database_url, tmp_path):
    """On Postgres the suites+instances rows come back as one JSON array each; every value
    must equal what pg8000 and the column types give: aware UTC datetimes, floats (also
    for integral durations), booleans, NULLs and the suite's JSON definition."""
    if not database_url.startswith("postgresql"):
        pytest.skip("the JSON path is Postgres-only (the suite runs on SQLite)")
    from chalicelib.jobs.refresh import store_builds
    from chalicelib.models import TestInstance, TestSuite
    from chalicelib.services import workflows
    from tests.support.api_data import build

    with rolled_back_session(database_url, tmp_path) as s:
        wf = add_workflow(s, "json-rows", instances=3, builds=False)
        version = wf.versions[0]
        suite = s.query(TestSuite).filter_by(workflow_version_id=version.id).one()
        suite.definition = {"test": [{"name": "t", "params": [1, 2.5, None, True]}]}
        first, second, _third = sorted(suite.instances, key=lambda i: i.id)
        store_builds(s, first, [build("1", "passed", 30, duration=60), build("2", "running", 5)])
        store_builds(s, second, [build("7", "failed", 10, duration=12.25)])
        s.get(TestInstance, second.id).last_error = "CI down"
        s.flush()
        plain = [
            list(r)
            for r in s.execute(
                workflows._cached(s, "suites+instances", workflows._suites_statement),
                {"ids": [version.id]},
            )
        ]
        as_json = list(
            workflows._plain_rows(
                s, "suites+instances", workflows._suites_statement, {"ids": [version.id]}
            )
        )
    assert len(plain) == 3
    assert as_json == plain
    for got, want in zip(as_json, plain, strict=True):
        assert [type(v) for v in got] == [type(v) for v in want]
        assert [v.tzinfo for v in got if hasattr(v, "tzinfo")] == [
            v.tzinfo for v in want if hasattr(v, "tzinfo")
        ]
