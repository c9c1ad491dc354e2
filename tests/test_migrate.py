"""Alembic migrations on fresh databases: PostgreSQL (the production engine) and SQLite."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pytest
import sqlalchemy as sa

from chalicelib import migrate
from chalicelib.db import dispose_engines, get_engine
from chalicelib.migrate import MigrationError
from chalicelib.models import Base, utcnow
from tests.conftest import postgres_server, worker_id
from tests.support.migrations import newest_migration

APP_TABLES = {t.name for t in Base.metadata.sorted_tables}
CONFTEST = Path(__file__).resolve().parent / "conftest.py"


def _session_server(config):
    """The PostgreSQL server conftest found for this session. pytest loads conftest.py as
    its own module, so `tests.conftest` is a second copy that would search (and possibly
    start a throwaway cluster) again: ask the loaded one first."""
    for plugin in config.pluginmanager.get_plugins():
        path = getattr(plugin, "__file__", None)
        if path and Path(path).resolve() == CONFTEST and hasattr(plugin, "postgres_server"):
            return plugin.postgres_server()
    return postgres_server()


@pytest.fixture(scope="module")
def pg_url(request):
    """One scratch PostgreSQL database for this module, dropped at its end (DROP DATABASE
    forces a checkpoint: once is enough)."""
    server = _session_server(request.config)
    if server is None:
        pytest.skip("no PostgreSQL server available (see the report header)")
    name = f"lm_mig_{worker_id()}_{os.getpid()}".lower().replace("-", "_")
    url = server.create_database(name)
    yield url
    dispose_engines()
    for attempt in (1, 2):
        try:
            server.drop_database(name)
            break
        except Exception as exc:  # a busy server can time out DROP DATABASE's checkpoint
            if attempt == 2:
                warnings.warn(f"could not drop scratch database {name}: {exc}", stacklevel=1)


@pytest.fixture(params=["postgresql", "sqlite"])
def fresh_db(request, monkeypatch, tmp_path):
    """DATABASE_URL pointing at an empty database of each kind."""
    dispose_engines()
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
        # Start from nothing, whatever an earlier test left: an empty public schema.
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")
        engine.dispose()
    else:
        url = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    yield url
    dispose_engines()


def _tables() -> set[str]:
    return set(sa.inspect(get_engine()).get_table_names())


def _diff() -> list:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with get_engine().connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, Base.metadata)


def test_upgrade_downgrade_cycle(fresh_db):
    assert migrate.current() is None
    assert migrate.describe_current() == "(empty database: no migration applied)"
    assert _tables() == set()

    head = migrate.head()
    assert migrate.upgrade("head") == head
    assert _tables() == APP_TABLES | {"alembic_version"}
    assert _diff() == []
    assert migrate.current() == head
    assert migrate.describe_current() == f"{head} (head)"
    assert migrate.upgrade("head") == head  # idempotent

    assert migrate.downgrade("base") is None
    assert _tables() - {"alembic_version"} == set()
    assert migrate.current() is None
    assert migrate.describe_current() == "(empty database: no migration applied)"

    assert migrate.upgrade() == head
    assert _diff() == []
    assert migrate.describe_current().endswith("(head)")


def test_migrated_schema_enforces_constraints(fresh_db):
    migrate.upgrade("head")
    now = utcnow()
    users = Base.metadata.tables["users"]
    row = {
        "username": "u",
        "email_verified": False,
        "notifications_enabled": True,
        "created": now,
        "modified": now,
    }
    with get_engine().begin() as conn:
        conn.execute(users.insert().values(**row))
    with pytest.raises(sa.exc.IntegrityError), get_engine().begin() as conn:
        conn.execute(users.insert().values(**row))
    # An unknown target is an error, and the database stays where it was.
    with pytest.raises(MigrationError):
        migrate.downgrade("nonexistent")
    assert migrate.current() == migrate.head()


def test_downgrade_without_revision_is_refused():
    with pytest.raises(MigrationError, match="needs a revision"):
        migrate.downgrade("")


def test_known_revision():
    head = migrate.head()
    for rev in ("head", "base", "-1", "+1", head):
        assert migrate.known_revision(rev), rev
    assert not migrate.known_revision("ffffdeadbeef")


def test_one_head():
    assert migrate.head() == newest_migration()[0]


def test_locate_scripts_default():
    from chalicelib.config import PROJECT_ROOT

    assert migrate.locate_scripts() == (PROJECT_ROOT / "migrations").resolve()


def test_locate_scripts_honours_env(monkeypatch, tmp_path):
    from chalicelib.config import PROJECT_ROOT

    copy = tmp_path / "vendored" / "migrations"
    shutil.copytree(PROJECT_ROOT / "migrations", copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("LM_MIGRATIONS_DIR", str(copy))
    assert migrate.locate_scripts() == copy.resolve()
    assert migrate.alembic_config().get_main_option("script_location") == str(copy.resolve())
    assert migrate.head() == newest_migration()[0]


def test_locate_scripts_env_without_scripts_falls_back(monkeypatch, tmp_path):
    from chalicelib.config import PROJECT_ROOT

    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("LM_MIGRATIONS_DIR", str(tmp_path / "empty"))
    assert migrate.locate_scripts() == (PROJECT_ROOT / "migrations").resolve()


def test_locate_scripts_raises_when_nothing_is_found(monkeypatch, tmp_path):
    import chalicelib.migrate as m

    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("LM_MIGRATIONS_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(m, "PROJECT_ROOT", tmp_path / "no-project")
    monkeypatch.setattr(m.sys, "path", [str(tmp_path / "nowhere")])
    with pytest.raises(MigrationError, match="migration scripts not found") as info:
        migrate.locate_scripts()
    assert str(tmp_path / "empty") in str(info.value)


def test_0003_services_by_type_and_url_and_back(fresh_db):
    """Upgrade keeps the services; two types at one URL may then coexist; downgrading
    folds them back into one service per URL, instances kept."""
    migrate.upgrade("0002")
    now = utcnow().isoformat(" ")  # text: sqlite3's datetime adapter is deprecated
    stamps = {"created": now, "modified": now}
    with get_engine().begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO testing_services (uuid, type, url, created, modified) "
                "VALUES ('s1', 'jenkins', 'https://ci.example', :created, :modified)"
            ),
            stamps,
        )
    migrate.upgrade("0003")
    with get_engine().begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO testing_services (uuid, type, url, created, modified) "
                "VALUES ('s2', 'github', 'https://ci.example', :created, :modified)"
            ),
            stamps,
        )
    with pytest.raises(sa.exc.IntegrityError), get_engine().begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO testing_services (uuid, type, url, created, modified) "
                "VALUES ('s3', 'github', 'https://ci.example', :created, :modified)"
            ),
            stamps,
        )
    migrate.downgrade("0002")
    with get_engine().connect() as conn:
        rows = conn.execute(sa.text("SELECT uuid, type FROM testing_services")).all()
    assert [tuple(r) for r in rows] == [("s1", "jenkins")]
    migrate.upgrade("head")
    assert _diff() == []


def test_0004_backfills_the_stored_statuses(fresh_db):
    """Rows written before the stored statuses get them on upgrade, by the same rule."""
    migrate.upgrade("0002")
    now = utcnow()
    stamps = {"created": now, "modified": now}
    old_schema = sa.MetaData()
    old_schema.reflect(get_engine())  # the tables as 0002 left them
    t = old_schema.tables
    with get_engine().begin() as conn:

        def add(table: str, **values) -> int:
            return conn.execute(t[table].insert().values(**values, **stamps)).inserted_primary_key[
                0
            ]

        service = add("testing_services", uuid="s", type="jenkins", url="https://ci.example")
        wf = add("workflows", uuid="w", name="w", public=True)
        old = add("workflow_versions", uuid="v1", workflow_id=wf, version="1", authors=[])
        new = add("workflow_versions", uuid="v2", workflow_id=wf, version="2", authors=[])
        suites = [
            add("test_suites", uuid=f"s{n}", workflow_version_id=v, name=f"s{n}")
            for n, v in enumerate((old, new, new))
        ]
        instances = [
            add(
                "test_instances",
                uuid=f"i{n}",
                suite_id=suites[n],
                resource=f"job/{n}",
                name=f"i{n}",
                managed=False,
                testing_service_id=service,
                parameters={},
                consecutive_errors=0,
            )
            for n in (0, 1)
        ]
        passed = add("builds", instance_id=instances[0], build_id="1", status="passed", links={})
        failed = add("builds", instance_id=instances[1], build_id="2", status="failed", links={})
        for instance, build in zip(instances, (passed, failed), strict=True):
            conn.execute(
                t["test_instances"]
                .update()
                .where(t["test_instances"].c.id == instance)
                .values(latest_build_id=build, last_completed_build_id=build)
            )
    migrate.upgrade("head")
    with get_engine().connect() as conn:
        versions = dict(
            conn.execute(sa.text("SELECT version, status FROM workflow_versions")).all()
        )
        suite_rows = conn.execute(
            sa.text("SELECT name, status, status_reason FROM test_suites ORDER BY name")
        ).all()
        workflow = conn.execute(sa.text("SELECT status FROM workflows")).scalar_one()
        build_of_v2 = conn.execute(
            sa.text("SELECT status_build_id FROM workflow_versions WHERE version = '2'")
        ).scalar_one()
    assert versions == {"1": "all_passing", "2": "all_failing"}
    assert [tuple(r[:2]) for r in suite_rows] == [
        ("s0", "all_passing"),
        ("s1", "all_failing"),
        ("s2", "not_available"),
    ]
    assert suite_rows[2][2] == "No test instances configured for suite s2"
    assert workflow == "all_failing"  # the latest version's (created last, highest id)
    assert build_of_v2 == failed


def test_0007_registration_jobs_up_and_down(fresh_db):
    """0007 adds the jobs table (JSON columns, unique job id) and nothing else; downgrading
    to 0006 removes it and leaves the rest as 0006 made it."""
    migrate.upgrade("0006")
    before = _tables()
    assert "registration_jobs" not in before
    migrate.upgrade("0007")
    assert _tables() == before | {"registration_jobs"}
    now = utcnow()
    jobs = Base.metadata.tables["registration_jobs"]
    row = {
        "uuid": "00000000-0000-4000-8000-000000000007",
        "status": "waiting",
        "principal": {"method": "api_key", "user_id": 1, "scopes": ["user.workflow.write"]},
        "route": "user",
        "params": {},
        "body": {"version": "1", "async": True},
        "created": now,
        "modified": now,
    }
    with get_engine().begin() as conn:
        conn.execute(jobs.insert().values(**row))
    with pytest.raises(sa.exc.IntegrityError), get_engine().begin() as conn:
        conn.execute(jobs.insert().values(**row))  # one row per job id
    with get_engine().connect() as conn:
        stored = conn.execute(sa.select(jobs.c.principal, jobs.c.body)).one()
    assert stored.principal["scopes"] == ["user.workflow.write"]
    assert stored.body == {"version": "1", "async": True}
    migrate.downgrade("0006")
    assert _tables() == before
    assert migrate.current() == "0006"
    migrate.upgrade("head")
    assert _diff() == []
