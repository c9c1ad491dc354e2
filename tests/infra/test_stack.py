"""`make start` / `make stop` end to end, on free ports, a database of its own and a state
folder of its own (so it never meets a developer's running stack): the administrator's
sequence over HTTP — `registry add` pointing at the emulated WorkflowHub, a client-credentials
token, list registries, submit workflow 21 version 1, and its status turning from
`not_available` to a real one through SQS and the local runner with no manual step — then
the examples, then `make stop` leaving no process behind.

The AWS side is a moto server here; `make test-localstack` (``LM_TEST_LOCALSTACK=1``) runs the
same test against real LocalStack without Docker, installed in `.localstack-venv/`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests

from infra import stack
from tests.infra.infra_support import ROOT

MAKE_TIMEOUT = 240  # seconds for `make start` (LocalStack's first start is the slow one)
STATUS_TIMEOUT = 90  # seconds for the runner to refresh the submitted workflow
EXAMPLES = ROOT / "examples"
REGISTRY_SCOPES = "registry.info registry.workflow.read registry.workflow.write workflow.read"

pytestmark = pytest.mark.slow
# The suite runs after `make install-dev`: never pip-install into the venv from a test.
NO_INSTALL = ("-o", ".venv/.installed", "-o", ".venv/.installed-dev")


def free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def backends() -> list:
    if os.environ.get("LM_TEST_LOCALSTACK"):
        return ["localstack"]
    return ["moto"]


@pytest.fixture(params=backends())
def stack_env(request) -> dict[str, str]:
    backend = request.param
    if backend == "localstack":
        python, why = stack.install_localstack()
        if python is None:
            pytest.skip(f"localstack-core cannot be installed here: {why}")
    # Without a native PostgreSQL the stack makes a private cluster (as the postgres OS user
    # under root): its folder must be one that user can traverse, unlike pytest's tmp_path.
    native = stack.native_postgres()
    state = Path(tempfile.mkdtemp(prefix="lm-stack-test-"))
    state.chmod(0o755)
    api, aws, seek, jenkins, pg = free_ports(5)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LM_", "AWS_")) and k not in {"DATABASE_URL", "MAKEFLAGS", "MFLAGS"}
    }
    env.update(
        STACK_DIR=str(state / "stack"),
        STACK_AWS=backend,
        STACK_DB=f"lm_stack_test_{uuid.uuid4().hex[:10]}",
        PORT=str(api),
        AWS_PORT=str(aws),
        SEEK_PORT=str(seek),
        JENKINS_PORT=str(jenkins),
        PG_PORT=str(pg),
        REFRESH_RATE="1",
        START_TIMEOUT="180",
    )
    if os.environ.get("LM_SHARED_FIXTURES"):
        env["LM_SHARED_FIXTURES"] = os.environ["LM_SHARED_FIXTURES"]
    yield env
    # Whatever happened: nothing left running, the database dropped, the folder removed.
    subprocess.run(
        [sys.executable, "-m", "infra.stack", "clean"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    if native:
        assert not database_exists(env["STACK_DB"]), "make clean left the stack's database"
    assert not Path(env["STACK_DIR"]).exists()
    shutil.rmtree(state, ignore_errors=True)


def database_exists(name: str) -> bool:
    conn = stack._pg_connect(*stack.NATIVE_PG)
    try:
        return bool(conn.run("SELECT 1 FROM pg_database WHERE datname = :n", n=name))
    finally:
        conn.close()


def make(target: str, env: dict[str, str], timeout: float = MAKE_TIMEOUT):
    done = subprocess.run(
        ["make", "-s", *NO_INSTALL, target],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"make {target}:\n{done.stdout}\n{done.stderr}"
    return done


def stack_shell_env(env: dict[str, str]) -> dict[str, str]:
    """The environment `source .stack/stack/env` gives a shell."""
    out = dict(env)
    path = Path(env["STACK_DIR"]) / "stack" / "env"
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export ") :].partition("=")
            out[key] = value.strip("'")
    out.pop("DATABASE_URL", None)
    return out


def admin(env: dict[str, str], *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "chalicelib.admin", *args, "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def example(env: dict[str, str], name: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=env["STACK_DIR"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"{name}: {done.stdout}\n{done.stderr}"
    return done.stdout


def test_make_start_guide_sequence_examples_and_make_stop(stack_env):
    env = stack_env
    started = make("start", env)
    assert "running LocalStack without Docker" in started.stdout or env["STACK_AWS"] != "auto"
    # Idempotent: a second start leaves everything as it is.
    again = make("start", env)
    for service in ("api", "runner", "seek", "jenkins", "aws"):
        assert f"{service}: already running" in again.stdout, again.stdout
    records = stack.Profile(stack.Config.from_env(env), "stack").records()
    own_pg = {"postgres"} if "postgres: nothing answers" in started.stdout else set()
    assert set(records) == {"aws", "jenkins", "seek", "api", "runner"} | own_pg
    pids = [int(r["pid"]) for r in records.values()]

    shell = stack_shell_env(env)
    lm = shell["LM_URL"]
    assert shell["LM_SECRETS_BACKEND"] == "ssm" and "DATABASE_URL" not in shell

    # The guide: register the emulated WorkflowHub, then act as WorkflowHub does.
    seek_url = shell["SEEK_URL"]
    registry = admin(
        shell, "registry", "add", "seek", "seek", "wfh-app-id", "wfh-app-secret", seek_url,
        "--redirect-uris", seek_url,
    )  # fmt: skip
    token = requests.post(
        f"{lm}/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": registry["client_id"],
            "client_secret": registry["client_secret"],
            "scope": REGISTRY_SCOPES,
        },
        timeout=30,
    )
    assert token.status_code == 200, token.text
    bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
    registries = requests.get(f"{lm}/registries", headers=bearer, timeout=30).json()
    assert [r["name"] for r in registries["items"]] == ["seek"]
    submitted = requests.post(
        f"{lm}/registries/current/workflows",
        json={"identifier": "21", "version": "1"},
        headers=bearer,
        timeout=60,
    )
    assert submitted.status_code == 201, submitted.text
    wf_uuid = submitted.json()["uuid"]
    statuses = []
    deadline = time.monotonic() + STATUS_TIMEOUT
    while time.monotonic() < deadline:
        status = requests.get(f"{lm}/workflows/{wf_uuid}/status", headers=bearer, timeout=30)
        assert status.status_code == 200, status.text
        statuses.append(status.json()["aggregate_test_status"])
        if statuses[-1] != "not_available":
            break
        time.sleep(0.5)
    # The emulated Jenkins job `test` passes: the runner fetched it through the queue.
    assert statuses[-1] == "all_passing", (statuses, stack.Profile(
        stack.Config.from_env(env), "stack").tail("runner", 20))  # fmt: skip
    runner_log = (Path(env["STACK_DIR"]) / "stack" / "logs" / "runner.log").read_text()
    assert '"mode": "sqs"' in runner_log and "worker handled" in runner_log

    # The examples, against the same stack.
    creds = Path(env["STACK_DIR"]) / "registry.json"
    example(shell, "register_registry.py", "--save", str(creds))
    out = example(shell, "registry_workflows.py", "--credentials", str(creds))
    assert "478b43f0-8650-0139-d67a-0242ac1b0005" in out or wf_uuid in out
    out = example(shell, "registry_users.py", "--credentials", str(creds))
    assert "they must log in" in out  # nobody has logged in through this WorkflowHub yet
    out = example(
        shell, "statuses_and_builds.py", wf_uuid, "--credentials", str(creds), "--wait", "30"
    )
    assert '"aggregate_test_status": "all_passing"' in out and '"status": "passed"' in out
    admin(shell, "user", "create", "alice")
    key = admin(shell, "api-key", "create", "alice")["key"]
    out = example(shell, "submit_crate.py", "--api-key", key)
    mine = json.loads(out.split("# GET /users/current/workflows\n", 1)[1])
    assert len(mine) == 1
    # The user's workflow is refreshed by the runner as well.
    example(shell, "statuses_and_builds.py", mine[0]["uuid"], "--api-key", key, "--wait", "60")

    stopped = make("stop", env, timeout=120)
    assert "local stack stopped" in stopped.stdout
    for pid in pids:
        assert not stack.pid_alive(pid), f"pid {pid} still runs after make stop"
        assert not stack.group_alive(pid), f"process group {pid} still has processes"
    for port in ("PORT", "AWS_PORT", "SEEK_PORT", "JENKINS_PORT"):
        assert not stack.port_in_use("127.0.0.1", int(env[port])), f"{port} still taken"
    assert not list((Path(env["STACK_DIR"]) / "stack" / "pids").glob("*.pid"))
    assert "nothing was running" in make("stop", env, timeout=60).stdout


def test_make_start_names_a_port_in_use(tmp_path):
    port, jenkins = free_ports(2)
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS"}}
    env.update(STACK_DIR=str(tmp_path / "stack"), SEEK_PORT=str(port), JENKINS_PORT=str(jenkins))
    try:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", port))
            busy.listen()
            done = subprocess.run(
                ["make", "-s", *NO_INSTALL, "start-aux-services"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
    finally:
        stop = subprocess.run(
            [sys.executable, "-m", "infra.stack", "stop-all"], cwd=ROOT, env=env, timeout=60,
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    assert done.returncode != 0
    assert f"error: port {port} on 127.0.0.1 (SEEK_PORT) is in use" in done.stderr, done.stderr
    assert stop.returncode == 0, stop.stderr
    assert "jenkins: stopped" in stop.stdout  # started before seek's port was found taken


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PORT", "http", "PORT must be a port number"),
        ("AWS_PORT", "70000", "AWS_PORT must be between 1 and 65535"),
        ("STACK_AWS", "azure", "STACK_AWS must be auto, docker, localstack or moto"),
        ("STACK_DB", "x; drop", "STACK_DB must be a plain database name"),
        ("REFRESH_RATE", "soon", "REFRESH_RATE must be seconds"),
    ],
)
def test_bad_settings_are_named(name, value, message):
    with pytest.raises(stack.StackError, match=message):
        stack.Config.from_env({name: value})


def test_a_recycled_pid_is_not_taken_for_ours():
    proc = subprocess.Popen(["sleep", "30"])
    try:
        # Until the child has exec'd, its command line is still the forking Python's.
        deadline = time.monotonic() + 5
        while not stack.pid_alive(proc.pid, "sleep") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stack.pid_alive(proc.pid, "sleep")
        assert not stack.pid_alive(proc.pid, "infra.runner")
    finally:
        proc.kill()
        proc.wait()
    assert not stack.pid_alive(proc.pid)


def test_clean_drops_only_a_database_the_stack_made(tmp_path):
    if not stack.native_postgres():
        pytest.skip("needs the native PostgreSQL on 127.0.0.1:5432")
    name = f"lm_preexisting_{uuid.uuid4().hex[:10]}"
    conn = stack._pg_connect(*stack.NATIVE_PG)
    conn.run(f'CREATE DATABASE "{name}"')
    conn.close()
    try:
        cfg = stack.Config.from_env({"STACK_DIR": str(tmp_path / "s"), "STACK_DB": name})
        marker = stack.created_database_marker(cfg)
        stack.ensure_database(*stack.NATIVE_PG, name, marker=marker)
        assert not marker.exists()  # it was there before: not ours
        stack.clean(cfg)
        assert database_exists(name)
    finally:
        stack.drop_database(*stack.NATIVE_PG, name)


def test_a_private_cluster_when_no_server_answers(tmp_path):
    """The fallback of `make start` without a native PostgreSQL (root: as the postgres user)."""
    if not (shutil.which("initdb") and shutil.which("pg_ctl")):
        pytest.skip("initdb/pg_ctl not installed")
    # A folder the postgres OS user can traverse (pytest's tmp_path is private to us).
    base = Path(tempfile.mkdtemp(prefix="lm-stack-pg-"))
    base.chmod(0o755)
    (port,) = free_ports(1)
    cfg = stack.Config.from_env({"STACK_DIR": str(base), "PG_PORT": str(port)})
    profile = stack.Profile(cfg, "stack")
    try:
        try:
            svc, url = stack.own_cluster(cfg, profile)
        except stack.StackError as exc:
            pytest.skip(str(exc))
        assert url.endswith(f":{port}/lifemonitor")
        profile.start(svc)
        stack.ensure_database("127.0.0.1", port, "lifemonitor")
        conn = stack._pg_connect("127.0.0.1", port, database="lifemonitor")
        assert conn.run("SELECT 1") == [[1]]
        conn.close()
        pid = int(profile.record("postgres")["pid"])
        assert profile.stop_service("postgres")
        assert not stack.group_alive(pid)
        assert not stack.port_in_use("127.0.0.1", port)
    finally:
        profile.stop_service("postgres")
        shutil.rmtree(base, ignore_errors=True)
