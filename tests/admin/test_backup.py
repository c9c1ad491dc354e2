"""`backup` / `restore`: a populated service is backed up, restored into an empty database,
crate store and parameter store, and answers the credentials issued before the backup."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

from chalicelib.admin import run
from tests.conftest import postgres_server, worker_id
from tests.support import api_data
from tests.support.api_data import b64, crate

JENKINS = ("jenkins", "https://ci.example", "job/sort/")


TABLE_MD5 = (
    "SELECT count(*), md5(coalesce(string_agg(md5(t::text), ',' ORDER BY md5(t::text)), ''))"
    " FROM {table} t"
)


def pg_fingerprints(url: str) -> dict[str, tuple[int, str]]:
    """Row count and an md5 of the sorted rows of every table, computed by PostgreSQL
    itself (independent of the module under test)."""
    from sqlalchemy import create_engine, text

    from chalicelib.db import normalize_url

    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            names = conn.execute(
                text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
                )
            ).scalars()
            out = {}
            for name in sorted(names):
                # Table names come from the catalogue, not from input.
                sql = TABLE_MD5.format(table=conn.dialect.identifier_preparer.quote(name))
                count, digest = conn.execute(text(sql)).one()
                out[name] = (count, digest)
            return out
    finally:
        engine.dispose()


def populate(client) -> dict:
    """A user with an API key, a registry with a token, a submitted workflow with a stored
    crate and builds, and CI secrets in the parameter store."""
    from chalicelib.secrets import get_secrets

    alice = api_data.make_user("alice")
    hub = api_data.make_registry(client, "WorkflowHub", "wfh-app")
    zipped = crate(instances=[JENKINS])
    r = api_data.submit(client, alice, {"rocrate": b64(zipped), "version": "1", "public": True})
    assert r.status_code == 201, r.body
    wf = r.json_body["uuid"]
    (instance,) = api_data.instance_uuids(wf)
    api_data.store_builds(instance, [api_data.build("7", "passed"), api_data.build("8", "failed")])
    get_secrets().put("ci/jenkins/ci.example/token", "jenkins-token")
    return {"alice": alice, "hub": hub, "wf": wf, "crate": zipped}


def admin(*args: str, stdin: str | None = None) -> dict:
    result = run([*args, "--json"], stdin=stdin)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def check_service(client, world: dict) -> None:
    """The API answers the key and token issued before the backup, serves the crate, and
    the parameter store holds the registry's and our client's secrets again."""
    from chalicelib.secrets import get_secrets

    alice, hub = world["alice"], world["hub"]
    r = client.http.get("/users/current", headers=alice.headers)
    assert r.status_code == 200, r.body
    assert r.json_body["username"] == "alice"
    r = client.http.get("/registries/current", headers=hub.headers)
    assert r.status_code == 200, r.body
    assert r.json_body["uuid"] == hub.registry_uuid
    headers = {**alice.headers, "Accept": "application/zip"}
    r = client.http.get(f"/workflows/{world['wf']}/rocrate/1/download", headers=headers)
    assert r.status_code == 200, r.body
    assert r.body == world["crate"]
    # Our OAuth client's secret (hashed in the database) is printed from the parameter store.
    shown = admin("registry", "show", "WorkflowHub")
    assert shown["client_secret"] == hub.client_secret
    store = get_secrets()
    assert store.get(f"registries/{hub.registry_uuid}/client_secret") == "wfh-app-secret"
    assert store.get("ci/jenkins/ci.example/token") == "jenkins-token"
    # A new token can still be had with the client's credentials.
    api_data.bearer_token(client, hub.client_id, hub.client_secret, "registry.info")


@pytest.fixture
def target_db():
    server = postgres_server()
    if server is None:
        pytest.skip("no PostgreSQL server: the round trip needs a second database")
    name = f"lm_restore_{worker_id()}_{os.getpid()}"
    url = server.create_database(name)
    yield url
    from chalicelib.db import dispose_engines

    dispose_engines()
    server.drop_database(name)


def test_round_trip_on_postgres(client, db, tmp_path, monkeypatch, target_db):
    from chalicelib import secrets
    from chalicelib.db import get_engine

    if get_engine().dialect.name != "postgresql":
        pytest.skip("the session database is SQLite (no PostgreSQL server)")
    world = populate(client)
    before = pg_fingerprints(db)
    assert before["builds"][0] == 2 and before["api_keys"][0] == 1

    archive = tmp_path / "backup.tar"
    made = admin("backup", str(archive))
    assert made["dialect"] == "postgresql" and made["crates"] == 1
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"manifest.json", "database.pgdump", "secrets.json"} <= names
    assert any(n.startswith("crates/workflows/") for n in names)

    with monkeypatch.context() as mp:  # an empty database, data dir and parameter store
        mp.setenv("DATABASE_URL", target_db)
        mp.setenv("LM_DATA_DIR", str(tmp_path / "restored"))
        secrets.reset()
        restored = admin("restore", str(archive))
        assert restored["crates"] == 1 and restored["needs_upgrade"] is False
        assert pg_fingerprints(target_db) == before  # every table: rows and checksum
        check_service(client, world)
        # Restoring twice without --clean is refused and changes nothing.
        again = run(["restore", str(archive)])
        assert again.exit_code == 1
        assert "not empty" in again.stderr and "--clean" in again.stderr
        assert len(again.stderr.strip().splitlines()) == 1
        # --clean replaces the contents (a row added since is gone).
        api_data.make_user("bob")
        admin("restore", str(archive), "--clean")
        assert pg_fingerprints(target_db) == before
    secrets.reset()


def test_encrypted_secrets_need_the_passphrase(client, db, tmp_path, monkeypatch):
    from chalicelib import secrets

    world = populate(client)
    archive = tmp_path / "enc.tar"
    made = admin("backup", str(archive), "--passphrase-stdin", stdin="s3cret phrase\n")
    assert made["secrets_encrypted"] is True
    with tarfile.open(archive) as tar:
        assert "secrets.json" not in tar.getnames()
        blob = tar.extractfile("secrets.json.enc").read()
    assert b"jenkins-token" not in blob and world["hub"].client_secret.encode() not in blob

    api_data.empty_tables()  # the same database, emptied: restore needs --clean anyway
    with monkeypatch.context() as mp:
        mp.setenv("LM_DATA_DIR", str(tmp_path / "restored"))
        secrets.reset()
        missing = run(["restore", str(archive), "--clean"])
        assert missing.exit_code == 1 and "passphrase" in missing.stderr
        wrong = run(["restore", str(archive), "--clean", "--passphrase-stdin"], stdin="nope")
        assert wrong.exit_code == 1 and "wrong passphrase" in wrong.stderr
        admin("restore", str(archive), "--clean", "--passphrase-stdin", stdin="s3cret phrase")
        check_service(client, world)
    secrets.reset()


def test_sqlite_round_trip(tmp_path, monkeypatch, chalice_app):
    """The embedded default: the database file is copied with SQLite's backup API."""
    from chalice.test import Client

    from chalicelib import migrate, secrets
    from chalicelib.db import dispose_engines
    from tests.conftest import ROOT

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'src' / 'lm.db'}")
    monkeypatch.setenv("LM_DATA_DIR", str(tmp_path / "src"))
    migrate.upgrade("head")
    try:
        with Client(chalice_app, stage_name="test", project_dir=str(ROOT)) as client:
            world = populate(client)
            archive = tmp_path / "sqlite.tar"
            made = admin("backup", str(archive))
            assert made["dialect"] == "sqlite"
            with tarfile.open(archive) as tar:
                assert "database.sqlite3" in tar.getnames()
            monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'dst' / 'lm.db'}")
            monkeypatch.setenv("LM_DATA_DIR", str(tmp_path / "dst"))
            secrets.reset()
            restored = admin("restore", str(archive))
            assert restored["rows"] == made["rows"]
            check_service(client, world)
    finally:
        dispose_engines()
        secrets.reset()


def test_backup_reports_a_missing_pg_dump_in_one_line(db, tmp_path, monkeypatch):
    from chalicelib.db import get_engine

    if get_engine().dialect.name != "postgresql":
        pytest.skip("pg_dump is only used for PostgreSQL")
    monkeypatch.setenv("PATH", str(tmp_path))  # no pg_dump on PATH
    result = run(["backup", str(tmp_path / "x.tar")])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: pg_dump not found")
    assert not any(p.name.endswith(".tar") for p in tmp_path.iterdir())


def test_restore_refuses_what_is_not_a_backup(db, tmp_path):
    bogus = tmp_path / "bogus.tar"
    with tarfile.open(bogus, "w") as tar:
        tar.add(Path(__file__), arcname="hello.py")
    result = run(["restore", str(bogus)])
    assert result.exit_code == 1 and "no manifest.json" in result.stderr
    text = tmp_path / "text.tar"
    text.write_text("hello")
    result = run(["restore", str(text)])
    assert result.exit_code == 1 and "not a tar archive" in result.stderr


def test_restore_rejects_a_crate_path_outside_the_store(client, db, tmp_path, monkeypatch):
    """Checked before anything is changed: the database keeps its rows."""
    populate(client)
    archive = tmp_path / "b.tar"
    admin("backup", str(archive), "--no-crates")
    evil = tmp_path / "evil.tar"
    with tarfile.open(archive) as src, tarfile.open(evil, "w") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member))
        info = tarfile.TarInfo("crates/workflows/../../../escape.zip")
        info.size = 2
        import io

        dst.addfile(info, io.BytesIO(b"PK"))
    api_data.make_user("bob")  # after the backup: a restore would remove it
    with monkeypatch.context() as mp:
        mp.setenv("LM_DATA_DIR", str(tmp_path / "restored"))
        result = run(["restore", str(evil), "--clean"])
    assert result.exit_code == 1 and "unsafe crate name" in result.stderr
    assert api_data.row_counts()["users"] == 2
    assert not (tmp_path / "escape.zip").exists()
    shutil.rmtree(tmp_path / "restored", ignore_errors=True)


def test_aws_stage_round_trip_with_ssm_and_s3(client, db, tmp_path, monkeypatch):
    """A deployed stage's stores (moto): parameters under /lifemonitor/<stage>/ and crates in
    the stage's bucket, restored into another stage's prefix and bucket; the crate locations
    follow the new bucket."""
    import boto3
    from moto import mock_aws

    from chalicelib import secrets, storage

    with mock_aws():
        s3 = boto3.client("s3")
        for bucket in ("lm-old-crates", "lm-new-crates"):
            s3.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
            )
        monkeypatch.setenv("LM_SECRETS_BACKEND", "ssm")
        monkeypatch.setenv("LM_CRATE_BUCKET", "lm-old-crates")
        storage.reset()
        secrets.reset()
        try:
            world = populate(client)
            old = boto3.client("ssm").get_parameters_by_path(
                Path="/lifemonitor/test", Recursive=True
            )
            assert len(old["Parameters"]) >= 3
            archive = tmp_path / "aws.tar"
            made = admin("backup", str(archive))
            assert made["crates"] == 1 and made["secrets"] == len(old["Parameters"])

            monkeypatch.setenv("LM_STAGE", "staging2")
            monkeypatch.setenv("LM_CRATE_BUCKET", "lm-new-crates")
            secrets.reset()
            restored = admin("restore", str(archive), "--clean")
            assert restored["crates"] == 1 and restored["crate_locations_updated"] == 1
            keys = s3.list_objects_v2(Bucket="lm-new-crates")["Contents"]
            assert len(keys) == 1 and keys[0]["Key"].startswith("workflows/")
            check_service(client, world)  # the crate is served from the new bucket
            names = {
                p["Name"]
                for p in boto3.client("ssm").get_parameters_by_path(
                    Path="/lifemonitor/staging2", Recursive=True
                )["Parameters"]
            }
            assert "/lifemonitor/staging2/ci/jenkins/ci.example/token" in names
        finally:
            storage.reset()
            secrets.reset()


def test_a_write_during_the_dump_does_not_spoil_the_backup(client, db, tmp_path, monkeypatch):
    """The fingerprints describe the dump's own snapshot: a row written while pg_dump runs
    is in neither, and the restore check passes."""
    from chalicelib.admin import backup
    from chalicelib.db import get_engine

    if get_engine().dialect.name != "postgresql":
        pytest.skip("pg_dump snapshots are PostgreSQL's")
    populate(client)
    real_run = backup._run

    def run_then_write(cmd, env, what):
        out = real_run(cmd, env, what)
        if what == "pg_dump":
            api_data.make_user("written-during-the-dump")  # committed by another connection
        return out

    monkeypatch.setattr(backup, "_run", run_then_write)
    manifest = backup.create_backup(tmp_path / "live.tar")
    assert manifest["tables"]["users"]["rows"] == 1  # alice only: the dump's snapshot
    assert api_data.row_counts()["users"] == 2
    monkeypatch.setattr(backup, "_run", real_run)
    api_data.empty_tables()
    with monkeypatch.context() as mp:
        mp.setenv("LM_DATA_DIR", str(tmp_path / "restored"))
        restored = admin("restore", str(tmp_path / "live.tar"), "--clean")
    assert restored["rows"] == sum(t["rows"] for t in manifest["tables"].values())
