"""The local stack, one command up and one down (`make start`, `make stop`, `make help`).

    python -m infra.stack start [--only jenkins,seek]   # the full stack, or some services
    python -m infra.stack stop [--only …] | status | logs [NAME] [-f] | env
    python -m infra.stack start-dev | stop-dev          # the embedded default, in the background
    python -m infra.stack start-testing | stop-testing | run-tests [PYTEST ARGS]
    python -m infra.stack stop-all | down | clean

Profiles, each with its own folder under ``STACK_DIR`` (default ``.stack/``) holding pid
files, logs, the resolved settings (``state.json``) and an ``env`` file to ``source``:

* ``stack`` (`make start`): AWS emulated, PostgreSQL, WorkflowHub, Jenkins, the API under
  `chalice local` (``infra.local``) and the local runner (``infra.runner``: the `refresh`
  schedule and the SQS worker). AWS is LocalStack in Docker with the compose file's
  PostgreSQL, WorkflowHub and Jenkins containers when a Docker engine answers; otherwise
  LocalStack without Docker (``localstack-core`` in ``.localstack-venv/``, installed on first
  use) or, where that cannot be installed, a moto server, plus the project's WorkflowHub and
  Jenkins emulators (``python -m emulators``) and the native PostgreSQL. ``STACK_AWS``
  (``auto``, ``docker``, ``localstack``, ``moto``) forces one. Either way the same init
  (`localstack/init/ready.d/10_resources.py`) creates the queue, bucket, SES identity and
  parameters, and the service finds them only through ``AWS_ENDPOINT_URL`` and the parameter
  store (its database URL included).
* ``dev`` (`make start-dev`): the embedded default (`make run`: SQLite in ``.data/``,
  in-process refresh, autoreload).
* ``testing`` (`make start-testing`): a PostgreSQL database for the test suite and the two
  emulators on their own ports; ``run-tests`` runs pytest with ``TEST_DATABASE_URL`` set.

Every process is started in its own session, tracked by a pid file and stopped by that pid
(its process group: SIGTERM, then SIGKILL after ``STOP_TIMEOUT`` seconds). Ports come from
the environment (``PORT`` 8000, ``AWS_PORT`` 4566, ``SEEK_PORT`` 3000, ``JENKINS_PORT`` 8080,
``PG_PORT`` 5433, ``TEST_SEEK_PORT`` 3001, ``TEST_JENKINS_PORT`` 8081) and are checked
before use. `start` is idempotent: what runs is left alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INIT_SCRIPT = ROOT / "localstack" / "init" / "ready.d" / "10_resources.py"
COMPOSE_FILE = ROOT / "localstack" / "docker-compose.yml"
COMPOSE_PROJECT = "lifemonitor-local"
LOCALSTACK_VENV = ROOT / ".localstack-venv"
#: What `localstack-core` needed to start without Docker when we tried it (Python >= 3.12).
LOCALSTACK_REQUIREMENTS = (
    "localstack-core[runtime]==4.4.0",  # the Docker image's version; runs on 3.12,
    "cbor2<6",
    "service_identity",
    "cryptography<45",
    "pyopenssl==24.3.0",
    "psutil<7",  # 4.4.0's DNS server imports psutil._common.snicaddr (gone in psutil 7)
)
AWS_SERVICES = "ssm,sqs,s3,ses"
NATIVE_PG = ("127.0.0.1", 5432)
STACK_SERVICES = ("aws", "postgres", "jenkins", "seek", "api", "runner")
AUX_SERVICES = ("jenkins", "seek")
PROFILES = ("stack", "dev", "testing")


class StackError(Exception):
    """Something the user must fix; printed as one line."""


# --- configuration -------------------------------------------------------------------------


def _port(env: dict[str, str], name: str, default: int) -> int:
    value = env.get(name) or str(default)
    try:
        port = int(value)
    except ValueError:
        raise StackError(f"{name} must be a port number, got {value!r}") from None
    if not 0 < port < 65536:
        raise StackError(f"{name} must be between 1 and 65535, got {port}")
    return port


@dataclass
class Config:
    state_dir: Path
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=dict)  # variable name → port
    aws: str = "auto"
    db_name: str = "lifemonitor"
    database_url: str | None = None  # STACK_DATABASE_URL: use this server and database
    stage: str = "dev"
    region: str = "eu-west-1"
    refresh_rate: float | None = None
    start_timeout: float = 120.0
    stop_timeout: float = 10.0
    python: str = sys.executable

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Config:
        env = dict(os.environ if env is None else env)
        ports = {
            name: _port(env, name, default)
            for name, default in (
                ("PORT", 8000),
                ("AWS_PORT", 4566),
                ("SEEK_PORT", 3000),
                ("JENKINS_PORT", 8080),
                ("PG_PORT", 5433),
                ("TEST_SEEK_PORT", 3001),
                ("TEST_JENKINS_PORT", 8081),
            )
        }
        aws = (env.get("STACK_AWS") or "auto").lower()
        if aws not in {"auto", "docker", "localstack", "moto"}:
            raise StackError(f"STACK_AWS must be auto, docker, localstack or moto, got {aws!r}")
        db_name = env.get("STACK_DB") or "lifemonitor"
        if not db_name.replace("_", "a").isalnum() or not db_name[0].isalpha():
            raise StackError(f"STACK_DB must be a plain database name, got {db_name!r}")
        rate = env.get("REFRESH_RATE") or None
        try:
            refresh_rate = float(rate) if rate else None
        except ValueError:
            raise StackError(f"REFRESH_RATE must be seconds, got {rate!r}") from None
        stage = env.get("STACK_STAGE") or "dev"
        return cls(
            state_dir=Path(env.get("STACK_DIR") or ROOT / ".stack").resolve(),
            ports=ports,
            aws=aws,
            db_name=db_name,
            database_url=env.get("STACK_DATABASE_URL") or None,
            stage=stage,
            region=env.get("STACK_REGION") or "eu-west-1",
            refresh_rate=refresh_rate,
            start_timeout=float(env.get("START_TIMEOUT") or 120),
            stop_timeout=float(env.get("STOP_TIMEOUT") or 10),
        )

    def url(self, port_var: str) -> str:
        return f"http://{self.host}:{self.ports[port_var]}"

    def profile_dir(self, profile: str) -> Path:
        return self.state_dir / profile


# --- processes -----------------------------------------------------------------------------


def _read_cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def pid_alive(pid: int, marker: str | None = None) -> bool:
    """Whether `pid` runs and (when /proc tells) its command line contains `marker`, so a
    recycled pid is never taken for ours."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process: not ours
    if _is_zombie(pid):
        return False
    if marker and Path("/proc").is_dir():
        cmdline = _read_cmdline(pid)
        return cmdline is not None and marker in cmdline
    return True


def group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in the process group."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    if Path("/proc").is_dir():
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
        return False
    return True


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


@dataclass
class Service:
    name: str
    argv: list[str]
    marker: str  # a piece of the command line that identifies the process
    port_var: str | None = None
    ready: Callable[[], bool] | None = None
    env: dict[str, str] | None = None
    cwd: Path = ROOT
    stop_signal: int = signal.SIGTERM  # what asks it to shut down cleanly
    stop_grace: float = 0.0  # seconds it may need for that beyond STOP_TIMEOUT


class Profile:
    """The processes of one profile: pid files, logs, start and stop."""

    def __init__(self, cfg: Config, name: str) -> None:
        self.cfg = cfg
        self.name = name
        self.dir = cfg.profile_dir(name)
        self.pids = self.dir / "pids"
        self.logs = self.dir / "logs"

    def pidfile(self, service: str) -> Path:
        return self.pids / f"{service}.pid"

    def logfile(self, service: str) -> Path:
        return self.logs / f"{service}.log"

    def record(self, service: str) -> dict | None:
        try:
            return json.loads(self.pidfile(service).read_text())
        except (OSError, ValueError):
            return None

    def running(self, service: str) -> dict | None:
        rec = self.record(service)
        if rec and pid_alive(int(rec["pid"]), rec.get("marker")):
            return rec
        return None

    def records(self) -> dict[str, dict]:
        if not self.pids.is_dir():
            return {}
        out = {}
        for path in sorted(self.pids.glob("*.pid")):
            rec = self.record(path.stem)
            if rec:
                out[path.stem] = rec
        return out

    def check_port(self, port_var: str | None) -> None:
        if port_var is None:
            return
        port = self.cfg.ports[port_var]
        if port_in_use(self.cfg.host, port):
            raise StackError(
                f"port {port} on {self.cfg.host} ({port_var}) is in use by another program: "
                f"stop it or choose another, e.g. make start {port_var}={port + 1}"
            )

    def start(self, svc: Service) -> bool:
        """Start `svc` unless it runs; wait until ready. True when started now."""
        rec = self.running(svc.name)
        if rec:
            say(f"{svc.name}: already running (pid {rec['pid']})")
            return False
        self.check_port(svc.port_var)
        self.pids.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logfile(svc.name), "ab")  # noqa: SIM115 - handed to the child
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(svc.argv)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                svc.argv,
                cwd=svc.cwd,
                env=svc.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as one
            )
        finally:
            log.close()
        record = {
            "pid": proc.pid,
            "marker": svc.marker,
            "port": self.cfg.ports.get(svc.port_var) if svc.port_var else None,
            "argv": svc.argv,
            "stop_signal": int(svc.stop_signal),
            "stop_grace": svc.stop_grace,
            "started": time.time(),
        }
        self.pidfile(svc.name).write_text(json.dumps(record))
        try:
            self.wait_ready(svc, proc)
        except BaseException:
            self.stop_service(svc.name)
            raise
        port = f" on port {record['port']}" if record["port"] else ""
        say(f"{svc.name}: started (pid {proc.pid}){port}")
        return True

    def wait_ready(self, svc: Service, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + self.cfg.start_timeout
        while True:
            code = proc.poll()
            if code is not None:
                raise StackError(
                    f"{svc.name} exited with status {code} while starting: "
                    f"{self.tail(svc.name, 1) or 'no output'} (log: {self.logfile(svc.name)})"
                )
            if svc.ready is None or svc.ready():
                if svc.ready is None:
                    time.sleep(0.5)
                    if proc.poll() is not None:
                        continue
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"{svc.name} not ready after {self.cfg.start_timeout:g} s "
                    f"(log: {self.logfile(svc.name)})"
                )
            time.sleep(0.2)

    def tail(self, service: str, lines: int = 20) -> str:
        try:
            text = self.logfile(service).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])

    def stop_service(self, service: str) -> bool:
        """Stop the tracked process (its whole group); False when it was not running."""
        rec = self.record(service)
        path = self.pidfile(service)
        if rec is None:
            path.unlink(missing_ok=True)
            return False
        pid = int(rec["pid"])
        was_running = pid_alive(pid, rec.get("marker"))
        if was_running:
            self._signal_group(pid, int(rec.get("stop_signal", signal.SIGTERM)))
            grace = self.cfg.stop_timeout + float(rec.get("stop_grace", 0))
            deadline = time.monotonic() + grace
            while (pid_alive(pid) or group_alive(pid)) and time.monotonic() < deadline:
                time.sleep(0.1)
            if pid_alive(pid) or group_alive(pid):
                self._signal_group(pid, signal.SIGKILL)
                # A killed process still takes a moment to go (more on a loaded machine).
                deadline = time.monotonic() + 10
                while (pid_alive(pid) or group_alive(pid)) and time.monotonic() < deadline:
                    time.sleep(0.1)
            say(f"{service}: stopped (pid {pid})")
        path.unlink(missing_ok=True)
        return was_running

    @staticmethod
    def _signal_group(pid: int, sig: int) -> None:
        try:
            os.killpg(pid, sig)  # started with start_new_session: pgid == pid
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def write_state(self, state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))

    def state(self) -> dict[str, Any]:
        try:
            return json.loads((self.dir / "state.json").read_text())
        except (OSError, ValueError):
            return {}

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        import fcntl

        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StackError(f"another start or stop of {self.dir} is running") from None
            yield


def say(message: str) -> None:
    print(message, flush=True)


# --- readiness probes ----------------------------------------------------------------------


def http_ok(url: str, timeout: float = 1.0) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


def aws_ok(endpoint: str, region: str) -> bool:
    import boto3
    from botocore.config import Config as BotoConfig

    client = boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="test",
        aws_secret_access_key="test",  # noqa: S106 - emulator credentials
        config=BotoConfig(connect_timeout=1, read_timeout=3, retries={"max_attempts": 0}),
    )
    try:
        client.list_queues()
        return True
    except Exception:
        return False


# --- AWS -----------------------------------------------------------------------------------


def docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        done = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _python_312() -> str | None:
    """An interpreter >= 3.12 for LocalStack's venv."""
    candidates = [sys.executable, "python3.13", "python3.12"]
    candidates += sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.1[23]*/bin/python3"))
    for candidate in candidates:
        path = shutil.which(candidate) or candidate
        try:
            done = subprocess.run(
                [path, "-c", "import sys; sys.exit(sys.version_info < (3, 12))"],
                capture_output=True,
                timeout=20,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return path
    return None


def localstack_python(venv: Path = LOCALSTACK_VENV) -> str | None:
    """The venv's interpreter if LocalStack's runtime imports there."""
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    done = subprocess.run(
        [str(python), "-c", "import localstack.runtime.main, rolo"],
        capture_output=True,
        timeout=60,
        check=False,
        cwd=venv,
    )
    return str(python) if done.returncode == 0 else None


def install_localstack(venv: Path = LOCALSTACK_VENV) -> tuple[str | None, str]:
    """Install `localstack-core` into its own venv; (python, "") or (None, why not)."""
    found = localstack_python(venv)
    if found:
        return found, ""
    base = _python_312()
    if base is None:
        return None, "no Python >= 3.12 for localstack-core"
    say(f"installing localstack-core into {venv} (once; a few minutes)…")
    try:
        subprocess.run([base, "-m", "venv", str(venv)], check=True, capture_output=True)
        done = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", *LOCALSTACK_REQUIREMENTS],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"cannot create {venv}: {exc}"
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if "ERROR" in line]
        return None, (lines[-1] if lines else f"pip exited with {done.returncode}")[:300]
    found = localstack_python(venv)
    return (found, "") if found else (None, "localstack-core installed but does not import")


def moto_available(python: str) -> bool:
    done = subprocess.run(
        [python, "-c", "import moto.server, flask"], capture_output=True, check=False
    )
    return done.returncode == 0


def choose_aws(cfg: Config) -> tuple[str, str | None]:
    """(backend, interpreter): docker, localstack or moto."""
    if cfg.aws in {"auto", "docker"}:
        if docker_available():
            return "docker", None
        if cfg.aws == "docker":
            raise StackError("STACK_AWS=docker but no Docker engine answers (docker info)")
        say(
            "Docker is not available (no engine answers `docker info`): "
            "running LocalStack without Docker"
        )
    if cfg.aws in {"auto", "localstack"}:
        python, why = install_localstack()
        if python:
            return "localstack", python
        if cfg.aws == "localstack":
            raise StackError(f"cannot run LocalStack without Docker: {why}")
        say(f"LocalStack cannot be installed ({why}): using a moto server instead")
    if not moto_available(cfg.python):
        raise StackError("no moto server: install the dev dependencies (make install-dev)")
    return "moto", cfg.python


def aws_service(cfg: Config, backend: str, python: str, profile: Profile) -> Service:
    endpoint = cfg.url("AWS_PORT")
    port = cfg.ports["AWS_PORT"]
    if backend == "localstack":
        data = profile.dir / "localstack"
        data.mkdir(parents=True, exist_ok=True)
        env = {
            **_base_env(),
            "GATEWAY_LISTEN": f"{cfg.host}:{port}",
            "LOCALSTACK_HOST": f"{cfg.host}:{port}",
            "SERVICES": AWS_SERVICES,
            "SQS_ENDPOINT_STRATEGY": "path",
            "AWS_DEFAULT_REGION": cfg.region,
            "LOCALSTACK_VOLUME_DIR": str(data),
            "FILESYSTEM_ROOT": str(data / "fs"),
            "PERSISTENCE": "0",
            # Host mode: no container directories (/var/lib/localstack), no DNS server, and
            # nothing fetched from the network (test certificate, analytics events).
            "OVERRIDE_IN_DOCKER": "0",
            "DNS_ADDRESS": "0",
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "DISABLE_EVENTS": "1",
        }
        # cwd outside the project: its `localstack/` folder must not shadow the package.
        return Service(
            "aws",
            [python, "-m", "localstack.runtime.main"],
            marker="localstack.runtime.main",
            stop_signal=signal.SIGINT,  # its graceful shutdown (~10 s)
            stop_grace=30,
            port_var="AWS_PORT",
            ready=lambda: aws_ok(endpoint, cfg.region),
            env=env,
            cwd=data,
        )
    return Service(
        "aws",
        [python, "-m", "moto.server", "-H", cfg.host, "-p", str(port)],
        marker="moto.server",
        port_var="AWS_PORT",
        ready=lambda: aws_ok(endpoint, cfg.region),
        env=_base_env(),
    )


def _base_env() -> dict[str, str]:
    """The caller's environment minus what the stack decides itself: the database comes from
    the parameter store and AWS from the emulator. Other settings (``LM_GITHUB_CLIENT_ID``,
    ``LOG_LEVEL``, ...) pass through to the service."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and k not in {"DATABASE_URL", "LM_SECRETS_BACKEND"}
    }


def load_init() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("lm_localstack_init", INIT_SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def aws_env(endpoint: str, region: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in _AWS_VARS}
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_DEFAULT_REGION=region,
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",  # noqa: S106 - emulator credentials
    )
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_AWS_VARS = (
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
)


# --- PostgreSQL ----------------------------------------------------------------------------


def _pg_connect(host: str, port: int, database: str = "postgres", user: str = "postgres"):
    import pg8000.native

    return pg8000.native.Connection(user, host=host, port=port, database=database, timeout=15)


def native_postgres() -> bool:
    try:
        _pg_connect(*NATIVE_PG).close()
        return True
    except Exception:
        return False


def ensure_database(
    host: str, port: int, name: str, user: str = "postgres", marker: Path | None = None
) -> str:
    """Create the database if absent; `marker` records that we created it, so `clean` drops
    only a database the stack made (never one that was there before)."""
    conn = _pg_connect(host, port, user=user)
    try:
        if not conn.run("SELECT 1 FROM pg_database WHERE datname = :n", n=name):
            conn.run(f'CREATE DATABASE "{name}"')
            if marker is not None:
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(name)
    finally:
        conn.close()
    return f"postgresql://{user}@{host}:{port}/{name}"


def created_database_marker(cfg: Config) -> Path:
    return cfg.profile_dir("stack") / "created-database"


def drop_database(host: str, port: int, name: str, user: str = "postgres") -> bool:
    if name in {"postgres", "template0", "template1", "test"}:
        raise StackError(f"refusing to drop database {name!r}")
    conn = _pg_connect(host, port, user=user)
    try:
        if not conn.run("SELECT 1 FROM pg_database WHERE datname = :n", n=name):
            return False
        conn.run(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n", n=name
        )
        conn.run(f'DROP DATABASE IF EXISTS "{name}"')
        return True
    finally:
        conn.close()


def own_cluster(cfg: Config, profile: Profile) -> tuple[Service, str]:
    """No native server: a private cluster in the profile folder on PG_PORT (as the
    ``postgres`` OS user when run as root: PostgreSQL refuses root)."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl):
        raise StackError(
            "PostgreSQL: nothing answers on 127.0.0.1:5432 and initdb is not installed; "
            "install PostgreSQL or set STACK_DATABASE_URL"
        )
    postgres = str(Path(pg_ctl).resolve().with_name("postgres"))
    data = profile.dir / "pgdata"
    run_as: list[str] = []
    if os.geteuid() == 0:
        import pwd

        runuser = shutil.which("runuser")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            owner = None
        if owner is None or runuser is None:
            raise StackError(
                "PostgreSQL: nothing answers on 127.0.0.1:5432, and as root a private "
                "cluster needs the 'postgres' OS user and runuser; set STACK_DATABASE_URL"
            )
        run_as = [runuser, "-u", "postgres", "--"]
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        if run_as:
            os.chown(data, owner.pw_uid, owner.pw_gid)
        done = subprocess.run(
            [*run_as, initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync",
             "-E", "UTF8"],
            capture_output=True,
            text=True,
            cwd=data,
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise StackError(f"initdb failed: {(done.stderr or done.stdout).strip()[-300:]}")
    port = cfg.ports["PG_PORT"]
    svc = Service(
        "postgres",
        [*run_as, postgres, "-D", str(data), "-p", str(port), "-c",
         f"listen_addresses={cfg.host}", "-k", str(data)],
        marker=str(data),
        port_var="PG_PORT",
        ready=lambda: _pg_ready(cfg.host, port),
        env=_base_env(),
        cwd=data,
    )  # fmt: skip
    return svc, f"postgresql://postgres@{cfg.host}:{port}/{cfg.db_name}"


def _pg_ready(host: str, port: int) -> bool:
    try:
        _pg_connect(host, port).close()
        return True
    except Exception:
        return False


# --- the stack -----------------------------------------------------------------------------


def service_env(cfg: Config, state: dict[str, Any]) -> dict[str, str]:
    """What the API, the runner and the admin commands of the stack see."""
    return {
        "AWS_ENDPOINT_URL": state["aws_endpoint"],
        "AWS_DEFAULT_REGION": cfg.region,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "LM_STAGE": cfg.stage,
        "LM_SECRETS_BACKEND": "ssm",
        "LM_REFRESH_QUEUE_URL": state["queue_url"],
        "LM_WEBHOOK_QUEUE_URL": state["webhook_queue_url"],
        "LM_EMAIL_BACKEND": "ses",  # mail goes to the emulated SES
        "LM_EMAIL_SENDER": state["sender"],
        "LM_CRATE_BUCKET": state["bucket"],
        "LM_DATA_DIR": str(cfg.profile_dir("stack") / "data"),
        "LM_LOCAL_REFRESH_INTERVAL": "0",  # the runner fires the schedule instead
        "ALLOW_PRIVATE_URLS": "1",  # WorkflowHub and Jenkins listen on loopback
        "EXTERNAL_SERVER_URL": os.environ.get("EXTERNAL_SERVER_URL") or cfg.url("PORT"),
        "PORT": str(cfg.ports["PORT"]),
        # Not service settings: where the guide's commands find the stack.
        "LM_URL": cfg.url("PORT"),
        "SEEK_URL": state["seek_url"],
        "JENKINS_URL": state["jenkins_url"],
    }


def write_env(profile: Profile, env: dict[str, str]) -> Path:
    path = profile.dir / "env"
    lines = ["# source this file to run commands against the local stack", "unset DATABASE_URL"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def _compose(cfg: Config, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        **{k: str(v) for k, v in cfg.ports.items()},
        "LM_STAGE": cfg.stage,
    }
    return subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", COMPOSE_PROJECT, *args],
        env=env,
        check=False,
    )


def start_stack(cfg: Config, only: tuple[str, ...] = STACK_SERVICES) -> dict[str, Any]:
    profile = Profile(cfg, "stack")
    unknown = set(only) - set(STACK_SERVICES)
    if unknown:
        raise StackError(f"unknown service(s): {', '.join(sorted(unknown))}")
    with profile.lock():
        state = profile.state()
        jenkins_url = cfg.url("JENKINS_PORT")
        seek_url = cfg.url("SEEK_PORT")
        needs_aws = bool({"aws", "postgres", "api", "runner"} & set(only))
        if needs_aws:
            state = _start_aws_and_db(cfg, profile, state)
        else:
            state.setdefault("backend", None)
        state.update(seek_url=seek_url, jenkins_url=jenkins_url)
        profile.write_state(state)
        if state.get("backend") != "docker":
            if "jenkins" in only:
                profile.start(_emulator(cfg, "jenkins", "JENKINS_PORT"))
            if "seek" in only:
                profile.start(_emulator(cfg, "seek", "SEEK_PORT", jenkins_url=jenkins_url))
        if not needs_aws:
            return state
        env = service_env(cfg, state)
        write_env(profile, env)
        child_env = {**_base_env(), **env}
        if "api" in only:
            if not profile.running("api"):
                _migrate(cfg, child_env)
            profile.start(
                Service(
                    "api",
                    [
                        cfg.python,
                        "-m",
                        "infra.local",
                        "--host",
                        cfg.host,
                        "--port",
                        str(cfg.ports["PORT"]),
                        "--stage",
                        cfg.stage,
                        "--no-autoreload",
                    ],
                    marker="infra.local",
                    port_var="PORT",
                    ready=lambda: http_ok(cfg.url("PORT") + "/health"),
                    env=child_env,
                )
            )
        if "runner" in only:
            argv = [cfg.python, "-m", "infra.runner"]
            if cfg.refresh_rate:
                argv += ["--rate", f"refresh={cfg.refresh_rate:g}"]
            profile.start(Service("runner", argv, marker="infra.runner", env=child_env))
        say(
            f"LifeMonitor API on {cfg.url('PORT')} (docs at /ui); WorkflowHub on {seek_url}; "
            f"Jenkins on {jenkins_url}; AWS ({state['backend']}) on {state['aws_endpoint']}"
        )
        say(f"environment for commands: source {profile.dir / 'env'}")
        return state


def _start_aws_and_db(cfg: Config, profile: Profile, state: dict[str, Any]) -> dict[str, Any]:
    endpoint = cfg.url("AWS_PORT")
    running = profile.running("aws")
    backend = state.get("backend") if running else None
    python = None
    if backend is None:
        backend, python = choose_aws(cfg)
    else:
        say(f"aws: already running (pid {running['pid']})")
    if backend == "docker":
        say("Docker is available: starting localstack/docker-compose.yml")
        if _compose(cfg, "up", "-d", "--wait").returncode != 0:
            raise StackError("docker compose up failed (see its output above)")
        pg = cfg.ports["PG_PORT"]
        database_url = cfg.database_url or (
            f"postgresql://lifemonitor:lifemonitor@{cfg.host}:{pg}/lifemonitor"
        )
    else:
        if python is not None:
            profile.start(aws_service(cfg, backend, python, profile))
        database_url = cfg.database_url or _postgres(cfg, profile)
    init = load_init()
    with aws_env(endpoint, cfg.region):
        resources = init.ensure_resources(cfg.stage, region=cfg.region, database_url=database_url)
    say(f"aws: {backend} on {endpoint}: queue, bucket, SES identity and parameters ready")
    state.update(
        backend=backend,
        aws_endpoint=endpoint,
        queue_url=resources["queue_url"],
        webhook_queue_url=resources["webhook_queue_url"],
        sender=resources["sender"],
        dlq_url=resources["dlq_url"],
        bucket=resources["bucket"],
        database=_redact(database_url),
        db_name=cfg.db_name,
    )
    return state


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _postgres(cfg: Config, profile: Profile) -> str:
    if profile.running("postgres"):
        return f"postgresql://postgres@{cfg.host}:{cfg.ports['PG_PORT']}/{cfg.db_name}"
    if native_postgres():
        url = ensure_database(*NATIVE_PG, cfg.db_name, marker=created_database_marker(cfg))
        say(f"postgres: native server on {NATIVE_PG[0]}:{NATIVE_PG[1]}, database {cfg.db_name}")
        return url
    say("postgres: nothing answers on 127.0.0.1:5432: a private cluster under " + str(profile.dir))
    svc, url = own_cluster(cfg, profile)
    profile.start(svc)
    ensure_database(cfg.host, cfg.ports["PG_PORT"], cfg.db_name)
    return url


def _migrate(cfg: Config, env: dict[str, str]) -> None:
    done = subprocess.run(
        [cfg.python, "-m", "chalicelib.admin", "db", "upgrade"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise StackError(f"migration failed: {(done.stderr or done.stdout).strip()[-300:]}")
    say("database: migrated to head")


def _emulator(cfg: Config, name: str, port_var: str, jenkins_url: str | None = None) -> Service:
    argv = [
        cfg.python,
        "-m",
        "emulators",
        name,
        "--host",
        cfg.host,
        "--port",
        str(cfg.ports[port_var]),
    ]
    if jenkins_url:
        argv += ["--jenkins-url", jenkins_url + "/"]
    probe = "/workflows?format=json" if name == "seek" else "/api/json"
    env = _base_env()
    fixtures = shared_fixtures()
    if fixtures:
        env["LM_SHARED_FIXTURES"] = str(fixtures)
    return Service(
        name,
        argv,
        marker=f"emulators {name}",
        port_var=port_var,
        ready=lambda: http_ok(cfg.url(port_var) + probe),
        env=env,
    )


def shared_fixtures() -> Path | None:
    """The recorded payloads the emulators replay: ``LM_SHARED_FIXTURES``, else the first
    ``shared/fixtures`` beside the checkout or one of its parents (git worktrees)."""
    if os.environ.get("LM_SHARED_FIXTURES"):
        return Path(os.environ["LM_SHARED_FIXTURES"])
    for parent in ROOT.parents:
        candidate = parent / "shared" / "fixtures"
        if candidate.is_dir():
            return candidate
    return None


def stop_profile(cfg: Config, name: str, only: tuple[str, ...] | None = None) -> int:
    profile = Profile(cfg, name)
    if not profile.dir.exists():
        return 0
    with profile.lock():
        order = ["runner", "api", "dev", "seek", "jenkins", "aws", "postgres"]
        records = profile.records()
        names = sorted(records, key=lambda n: order.index(n) if n in order else -1)
        stopped = 0
        for service in names:
            if only is None or service in only:
                stopped += profile.stop_service(service)
        if name == "stack" and only is None and profile.state().get("backend") == "docker":
            _compose(cfg, "stop")
        return stopped


# --- dev and testing profiles ----------------------------------------------------------------


def start_dev(cfg: Config) -> None:
    profile = Profile(cfg, "dev")
    with profile.lock():
        env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
        env["PORT"] = str(cfg.ports["PORT"])
        if not profile.running("dev"):
            _migrate(cfg, env)
        profile.start(
            Service(
                "dev",
                [
                    cfg.python,
                    "-m",
                    "infra.local",
                    "--host",
                    cfg.host,
                    "--port",
                    env["PORT"],
                    "--stage",
                    "dev",
                ],
                marker="infra.local",
                port_var="PORT",
                ready=lambda: http_ok(cfg.url("PORT") + "/health"),
                env=env,
            )
        )
        say(f"LifeMonitor (embedded default, autoreload) on {cfg.url('PORT')}")


def start_testing(cfg: Config) -> dict[str, str]:
    profile = Profile(cfg, "testing")
    with profile.lock():
        test_cfg = Config(
            **{
                **cfg.__dict__,
                "ports": {
                    **cfg.ports,
                    "SEEK_PORT": cfg.ports["TEST_SEEK_PORT"],
                    "JENKINS_PORT": cfg.ports["TEST_JENKINS_PORT"],
                },
            }
        )
        if cfg.database_url:
            admin_url = cfg.database_url
        elif profile.running("postgres") or not native_postgres():
            svc, _ = own_cluster(cfg, profile)
            profile.start(svc)
            admin_url = ensure_database(cfg.host, cfg.ports["PG_PORT"], "test")
        else:
            admin_url = ensure_database(*NATIVE_PG, "test")
        profile.start(_emulator(test_cfg, "jenkins", "TEST_JENKINS_PORT"))
        profile.start(
            _emulator(
                test_cfg, "seek", "TEST_SEEK_PORT", jenkins_url=test_cfg.url("TEST_JENKINS_PORT")
            )
        )
        env = {
            "TEST_DATABASE_URL": admin_url,
            "LM_TEST_SEEK_URL": test_cfg.url("TEST_SEEK_PORT"),
            "LM_TEST_JENKINS_URL": test_cfg.url("TEST_JENKINS_PORT"),
        }
        write_env(profile, env)
        profile.write_state(env)
        say(f"testing environment up: database {_redact(admin_url)}")
        return env


def run_tests(cfg: Config, pytest_args: list[str]) -> int:
    state = Profile(cfg, "testing").state()
    env = dict(os.environ)
    if state.get("TEST_DATABASE_URL"):
        env["TEST_DATABASE_URL"] = state["TEST_DATABASE_URL"]
    else:
        say("no testing environment (make start-testing): the suite finds its own PostgreSQL")
    argv = [cfg.python, "-m", "pytest", *(pytest_args or ["-n", "auto"])]
    return subprocess.run(argv, cwd=ROOT, env=env, check=False).returncode


# --- status, logs, down, clean -----------------------------------------------------------------


def status(cfg: Config) -> list[dict[str, Any]]:
    rows = []
    for name in PROFILES:
        profile = Profile(cfg, name)
        for service, rec in profile.records().items():
            alive = pid_alive(int(rec["pid"]), rec.get("marker"))
            rows.append(
                {
                    "profile": name,
                    "service": service,
                    "pid": rec["pid"],
                    "port": rec.get("port"),
                    "state": "running" if alive else "dead (stale pid file)",
                }
            )
    return rows


def print_status(cfg: Config) -> None:
    rows = status(cfg)
    if not rows:
        say("nothing is running")
    for row in rows:
        port = f":{row['port']}" if row["port"] else ""
        say(f"{row['profile']:8} {row['service']:9} pid {row['pid']:<8} {port:7} {row['state']}")
    state = Profile(cfg, "stack").state()
    if state.get("backend") == "docker":
        _compose(cfg, "ps")


def show_logs(cfg: Config, service: str | None, lines: int, follow: bool) -> int:
    files = []
    for name in PROFILES:
        logs = Profile(cfg, name).logs
        if logs.is_dir():
            files += [p for p in sorted(logs.glob("*.log")) if service in (None, p.stem)]
    if not files:
        say(f"no logs{f' for {service}' if service else ''} under {cfg.state_dir}")
        return 1
    for path in files:
        say(f"==> {path.relative_to(cfg.state_dir)} <==")
        text = path.read_text(errors="replace").splitlines()
        say("\n".join(text[-lines:]))
    if follow:
        return subprocess.run(["tail", "-n0", "-F", *map(str, files)], check=False).returncode
    return 0


def stop_all(cfg: Config) -> None:
    for name in PROFILES:
        stop_profile(cfg, name)


def down(cfg: Config) -> None:
    stop_all(cfg)
    if Profile(cfg, "stack").state().get("backend") == "docker" or docker_available():
        _compose(cfg, "down")
    for name in PROFILES:
        profile = Profile(cfg, name)
        for sub in ("pids", "state.json", "env", "lock"):
            path = profile.dir / sub
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def clean(cfg: Config) -> None:
    stop_all(cfg)
    if docker_available():
        _compose(cfg, "down", "-v")
    marker = created_database_marker(cfg)
    db_name = marker.read_text().strip() if marker.exists() else None
    if db_name and not cfg.database_url and native_postgres():
        with contextlib.suppress(StackError):
            if drop_database(*NATIVE_PG, db_name):
                say(f"postgres: dropped database {db_name} (made by make start)")
    if cfg.state_dir.exists():
        shutil.rmtree(cfg.state_dir, ignore_errors=True)
        say(f"removed {cfg.state_dir}")


# --- command line ----------------------------------------------------------------------------


def _only(value: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(s.strip() for s in value.split(",") if s.strip()) if value else default


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.stack", description="The local LifeMonitor stack."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "stop"):
        p = sub.add_parser(name)
        p.add_argument("--only", help=f"comma-separated services of {', '.join(STACK_SERVICES)}")
    for name in (
        "start-dev",
        "stop-dev",
        "start-testing",
        "stop-testing",
        "stop-all",
        "down",
        "clean",
        "status",
        "env",
    ):
        sub.add_parser(name)
    p = sub.add_parser("run-tests")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER)
    p = sub.add_parser("logs")
    p.add_argument("service", nargs="?")
    p.add_argument("-n", "--lines", type=int, default=40)
    p.add_argument("-f", "--follow", action="store_true")
    args = parser.parse_args(argv)
    try:
        cfg = Config.from_env()
        command = args.command
        if command == "start":
            start_stack(cfg, _only(args.only, STACK_SERVICES))
        elif command == "stop":
            n = stop_profile(cfg, "stack", _only(args.only, ()) or None)
            say("local stack stopped" if n else "nothing was running")
        elif command == "start-dev":
            start_dev(cfg)
        elif command == "stop-dev":
            stop_profile(cfg, "dev")
        elif command == "start-testing":
            start_testing(cfg)
        elif command == "stop-testing":
            stop_profile(cfg, "testing")
        elif command == "run-tests":
            return run_tests(cfg, [a for a in args.pytest_args if a != "--"])
        elif command == "stop-all":
            stop_all(cfg)
        elif command == "down":
            down(cfg)
        elif command == "clean":
            clean(cfg)
        elif command == "status":
            print_status(cfg)
        elif command == "logs":
            return show_logs(cfg, args.service, args.lines, args.follow)
        elif command == "env":
            path = Profile(cfg, "stack").dir / "env"
            if not path.exists():
                raise StackError("the local stack has not been started (make start)")
            sys.stdout.write(path.read_text())
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
