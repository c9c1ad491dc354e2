"""Backup and restore of a whole service: database, crate store and the stage's secrets,
in one tar archive (mode 0600).

Members of the archive:

* ``manifest.json``: format, stage, schema revision, dialect and, for every table, its row
  count and an order-independent checksum (restore checks the restored database against
  them);
* ``database.pgdump`` (``pg_dump -Fc`` of ``DATABASE_URL``; PostgreSQL 15 client tools)
  or ``database.sqlite3`` (an online copy of the embedded database);
* ``crates/<key>``: every stored crate (S3 bucket or the local crates folder);
* ``secrets.json``: the parameter store's keys of the stage, so a restored service still
  knows its registries' and clients' secrets, or ``secrets.json.enc`` (Fernet, key derived
  from a passphrase with scrypt) when a passphrase is given.

It runs where ``pg_dump``/``pg_restore`` are (an ops host or a laptop), not in the Lambda.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMAT = "lifemonitor-backup/1"
PG_DUMP_MEMBER = "database.pgdump"
SQLITE_MEMBER = "database.sqlite3"
SECRETS_MEMBER = "secrets.json"
SECRETS_ENC_MEMBER = "secrets.json.enc"
CRATES_PREFIX = "crates/"
# The target's own database URL is never overwritten by the backed-up one: a restore into
# another database must keep pointing at that database.
NOT_RESTORED_SECRETS = frozenset({"database/url"})
_CRATE_KEY = re.compile(r"^workflows/[A-Za-z0-9_.\-]+/[A-Za-z0-9_.\-]+\.zip$")
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}


class BackupError(RuntimeError):
    """The backup or restore could not be done; the message says why."""


# --- fingerprints --------------------------------------------------------------------------


def table_fingerprints(engine) -> dict[str, dict[str, Any]]:
    """Every table's row count and a checksum of its rows that does not depend on their
    order (the sum of each row's SHA-256 modulo 2**256), identical on both sides of a
    dump and restore on the same kind of database."""
    with engine.connect() as conn:
        return connection_fingerprints(conn)


def connection_fingerprints(conn) -> dict[str, dict[str, Any]]:
    """`table_fingerprints` read through one connection (and so one snapshot, inside a
    REPEATABLE READ transaction)."""
    from sqlalchemy import MetaData, Table, inspect, select

    out: dict[str, dict[str, Any]] = {}
    for name in sorted(inspect(conn).get_table_names()):
        table = Table(name, MetaData(), autoload_with=conn)
        total, rows = 0, 0
        for row in conn.execute(select(table)):
            line = json.dumps(list(row), sort_keys=True, default=repr).encode()
            total = (total + int.from_bytes(hashlib.sha256(line).digest(), "big")) % 2**256
            rows += 1
        out[name] = {"rows": rows, "sha256": f"{total:064x}"}
    return out


# --- database ------------------------------------------------------------------------------


def _engine_url(url: str):
    from sqlalchemy.engine import make_url

    return make_url(url)


def _pg_connection(url: str) -> tuple[list[str], dict[str, str]]:
    """libpq arguments and environment for a URL; the password goes in PGPASSWORD, never
    on a command line (`ps` shows those)."""
    u = _engine_url(url)
    if not u.database:
        raise BackupError("DATABASE_URL names no database")
    args = ["-h", u.host or "localhost", "-p", str(u.port or 5432), "-d", u.database]
    if u.username:
        args += ["-U", u.username]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if u.password:
        env["PGPASSWORD"] = u.password
    sslmode = u.query.get("sslmode")
    if isinstance(sslmode, str):
        env["PGSSLMODE"] = sslmode
    return args, env


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(
            f"{name} not found: install the PostgreSQL client tools (Debian: postgresql-client)"
        )
    return path


def _run(cmd: list[str], env: dict[str, str], what: str) -> str:
    # The commands are pg_dump/pg_restore found on PATH, with arguments built here.
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
        raise BackupError(f"{what} failed: {' '.join(lines[:3])[:500] or result.returncode}")
    return result.stdout


def _dump_postgres(url: str, dest: Path, engine) -> tuple[str, dict[str, dict[str, Any]]]:
    """pg_dump and the fingerprints of the very same snapshot: this connection exports its
    REPEATABLE READ snapshot and pg_dump reads through it (`--snapshot`), so writes of a
    live service between the two cannot make the restore check fail."""
    from sqlalchemy import text

    args, env = _pg_connection(url)
    pg_dump = _tool("pg_dump")
    version = _run([pg_dump, "--version"], env, "pg_dump --version").strip()
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            cmd = [pg_dump, "--format=custom", "--no-owner", "--no-privileges"]
            _run([*cmd, f"--snapshot={snapshot}", "-f", str(dest), *args], env, "pg_dump")
            fingerprints = connection_fingerprints(conn)
    return version, fingerprints


def _restore_postgres(url: str, src: Path, clean: bool) -> None:
    args, env = _pg_connection(url)
    cmd = [_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error"]
    cmd += ["--single-transaction"]
    if clean:
        cmd += ["--clean", "--if-exists"]
    _run([*cmd, *args, str(src)], env, "pg_restore")


def _sqlite_path(url: str) -> Path:
    db = _engine_url(url).database
    if not db or db == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up or restored")
    return Path(db)


def _copy_sqlite(src: Path, dest: Path) -> None:
    """An online, consistent copy (SQLite's backup API), safe while the service runs."""
    import sqlite3

    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    target = sqlite3.connect(dest)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def _sqlite_fingerprints(path: Path) -> dict[str, dict[str, Any]]:
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{path}")
    try:
        return table_fingerprints(engine)
    finally:
        engine.dispose()


def _user_tables(engine) -> list[str]:
    from sqlalchemy import inspect

    with engine.connect() as conn:
        return sorted(inspect(conn).get_table_names())


# --- secrets -------------------------------------------------------------------------------


def _fernet(passphrase: str, salt: bytes, n: int, r: int, p: int):
    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    kdf = Scrypt(salt=salt, length=32, n=n, r=r, p=p)
    return Fernet(base64.urlsafe_b64encode(kdf.derive(passphrase.encode())))


# --- crates --------------------------------------------------------------------------------


def _iter_crates(settings) -> Iterator[tuple[str, int, Any]]:
    """(key, size, binary file object) of every stored crate of the current store."""
    if settings.crate_bucket:
        from chalicelib.storage import _s3

        s3 = _s3()
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=settings.crate_bucket)
        for page in pages:
            for item in page.get("Contents", []):
                body = s3.get_object(Bucket=settings.crate_bucket, Key=item["Key"])["Body"]
                yield item["Key"], item["Size"], body
        return
    root = settings.crates_dir
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            with path.open("rb") as fh:
                yield path.relative_to(root).as_posix(), path.stat().st_size, fh


def _put_crate(settings, key: str, data: bytes) -> None:
    if settings.crate_bucket:
        from chalicelib.storage import _s3

        _s3().put_object(
            Bucket=settings.crate_bucket, Key=key, Body=data, ContentType="application/zip"
        )
        return
    path = settings.crates_dir / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _relocate_crates(settings) -> int:
    """Point every stored crate location at the current store (the bucket, or the folder,
    may differ from the backed-up service's); returns the rows changed."""
    from sqlalchemy import select

    from chalicelib.db import session_scope
    from chalicelib.models import WorkflowVersion

    changed = 0
    with session_scope() as s:
        rows = s.execute(
            select(WorkflowVersion).where(WorkflowVersion.crate_location.is_not(None))
        ).scalars()
        for version in rows:
            loc = version.crate_location
            key = loc[5:].partition("/")[2] if loc.startswith("s3://") else loc[5:]
            bucket = settings.crate_bucket
            new = f"s3://{bucket}/{key}" if bucket else f"file:{key}"
            if new != loc:
                version.crate_location = new
                changed += 1
    return changed


# --- archive helpers -----------------------------------------------------------------------


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))


def default_filename(stage: str) -> str:
    return f"lifemonitor-{stage}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.tar"


# --- backup --------------------------------------------------------------------------------


def create_backup(
    path: Path, *, passphrase: str | None = None, crates: bool = True, overwrite: bool = False
) -> dict[str, Any]:
    """Write the archive at `path` (mode 0600, written then renamed); returns the manifest."""
    from chalicelib import migrate
    from chalicelib.config import get_settings
    from chalicelib.db import database_url, get_engine
    from chalicelib.secrets import get_secrets

    settings = get_settings()
    path = Path(path)
    if path.exists() and not overwrite:
        raise BackupError(f"{path} exists; choose another name")
    url = database_url()
    engine = get_engine()
    dialect = engine.dialect.name
    if dialect not in ("postgresql", "sqlite"):
        raise BackupError(f"cannot back up a {dialect} database")
    revision = migrate.current()
    if revision is None:
        raise BackupError("the database has no schema (run `db upgrade` first)")

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".backup-", suffix=".tar")
    os.fchmod(fd, 0o600)  # secrets inside: owner-only from the first byte
    tmp = Path(tmp_name)
    try:
        with tempfile.TemporaryDirectory() as work:
            # Fingerprints of exactly what was dumped: restore compares the restored
            # tables with them.
            if dialect == "postgresql":
                dump = Path(work) / PG_DUMP_MEMBER
                tool, fingerprints = _dump_postgres(url, dump, engine)
            else:
                dump = Path(work) / SQLITE_MEMBER
                _copy_sqlite(_sqlite_path(url), dump)
                tool = "sqlite3 backup API"
                fingerprints = _sqlite_fingerprints(dump)

            secrets = get_secrets(settings).all()
            manifest: dict[str, Any] = {
                "format": FORMAT,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "stage": settings.stage,
                "secrets_prefix": settings.ssm_prefix,
                "secrets_backend": settings.secrets_backend,
                "dialect": dialect,
                "revision": revision,
                "dump_tool": tool,
                "tables": fingerprints,
                "secrets": {"count": len(secrets), "encrypted": passphrase is not None},
                "crates": {"count": 0, "bytes": 0},
            }
            secrets_blob = json.dumps(secrets, indent=2, sort_keys=True).encode()
            if passphrase is not None:
                if not passphrase:
                    raise BackupError("the passphrase is empty")
                salt = os.urandom(16)
                manifest["secrets"]["kdf"] = {
                    "name": "scrypt",
                    "salt": base64.b64encode(salt).decode(),
                    **_SCRYPT,
                }
                secrets_blob = _fernet(passphrase, salt, **_SCRYPT).encrypt(secrets_blob)

            with os.fdopen(fd, "wb") as fh, tarfile.open(fileobj=fh, mode="w") as tar:
                fd = -1
                tar.add(dump, arcname=dump.name)
                member = SECRETS_ENC_MEMBER if passphrase is not None else SECRETS_MEMBER
                _add_bytes(tar, member, secrets_blob)
                if crates:
                    for key, size, body in _iter_crates(settings):
                        info = tarfile.TarInfo(CRATES_PREFIX + key)
                        info.size, info.mode, info.mtime = size, 0o600, int(time.time())
                        tar.addfile(info, body)
                        manifest["crates"]["count"] += 1
                        manifest["crates"]["bytes"] += size
                # Last, so it can count what went in; restore reads it first anyway.
                _add_bytes(tar, "manifest.json", json.dumps(manifest, indent=2).encode())
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    return manifest


# --- restore -------------------------------------------------------------------------------


def read_manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    try:
        member = tar.extractfile("manifest.json")
    except KeyError:
        raise BackupError("not a LifeMonitor backup: no manifest.json") from None
    manifest = json.loads(member.read())
    if manifest.get("format") != FORMAT:
        raise BackupError(f"unsupported backup format {manifest.get('format')!r}")
    return manifest


def restore_backup(
    path: Path,
    *,
    passphrase: str | None = None,
    clean: bool = False,
    crates: bool = True,
    secrets: bool = True,
) -> dict[str, Any]:
    """Restore the archive into the current DATABASE_URL, crate store and parameter store;
    checks every table's row count and checksum against the manifest."""
    from chalicelib import migrate
    from chalicelib.config import get_settings
    from chalicelib.db import database_url, dispose_engines, get_engine
    from chalicelib.secrets import get_secrets

    settings = get_settings()
    path = Path(path)
    if not path.is_file():
        raise BackupError(f"{path}: no such file")
    try:
        tar = tarfile.open(path, mode="r:*")  # noqa: SIM115 - closed by the `with` below
    except tarfile.TarError as exc:
        raise BackupError(f"{path}: not a tar archive ({exc})") from None
    with tar:
        manifest = read_manifest(tar)
        if not migrate.known_revision(manifest["revision"]):
            raise BackupError(
                f"the backup's schema revision {manifest['revision']} is unknown to this "
                "version of LifeMonitor: restore it with the version that made it, or newer"
            )
        secret_values = _read_secrets(tar, manifest, passphrase) if secrets else {}
        # Every check on the archive before anything is changed.
        crate_members = []
        for member in tar.getmembers():
            if not member.name.startswith(CRATES_PREFIX) or not member.isfile():
                continue
            key = member.name[len(CRATES_PREFIX) :]
            if not _CRATE_KEY.match(key) or ".." in key.split("/"):
                raise BackupError(f"unsafe crate name in the archive: {member.name!r}")
            crate_members.append((key, member))

        url = database_url()
        engine = get_engine()
        dialect = engine.dialect.name
        if dialect != manifest["dialect"]:
            raise BackupError(
                f"the backup holds a {manifest['dialect']} database; DATABASE_URL is {dialect}"
            )
        existing = _user_tables(engine)
        if existing and not clean:
            raise BackupError(
                f"the target database is not empty ({len(existing)} tables); restore into "
                "an empty database or pass --clean to replace its contents"
            )
        with tempfile.TemporaryDirectory() as work:
            if dialect == "postgresql":
                dump = _extract(tar, PG_DUMP_MEMBER, Path(work))
                dispose_engines()
                _restore_postgres(url, dump, clean)
            else:
                dump = _extract(tar, SQLITE_MEMBER, Path(work))
                dispose_engines()
                target = _sqlite_path(url)
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_sqlite(dump, target)
        dispose_engines()

        restored = table_fingerprints(get_engine())
        expected = manifest["tables"]
        bad = sorted(
            name for name in expected if restored.get(name) != expected[name]
        )  # extra tables (left by --clean from a newer schema) are not the backup's
        if bad:
            raise BackupError(f"restored tables differ from the backup: {', '.join(bad)}")

        crate_count = 0
        if crates:
            for key, member in crate_members:
                _put_crate(settings, key, tar.extractfile(member).read())
                crate_count += 1
        relocated = _relocate_crates(settings)

        store = get_secrets(settings)
        written = 0
        for key, value in sorted(secret_values.items()):
            if key in NOT_RESTORED_SECRETS:
                continue
            store.put(key, value)
            written += 1
    head = migrate.head()
    return {
        "file": str(path),
        "created_at": manifest["created_at"],
        "revision": manifest["revision"],
        "head": head,
        "needs_upgrade": manifest["revision"] != head,
        "tables": len(expected),
        "rows": sum(t["rows"] for t in expected.values()),
        "crates": crate_count,
        "crate_locations_updated": relocated,
        "secrets": written,
    }


def _extract(tar: tarfile.TarFile, name: str, dest: Path) -> Path:
    try:
        src = tar.extractfile(name)
    except KeyError:
        raise BackupError(f"the archive lacks {name}") from None
    out = dest / name
    with out.open("wb") as fh:
        shutil.copyfileobj(src, fh)
    return out


def _read_secrets(
    tar: tarfile.TarFile, manifest: dict[str, Any], passphrase: str | None
) -> dict[str, str]:
    info = manifest["secrets"]
    if info.get("encrypted"):
        if passphrase is None:
            raise BackupError("the secrets are encrypted: give the passphrase (--passphrase-stdin)")
        from cryptography.fernet import InvalidToken

        kdf = info["kdf"]
        blob = tar.extractfile(SECRETS_ENC_MEMBER).read()
        try:
            salt = base64.b64decode(kdf["salt"])
            fernet = _fernet(passphrase, salt, int(kdf["n"]), int(kdf["r"]), int(kdf["p"]))
            data = fernet.decrypt(blob)
        except InvalidToken:
            raise BackupError("wrong passphrase for the backup's secrets") from None
    else:
        data = tar.extractfile(SECRETS_MEMBER).read()
    values = json.loads(data)
    if not isinstance(values, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in values.items()
    ):
        raise BackupError("the backup's secrets are malformed")
    return values
