"""Model constraints, defaults, timestamps and cascades on the migrated database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError

from chalicelib.auth.hashing import token_hash
from chalicelib.models import (
    Build,
    OAuth2Client,
    OAuth2Token,
    Registry,
    TestingService,
    TestInstance,
    TestSuite,
    User,
    Workflow,
    WorkflowVersion,
    utcnow,
)


def _count(session, model) -> int:
    return session.execute(select(func.count()).select_from(model)).scalar_one()


def _instance(session, n: int = 1) -> TestInstance:
    service = TestingService(type="github", url=f"https://api.github.com/{n}")
    wf = Workflow(name=f"wf{n}")
    version = WorkflowVersion(workflow=wf, version="1.0")
    suite = TestSuite(workflow_version=version, name="suite")
    instance = TestInstance(suite=suite, resource="ci.yml", testing_service=service)
    session.add_all([service, wf, version, suite, instance])
    session.flush()
    return instance


def _client(session, name="c") -> OAuth2Client:
    c = OAuth2Client(client_id=f"id-{name}", client_secret_hash=token_hash(name), client_name=name)
    session.add(c)
    session.flush()
    return c


def test_builds_are_unique_per_instance_and_build_id(session):
    inst = _instance(session)
    session.add(Build(instance=inst, build_id="42", status="passed"))
    session.flush()
    session.add(Build(instance=inst, build_id="42", status="failed"))
    with pytest.raises(IntegrityError):
        session.flush()


def test_same_build_id_on_two_instances_is_fine(session):
    a, b = _instance(session, 1), _instance(session, 2)
    session.add_all(
        [
            Build(instance=a, build_id="7", status="passed"),
            Build(instance=b, build_id="7", status="failed"),
        ]
    )
    session.flush()
    assert _count(session, Build) == 2


def test_build_ids_are_generated_and_completed(session):
    inst = _instance(session)
    builds = [
        Build(instance=inst, build_id=str(i), status=s)
        for i, s in enumerate(["passed", "running", "error"])
    ]
    session.add_all(builds)
    session.flush()
    assert len({b.id for b in builds}) == 3
    assert [b.completed for b in builds] == [True, False, True]


def test_utc_datetimes_round_trip_aware(session):
    inst = _instance(session)
    started = datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    # An aware non-UTC value is stored as the same instant.
    finished = datetime(2024, 3, 1, 14, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    session.add(
        Build(
            instance=inst, build_id="1", status="passed", started_at=started, finished_at=finished
        )
    )
    session.commit()
    session.expire_all()
    build = session.query(Build).one()
    assert build.started_at == started
    assert build.started_at.tzinfo is not None
    assert build.started_at.utcoffset() == timedelta(0)
    assert build.finished_at == datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert build.finished_at.utcoffset() == timedelta(0)


def test_naive_datetimes_are_refused(session):
    inst = _instance(session)
    session.add(
        Build(instance=inst, build_id="1", status="passed", started_at=datetime(2024, 3, 1, 12, 0))
    )
    with pytest.raises(StatementError, match="naive datetime"):
        session.flush()


def test_deleting_a_workflow_cascades(session):
    inst = _instance(session)
    session.add_all([Build(instance=inst, build_id=str(i), status="passed") for i in range(3)])
    other = _instance(session, 2)
    session.add(Build(instance=other, build_id="x", status="failed"))
    session.commit()
    wf = session.get(Workflow, inst.suite.workflow_version.workflow_id)
    session.delete(wf)
    session.commit()
    assert _count(session, Workflow) == 1
    assert _count(session, WorkflowVersion) == 1
    assert _count(session, TestSuite) == 1
    assert _count(session, TestInstance) == 1
    assert [b.build_id for b in session.query(Build)] == ["x"]
    # The CI service is shared, not owned: it stays.
    assert _count(session, TestingService) == 2


def test_deleting_a_workflow_with_sql_cascades(session):
    """The database itself cascades (not only the ORM)."""
    from sqlalchemy import delete

    inst = _instance(session)
    session.add(Build(instance=inst, build_id="1", status="passed"))
    session.commit()
    session.execute(delete(Workflow))
    session.commit()
    for model in (WorkflowVersion, TestSuite, TestInstance, Build):
        assert _count(session, model) == 0, model


def test_testing_service_in_use_cannot_be_deleted(session):
    from sqlalchemy import delete

    _instance(session)
    session.commit()
    # pg8000 reports a foreign-key violation as ProgrammingError: match the message.
    with pytest.raises(DBAPIError, match=r"(?i)foreign key"):
        session.execute(delete(TestingService))


def test_registry_and_its_oauth_client(session):
    client = _client(session, "wfh")
    reg = Registry(
        name="WorkflowHub",
        client_name="wfh",
        uri="https://wfh.example",
        server_client_id="app",
        oauth_client=client,
    )
    session.add(reg)
    session.commit()
    session.expire_all()
    reg = session.query(Registry).one()
    assert reg.oauth_client.client_id == "id-wfh"
    assert reg.type == "seek"
    assert reg.server_secret_key == f"registries/{reg.uuid}/client_secret"
    assert reg.service_token_key == f"registries/{reg.uuid}/service_token"
    assert reg.oauth_client.secret_key == "oauth2/clients/id-wfh/client_secret"


def test_two_registries_cannot_share_a_client(session):
    client = _client(session, "shared")
    session.add(
        Registry(
            name="A", client_name="a", uri="https://a", server_client_id="x", oauth_client=client
        )
    )
    session.flush()
    session.add(
        Registry(
            name="B", client_name="b", uri="https://b", server_client_id="y", oauth_client=client
        )
    )
    with pytest.raises(IntegrityError):
        session.flush()


def test_a_registry_s_client_cannot_be_deleted_first(session):
    from sqlalchemy import delete

    client = _client(session, "wfh")
    session.add(
        Registry(
            name="R", client_name="r", uri="https://r", server_client_id="x", oauth_client=client
        )
    )
    session.commit()
    with pytest.raises(DBAPIError, match=r"(?i)foreign key"):
        session.execute(delete(OAuth2Client))


def test_deleting_a_client_deletes_its_tokens(session):
    from sqlalchemy import delete

    client = _client(session, "c")
    now = utcnow()
    session.add(
        OAuth2Token(
            client_id=client.client_id,
            access_token_hash=token_hash("t"),
            issued_at=now,
            expires_at=now + timedelta(hours=1),
        )
    )
    session.commit()
    session.execute(delete(OAuth2Client))
    session.commit()
    assert _count(session, OAuth2Token) == 0


def test_defaults_uuid_and_timestamps(session):
    before = utcnow()
    wf = Workflow()
    session.add(wf)
    session.flush()
    assert uuid.UUID(wf.uuid).version == 4
    assert wf.public is False
    assert before <= wf.created <= utcnow()
    assert wf.created.tzinfo is not None
    assert wf.modified is not None
    other = Workflow()
    session.add(other)
    session.flush()
    assert other.uuid != wf.uuid


def test_modified_changes_on_update(session):
    user = User(username="m")
    session.add(user)
    session.commit()
    created, modified = user.created, user.modified
    user.email = "m@example.org"
    session.commit()
    session.refresh(user)
    assert user.created == created
    assert user.modified > modified


def test_user_defaults(session):
    user = User(username="d")
    session.add(user)
    session.flush()
    assert user.email_verified is False
    assert user.notifications_enabled is True
    assert user.password_hash is None
    assert repr(user) == f"<User {user.id} 'd'>"


def test_usernames_are_unique(session):
    session.add(User(username="same"))
    session.flush()
    session.add(User(username="same"))
    with pytest.raises(IntegrityError):
        session.flush()


def test_workflow_versions_unique_per_workflow(session):
    wf = Workflow()
    session.add_all(
        [WorkflowVersion(workflow=wf, version="1"), WorkflowVersion(workflow=wf, version="1")]
    )
    with pytest.raises(IntegrityError):
        session.flush()


def test_json_columns_round_trip(session):
    inst = _instance(session)
    inst.parameters = {"branch": "main", "nested": {"n": [1, 2]}}
    session.commit()
    session.expire_all()
    assert session.get(TestInstance, inst.id).parameters == {
        "branch": "main",
        "nested": {"n": [1, 2]},
    }


def test_token_and_key_scopes_parse(session):
    client = _client(session)
    now = utcnow()
    token = OAuth2Token(
        client_id=client.client_id,
        access_token_hash=token_hash("x"),
        scope="workflow.read  registry.info",
        issued_at=now,
        expires_at=now,
    )
    session.add(token)
    session.flush()
    assert token.scopes == frozenset({"workflow.read", "registry.info"})
    assert token.token_type == "Bearer"
    assert token.revoked is False
