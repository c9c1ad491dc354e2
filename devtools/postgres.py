"""Find a real PostgreSQL server for the tests and the benchmarks, with no dependencies
beyond pg8000, SQLAlchemy and the standard library.

``find_postgres()`` tries, in order:

1. ``TEST_DATABASE_URL`` (kind ``"env"``);
2. a local server on 127.0.0.1:5432 (port: ``TEST_POSTGRES_PORT``), database ``test``,
   trust auth (kind ``"local"``);
3. a throwaway cluster made with ``initdb``/``pg_ctl`` in a temp dir, on a free port, as
   the ``postgres`` OS user when run as root (kind ``"throwaway"``), stopped and deleted
   at exit.

``TEST_POSTGRES`` can force a single step (``env``, ``local``, ``throwaway``) or ask for
SQLite (``sqlite``; also ``off``/``none``). A missing server raises `PostgresUnavailable`,
whose message is one line that says what was tried and why each step failed, in CI
(``CI=true``) and whenever ``TEST_POSTGRES`` names a kind. Only outside CI with no choice
made does ``find_postgres()`` return None when nothing works (the project's rule: a laptop
without PostgreSQL still runs the suite on SQLite, and the report header says why).
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pg8000.native
import sqlalchemy
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

__all__ = [
    "PostgresServer",
    "PostgresUnavailable",
    "describe",
    "find_pg_bin",
    "find_postgres",
    "last_attempts",
    "local_port",
    "normalize_url",
    "start_throwaway",
    "wanted",
]

KINDS = ("env", "local", "throwaway")
LOCAL_HOST = "127.0.0.1"
LOCAL_PORT = 5432
LOCAL_DATABASE = "test"
SQLITE_CHOICES = ("sqlite", "off", "none")
PROBE_TIMEOUT = 2.0  # seconds; a dead/firewalled port must not stall the suite

# Trust auth is fine for a private cluster on 127.0.0.1; --no-sync skips fsyncs.
_INITDB_ARGS = ("-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
_DB_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_DRIVER_SCHEMES = ("postgresql+pg8000", "postgresql", "postgres")
# Databases that tests must never drop, whatever they ask for.
_PROTECTED_DBS = frozenset({"postgres", "template0", "template1"})

#: Why each step of the last ``find_postgres()`` call was skipped or failed.
last_attempts: list[str] = []


class PostgresUnavailable(RuntimeError):
    """PostgreSQL was wanted and none could be had; the message is one line."""


def normalize_url(url: str) -> str:
    """Rewrite a ``postgres://``/``postgresql://``/``postgresql+pg8000://`` URL
    to the pg8000 SQLAlchemy form; anything else is a configuration error."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep or scheme.lower() not in _DRIVER_SCHEMES:
        raise ValueError(
            f"unsupported database URL scheme {scheme!r}: expected one of "
            + ", ".join(f"{s}://" for s in _DRIVER_SCHEMES)
        )
    return f"postgresql+pg8000://{rest}"


def _check_name(name: str) -> None:
    # Names are interpolated into DDL (identifiers can't be bound parameters).
    if not _DB_NAME_RE.match(name):
        raise ValueError(f"invalid database name {name!r}")


def _safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


class PostgresServer:
    """A reachable PostgreSQL server on which tests may create databases."""

    def __init__(
        self,
        kind: str,
        admin_url: str,
        *,
        base_dir: str | None = None,
        pg_ctl: str | None = None,
        run_as: list[str] | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        self.kind = kind
        self.admin_url = admin_url
        # Throwaway-only bookkeeping.
        self.base_dir = base_dir
        self.data_dir = os.path.join(base_dir, "data") if base_dir else None
        self._pg_ctl = pg_ctl
        self._run_as = run_as or []
        self._stopped = False
        self._version: str | None = None

    def __repr__(self) -> str:
        return f"PostgresServer(kind={self.kind!r}, admin_url={_safe_url(self.admin_url)!r})"

    # -- connection helpers -------------------------------------------------
    def _admin_engine(self) -> sqlalchemy.Engine:
        # AUTOCOMMIT: CREATE/DROP DATABASE cannot run inside a transaction.
        # NullPool: no idle admin connection lingers to block DROP DATABASE.
        return sqlalchemy.create_engine(
            self.admin_url,
            isolation_level="AUTOCOMMIT",
            poolclass=NullPool,
            connect_args={"timeout": 10},
        )

    @property
    def host(self) -> str | None:
        return make_url(self.admin_url).host

    @property
    def port(self) -> int:
        return make_url(self.admin_url).port or LOCAL_PORT

    def url_for(self, name: str) -> str:
        """SQLAlchemy URL (pg8000 driver) of database ``name`` on this server."""
        _check_name(name)
        url = make_url(self.admin_url).set(database=name)
        return url.render_as_string(hide_password=False)

    @property
    def version(self) -> str:
        """Server version, e.g. ``"15.20"`` (cached)."""
        if self._version is None:
            engine = self._admin_engine()
            try:
                with engine.connect() as conn:
                    raw = conn.exec_driver_sql("SHOW server_version").scalar_one()
            finally:
                engine.dispose()
            self._version = str(raw).split()[0]
        return self._version

    # -- databases ----------------------------------------------------------
    def create_database(self, name: str) -> str:
        """(Re)create database ``name``, dropping any leftover; return its URL."""
        _check_name(name)
        engine = self._admin_engine()
        try:
            with engine.connect() as conn:
                self._drop(conn, name)
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            engine.dispose()
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` (kicking out its connections); missing is fine."""
        _check_name(name)
        engine = self._admin_engine()
        try:
            with engine.connect() as conn:
                self._drop(conn, name)
        finally:
            engine.dispose()

    def _drop(self, conn: sqlalchemy.Connection, name: str) -> None:
        admin_db = make_url(self.admin_url).database
        if name in _PROTECTED_DBS or name == admin_db:
            raise ValueError(f"refusing to drop maintenance database {name!r}")
        # Leaked sessions from a test (or a crashed previous run) would make
        # DROP DATABASE fail, so terminate them first.
        conn.execute(
            sqlalchemy.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": name},
        )
        force = conn.dialect.server_version_info >= (13,)
        # WITH (FORCE) closes the race with a client reconnecting in between.
        suffix = " WITH (FORCE)" if force else ""
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"{suffix}')

    # -- lifecycle ----------------------------------------------------------
    def stop(self) -> None:
        """Stop and delete a throwaway cluster; a no-op for other kinds."""
        if self.kind != "throwaway" or self._stopped:
            return
        self._stopped = True
        assert self.base_dir is not None and self.data_dir is not None
        pid = _postmaster_pid(self.data_dir)
        if self._pg_ctl and os.path.isdir(self.data_dir):
            # Immediate mode: the data is disposable, so skip the checkpoint.
            cmd = [*self._run_as, self._pg_ctl, "stop", "-D", self.data_dir]
            cmd += ["-m", "immediate", "-w", "-t", "20"]
            # On failure, fall through to killing the postmaster directly.
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(cmd, capture_output=True, timeout=30, check=False)
        # Belt and braces: if pg_ctl could not stop it, kill the postmaster
        # ourselves so no postgres process outlives the test run.
        if pid is not None and _pid_alive(pid):
            _kill_and_wait(pid)
        shutil.rmtree(self.base_dir, ignore_errors=True)


# -- process helpers ---------------------------------------------------------
def _postmaster_pid(data_dir: str) -> int | None:
    try:
        with open(os.path.join(data_dir, "postmaster.pid")) as fh:
            return int(fh.readline().strip())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    # A zombie (exited, not yet reaped, common under a container's PID 1)
    # still answers kill(0) but is no longer running.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_and_wait(pid: int, timeout: float = 10.0) -> None:
    # SIGQUIT = postgres "immediate shutdown" (also stops its children);
    # escalate to SIGKILL if it ignores us.
    for sig, wait in ((signal.SIGQUIT, timeout / 2), (signal.SIGKILL, timeout / 2)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return
            time.sleep(0.05)


def _free_port() -> int:
    # Binding port 0 lets the kernel pick; a tiny race remains until postgres
    # binds it, which start_throwaway covers by retrying.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCAL_HOST, 0))
        return sock.getsockname()[1]


def _version_key(path: str) -> tuple[int, ...]:
    m = re.search(r"(\d+(?:\.\d+)*)", path)
    return tuple(int(p) for p in m.group(1).split(".")) if m else ()


def find_pg_bin() -> tuple[str, str] | None:
    """Paths of ``initdb`` and ``pg_ctl`` from one installation: PATH first,
    then the Debian/RHEL versioned install dirs, newest version first."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        # Prefer pg_ctl next to the real initdb so both share a version.
        sibling = os.path.join(os.path.dirname(os.path.realpath(initdb)), "pg_ctl")
        return initdb, sibling if os.access(sibling, os.X_OK) else pg_ctl
    candidates = glob.glob("/usr/lib/postgresql/*/bin") + glob.glob("/usr/pgsql-*/bin")
    for bindir in sorted(candidates, key=_version_key, reverse=True):
        pair = (os.path.join(bindir, "initdb"), os.path.join(bindir, "pg_ctl"))
        if all(os.access(b, os.X_OK) for b in pair):
            return pair
    return None


def _tail(text: bytes | str, lines: int = 5) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return " | ".join(text.strip().splitlines()[-lines:])


def start_throwaway() -> PostgresServer:
    """Create and start a private cluster on a free port; raise RuntimeError
    (with the reason) if that is impossible. Stopped at interpreter exit."""
    binaries = find_pg_bin()
    if binaries is None:
        raise RuntimeError("initdb/pg_ctl not found (PATH, /usr/lib/postgresql/*/bin)")
    initdb, pg_ctl = binaries

    run_as: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        # postgres refuses to run as root: hand the cluster to the postgres user.
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("running as root but no 'postgres' OS user") from None
        runuser = shutil.which("runuser")
        if runuser is None:
            raise RuntimeError("running as root but 'runuser' not found")
        run_as = [runuser, "-u", "postgres", "--"]

    base = tempfile.mkdtemp(prefix="lm-pg-")
    if len(base) > 80 and os.path.isdir("/tmp"):
        # The unix socket lives in base and socket paths max out at ~107 bytes
        # (macOS-style long TMPDIRs would break it).
        os.rmdir(base)
        base = tempfile.mkdtemp(prefix="lm-pg-", dir="/tmp")
    try:
        if owner is not None:
            os.chown(base, owner.pw_uid, owner.pw_gid)
        data = os.path.join(base, "data")
        # English, locale-neutral tool output; a stray PGDATA must not interfere.
        env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
        env.pop("PGDATA", None)
        # cwd=base below: the postgres user may not be able to read root's cwd.
        # C.UTF-8 mirrors the usual server setup; fall back to plain C where
        # that locale does not exist.
        for locale_opt in ("--locale=C.UTF-8", "--no-locale"):
            proc = subprocess.run(
                [*run_as, initdb, "-D", data, *_INITDB_ARGS, locale_opt],
                capture_output=True,
                timeout=120,
                cwd=base,
                env=env,
                check=False,
            )
            if proc.returncode == 0:
                break
            shutil.rmtree(data, ignore_errors=True)
        else:
            raise RuntimeError(f"initdb failed: {_tail(proc.stderr or proc.stdout)}")

        log = os.path.join(base, "postgres.log")
        last_error = ""
        for _ in range(3):  # retry: the "free" port may be grabbed meanwhile
            port = _free_port()
            opts = (
                f"-p {port} -k {base} -c listen_addresses={LOCAL_HOST} "
                "-c fsync=off -c full_page_writes=off -c synchronous_commit=off"
            )
            # -l is essential: without a log file the postmaster inherits our
            # pipes and subprocess.run() would never see EOF.
            proc = subprocess.run(
                [*run_as, pg_ctl, "start", "-w", "-t", "30", "-D", data, "-l", log, "-o", opts],
                capture_output=True,
                timeout=60,
                cwd=base,
                env=env,
                check=False,
            )
            if proc.returncode == 0:
                server = PostgresServer(
                    "throwaway",
                    f"postgresql+pg8000://postgres@{LOCAL_HOST}:{port}/postgres",
                    base_dir=base,
                    pg_ctl=pg_ctl,
                    run_as=run_as,
                )
                # Safety net: never leave a postgres process behind.
                atexit.register(server.stop)
                return server
            last_error = _tail(proc.stderr or proc.stdout)
            try:
                with open(log) as fh:
                    last_error += " | log: " + _tail(fh.read(), 3)
            except OSError:
                pass
            pid = _postmaster_pid(data)
            if pid is not None and _pid_alive(pid):
                _kill_and_wait(pid)
        raise RuntimeError(f"pg_ctl start failed: {last_error}")
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise


def _probe(url: str) -> None:
    # Raises on failure; connect + trivial query proves the server is usable.
    u = make_url(url)
    conn = pg8000.native.Connection(
        user=u.username or getpass.getuser(),
        password=u.password,
        host=u.host or LOCAL_HOST,
        port=u.port or LOCAL_PORT,
        database=u.database,
        timeout=PROBE_TIMEOUT,
    )
    try:
        rows = conn.run("SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user")
        if not rows or not rows[0][0]:
            raise RuntimeError(f"user {u.username!r} may not create databases")
    finally:
        conn.close()


def _from_env() -> PostgresServer | None:
    raw = os.environ.get("TEST_DATABASE_URL", "").strip()
    if not raw:
        last_attempts.append("env: TEST_DATABASE_URL not set")
        return None
    url = normalize_url(raw)  # a malformed URL is a config error: raise
    if not make_url(url).database:
        url = make_url(url).set(database="postgres").render_as_string(hide_password=False)
    try:
        _probe(url)
    except Exception as exc:
        last_attempts.append(f"env: {_safe_url(url)}: {exc}")
        return None
    return PostgresServer("env", url)


def local_port() -> int:
    """Port of the local step: ``TEST_POSTGRES_PORT``, else 5432 (a test points it at an
    unused port to see a run without PostgreSQL, leaving the real server alone)."""
    raw = os.environ.get("TEST_POSTGRES_PORT", "").strip()
    if not raw:
        return LOCAL_PORT
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"TEST_POSTGRES_PORT={raw!r} is not a port number")
    return int(raw)


def _from_local() -> PostgresServer | None:
    port = local_port()
    users: list[str] = []
    for user in (os.environ.get("PGUSER"), _os_user(), "postgres"):
        if user and user not in users:
            users.append(user)
    for user in users:
        url = f"postgresql+pg8000://{user}@{LOCAL_HOST}:{port}/{LOCAL_DATABASE}"
        try:
            _probe(url)
        except Exception as exc:
            last_attempts.append(f"local: {user}@{LOCAL_HOST}:{port}: {exc}")
            # Nothing listening: no point trying other user names.
            if isinstance(exc, pg8000.native.InterfaceError):
                return None
            continue
        return PostgresServer("local", url)
    return None


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def _throwaway() -> PostgresServer | None:
    try:
        return start_throwaway()
    except Exception as exc:
        last_attempts.append(f"throwaway: {exc}")
        return None


def wanted(prefer: str | None = None) -> str:
    """What the caller asks for: ``"sqlite"``, ``"auto"`` or one of `KINDS` (``prefer``,
    else ``TEST_POSTGRES``, else ``"auto"``)."""
    choice = (prefer or os.environ.get("TEST_POSTGRES", "") or "auto").strip().lower()
    if choice in (*SQLITE_CHOICES, "0", "no"):
        return "sqlite"
    if choice != "auto" and choice not in KINDS:
        raise ValueError(f"TEST_POSTGRES={choice!r}: expected auto, {', '.join(KINDS)} or sqlite")
    return choice


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def find_postgres(prefer: str | None = None) -> PostgresServer | None:
    """The first usable PostgreSQL server; None when SQLite is asked for, or (outside CI,
    with no ``TEST_POSTGRES`` choice) when no PostgreSQL can be had at all.

    ``prefer`` (or env ``TEST_POSTGRES``) restricts the search to one kind, or asks for
    SQLite (``sqlite``/``off``/``none``). Raises `PostgresUnavailable` (one line: what was
    tried, why each step failed, how to run on SQLite) when no server can be had.
    """
    last_attempts.clear()
    choice = wanted(prefer)
    if choice == "sqlite":
        last_attempts.append("SQLite asked for by TEST_POSTGRES")
        return None
    steps = {"env": _from_env, "local": _from_local, "throwaway": _throwaway}
    order = list(KINDS) if choice == "auto" else [choice]
    for kind in order:
        server = steps[kind]()
        if server is not None:
            return server
    # One line, whatever the errors say.
    why = "; ".join(" ".join(a.split()) for a in last_attempts).rstrip(".")
    if choice == "auto" and not _in_ci():
        # The project's rule: a developer's machine with no PostgreSQL at all still runs
        # the suite, on SQLite, and the report header says why. CI never does.
        last_attempts[:] = [f"no PostgreSQL could be had: {why}"]
        return None
    raise PostgresUnavailable(
        f"no PostgreSQL server (TEST_POSTGRES={choice}): {why}. Start one, point "
        "TEST_DATABASE_URL at one, or set TEST_POSTGRES=sqlite to run on SQLite on purpose"
    )


def describe(server: PostgresServer | None) -> str:
    """One-line description for the test-suite header."""
    if server is None:
        why = "; ".join(last_attempts) or "not searched"
        return f"SQLite ({why}): PostgreSQL-only tests are skipped"
    try:
        version = f"PostgreSQL {server.version}"
    except Exception as exc:  # describe() must never break the header
        version = f"PostgreSQL (version unknown: {exc})"
    where = f"{server.host}:{server.port}"
    if server.kind == "env":
        where = f"TEST_DATABASE_URL {_safe_url(server.admin_url)}"
    elif server.kind == "throwaway":
        where = f"{where}, {server.base_dir}"
    return f"{version} ({server.kind} {where})"
