"""Data for API tests: a module-scoped "world" (one database, one data dir and one Chalice
test client shared by a module's tests, emptied once at the end), users with API keys,
registries with bearer tokens, submissions, builds and row counts.

The function-scoped `db`/`client` fixtures of conftest empty every table after each test,
which costs about half a second on PostgreSQL; modules with many small tests open a
`World` instead and compare row counts before and after rather than expecting empty
tables. Typical use in a test module:

    @pytest.fixture(scope="module")
    def world(database_url, chalice_app, tmp_path_factory):
        with api_data.open_world(database_url, chalice_app, tmp_path_factory) as w:
            yield w

    @pytest.fixture(autouse=True)
    def _world_env(world, monkeypatch):
        world.activate(monkeypatch)
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from emulators.crates import wtroc_metadata, zip_crate

JSON_HEADERS = {"Content-Type": "application/json"}
FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}


# -- plain helpers ----------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def crate(
    name: str | None = "sort-and-change-case",
    *,
    instances=None,
    based_on: bool = False,
    **kwargs: Any,
) -> bytes:
    """A zipped Workflow Testing RO-Crate (emulators.crates), by default without
    `isBasedOn` so that responses carry no `based_on` link unless a test asks for it."""
    if instances is not None:
        kwargs["instances"] = instances
    metadata = wtroc_metadata(name=name, **kwargs)
    if not based_on:
        for entity in metadata["@graph"]:
            if entity.get("@id") == "./":
                entity.pop("isBasedOn", None)
    return zip_crate(metadata)


def table_names() -> list[str]:
    from chalicelib.models import Base

    return [t.name for t in Base.metadata.sorted_tables]


def row_counts() -> dict[str, int]:
    """Rows in every table of the schema."""
    from sqlalchemy import func, select

    from chalicelib.db import get_engine
    from chalicelib.models import Base

    with get_engine().connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in Base.metadata.sorted_tables
        }


def empty_tables() -> None:
    from sqlalchemy import text

    from chalicelib.db import get_engine

    engine = get_engine()
    tables = list(reversed(table_names()))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                conn.execute(text(f"DELETE FROM {name}"))  # noqa: S608 - our table names


def stored_crates(data_dir: Path) -> list[Path]:
    """Crate zips kept by the local storage backend under `data_dir`."""
    root = data_dir / "crates"
    return sorted(p for p in root.rglob("*.zip")) if root.is_dir() else []


def secrets_file(data_dir: Path) -> dict[str, str]:
    path = data_dir / "secrets.json"
    return json.loads(path.read_text()) if path.is_file() else {}


NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def build(
    build_id: str,
    status: str,
    minutes_ago: float = 10,
    *,
    duration: float | None = 61.4,
    url: str | None = None,
):
    """A BuildData that started `minutes_ago` before NOW."""
    from chalicelib.testing import BuildData

    started = NOW - timedelta(minutes=minutes_ago)
    running = status in {"running", "waiting"}
    return BuildData(
        build_id=build_id,
        status=status,
        started_at=started,
        finished_at=None if running or duration is None else started + timedelta(seconds=duration),
        duration=None if running else duration,
        url=url or f"https://ci.example/builds/{build_id}",
    )


def store_builds(instance_uuid: str, builds: Sequence) -> None:
    """Insert builds for an instance as the refresh job would (pointers included)."""
    from chalicelib.db import session_scope
    from chalicelib.jobs.refresh import store_builds as store
    from chalicelib.models import TestInstance

    with session_scope() as s:
        instance = s.query(TestInstance).filter_by(uuid=instance_uuid).one()
        store(s, instance, list(builds))


def instance_uuids(wf_uuid: str, version: str | None = None) -> list[str]:
    from chalicelib.db import session_scope
    from chalicelib.models import TestInstance, TestSuite, Workflow, WorkflowVersion

    with session_scope() as s:
        query = (
            s.query(TestInstance.uuid)
            .join(TestSuite, TestInstance.suite_id == TestSuite.id)
            .join(WorkflowVersion, TestSuite.workflow_version_id == WorkflowVersion.id)
            .join(Workflow, WorkflowVersion.workflow_id == Workflow.id)
            .filter(Workflow.uuid == wf_uuid)
        )
        if version is not None:
            query = query.filter(WorkflowVersion.version == version)
        return [u for (u,) in query.order_by(TestInstance.id)]


def delete_workflow_rows(wf_uuid: str) -> None:
    """Remove a workflow (and, by cascade, everything under it) straight from the DB."""
    from chalicelib.db import session_scope
    from chalicelib.models import Workflow

    with session_scope() as s:
        workflow = s.query(Workflow).filter_by(uuid=wf_uuid).one_or_none()
        if workflow is not None:
            s.delete(workflow)


# -- principals --------------------------------------------------------------------------------


@dataclass
class Actor:
    """Who calls: request headers plus what a test may need to know about them."""

    name: str
    headers: dict[str, str] = field(default_factory=dict)
    user_id: int | None = None
    registry_uuid: str | None = None
    registry_id: int | None = None
    client_id: str | None = None
    client_secret: str | None = None

    def json(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**self.headers, **JSON_HEADERS, **(extra or {})}


ANONYMOUS = Actor("anonymous")


def make_user(username: str, scopes: list[str] | None = None) -> Actor:
    """A user (created if new) and a fresh API key with `scopes` (default: all user
    scopes)."""
    from chalicelib.auth import apikeys
    from chalicelib.db import session_scope
    from chalicelib.models import User
    from chalicelib.services import users

    with session_scope() as s:
        user = s.query(User).filter_by(username=username).one_or_none()
        if user is None:
            user = users.create_user(s, username, email=f"{username}@example.org")
        key = apikeys.create(s, user, scopes).key
        return Actor(username, {"ApiKey": key}, user_id=user.id)


def make_registry(
    client,
    name: str,
    client_id: str,
    api_url: str = "https://hub.example",
    client_name: str | None = None,
) -> Actor:
    """A registry and a bearer token of its client with WorkflowHub's scope list."""
    from chalicelib.auth import scopes as S
    from chalicelib.db import session_scope
    from chalicelib.services import registries

    with session_scope() as s:
        creds = registries.add_registry(
            s,
            name=name,
            type="seek",
            client_id=client_id,
            client_secret=f"{client_id}-secret",
            api_url=api_url,
            client_name=client_name,
        )
        registry_uuid, registry_id = creds.registry.uuid, creds.registry.id
    token = bearer_token(client, creds.client_id, creds.client_secret, S.WORKFLOWHUB_REQUEST)
    return Actor(
        name,
        {"Authorization": f"Bearer {token}"},
        registry_uuid=registry_uuid,
        registry_id=registry_id,
        client_id=creds.client_id,
        client_secret=creds.client_secret,
    )


def bearer_token(client, client_id: str, client_secret: str, scope: str) -> str:
    from urllib.parse import urlencode

    r = client.http.post(
        "/oauth2/token",
        headers=FORM_HEADERS,
        body=urlencode(
            {
                "client_id": client_id,
                "client_secret": client_secret,
                "grant_type": "client_credentials",
                "scope": scope,
            }
        ).encode(),
    )
    assert r.status_code == 200, r.body
    return r.json_body["access_token"]


def link_identity(
    user_id: int,
    registry_id: int,
    provider: str,
    provider_user_id: str = "2",
    user_info: dict | None = None,
) -> None:
    """The user has an account on the registry (logged in to us with it)."""
    from chalicelib.db import session_scope
    from chalicelib.models import Identity

    with session_scope() as s:
        s.add(
            Identity(
                user_id=user_id,
                registry_id=registry_id,
                provider=provider,
                provider_user_id=provider_user_id,
                user_info=user_info or {"name": "Alice", "email": "alice@hub.example"},
            )
        )


def submit(client, actor: Actor, body: dict, path: str = "/users/current/workflows"):
    return client.http.post(path, headers=actor.json(), body=json.dumps(body))


# -- the module-scoped world ---------------------------------------------------------------------


@dataclass
class World:
    client: Any  # chalice.test.Client
    database_url: str
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # what the module seeded

    @property
    def http(self):
        return self.client.http

    def activate(self, monkeypatch) -> None:
        """Point this test's environment at the world's database and data dir."""
        monkeypatch.setenv("DATABASE_URL", self.database_url)
        monkeypatch.setenv("LM_DATA_DIR", str(self.data_dir))
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)


@contextlib.contextmanager
def open_world(
    database_url: str, chalice_app, tmp_path_factory, env: dict[str, str] | None = None
) -> Iterator[World]:
    """A World for one module: the conftest base environment, the session database, a data
    dir of its own; all tables emptied on exit."""
    import pytest
    from chalice.test import Client

    from chalicelib import secrets
    from tests.conftest import BASE_ENV, CLEARED_ENV, ROOT

    data_dir = tmp_path_factory.mktemp("world") / "data"
    with pytest.MonkeyPatch.context() as mp:
        for name in CLEARED_ENV:
            mp.delenv(name, raising=False)
        for name, value in {**BASE_ENV, **(env or {})}.items():
            mp.setenv(name, value)
        mp.setenv("DATABASE_URL", database_url)
        mp.setenv("LM_DATA_DIR", str(data_dir))
        secrets.reset()
        if any(row_counts().values()):  # a previous module died before cleaning up
            empty_tables()
        try:
            with Client(chalice_app, stage_name="test", project_dir=str(ROOT)) as client:
                yield World(
                    client=client, database_url=database_url, data_dir=data_dir, env=dict(env or {})
                )
        finally:
            empty_tables()
            secrets.reset()
