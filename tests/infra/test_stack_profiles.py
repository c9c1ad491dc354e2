"""The other profiles of infra/stack.py through make: `start-dev` (the embedded default in the
background), `start-testing` (a test database and the emulators on their own ports), with
`status`, `logs`, the stops and `down`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from infra import stack
from tests.infra.infra_support import ROOT

pytestmark = pytest.mark.slow
NO_INSTALL = ("-o", ".venv/.installed", "-o", ".venv/.installed-dev")


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture
def env(tmp_path):
    api, seek, jenkins = free_ports(3)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LM_", "AWS_")) and k not in {"DATABASE_URL", "MAKEFLAGS", "MFLAGS"}
    }
    env.update(
        STACK_DIR=str(tmp_path / "stack"),
        LM_DATA_DIR=str(tmp_path / "data"),
        PORT=str(api),
        TEST_SEEK_PORT=str(seek),
        TEST_JENKINS_PORT=str(jenkins),
    )
    yield env
    subprocess.run(
        [sys.executable, "-m", "infra.stack", "stop-all"], cwd=ROOT, env=env, timeout=120,
        capture_output=True, check=False,
    )  # fmt: skip


def make(env: dict[str, str], *targets: str) -> str:
    done = subprocess.run(
        ["make", "-s", *NO_INSTALL, *targets],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"make {targets}: {done.stdout}\n{done.stderr}"
    return done.stdout


def test_start_dev_status_logs_stop_dev_down(env):
    out = make(env, "start-dev")
    assert "dev: started" in out
    url = f"http://127.0.0.1:{env['PORT']}"
    assert requests.get(f"{url}/health", timeout=30).status_code == 200
    assert (Path(env["LM_DATA_DIR"]) / "lifemonitor.db").exists()  # the embedded default
    assert "dev: already running" in make(env, "start-dev")
    status = make(env, "status")
    assert "dev " in status and "running" in status and f":{env['PORT']}" in status
    assert "infra.local" in make(env, "logs", "SERVICE=dev")
    pid = int(stack.Profile(stack.Config.from_env(env), "dev").record("dev")["pid"])
    assert "dev: stopped" in make(env, "stop-dev")
    assert not stack.pid_alive(pid) and not stack.group_alive(pid)
    assert "nothing is running" in make(env, "status")
    make(env, "down")
    assert not (Path(env["STACK_DIR"]) / "dev" / "pids").exists()


def test_start_testing_gives_a_database_and_the_emulators(env):
    out = make(env, "start-testing")
    assert "testing environment up" in out
    text = (Path(env["STACK_DIR"]) / "testing" / "env").read_text()
    assert "export TEST_DATABASE_URL=postgresql://" in text
    seek = f"http://127.0.0.1:{env['TEST_SEEK_PORT']}/workflows/21?format=json"
    assert requests.get(seek, timeout=30).json()["data"]["attributes"]["title"]
    jenkins = f"http://127.0.0.1:{env['TEST_JENKINS_PORT']}/job/failing/lastBuild/api/json"
    assert requests.get(jenkins, timeout=30).json()["result"] == "FAILURE"
    out = make(env, "stop-testing")
    assert "seek: stopped" in out and "jenkins: stopped" in out
    for port in (env["TEST_SEEK_PORT"], env["TEST_JENKINS_PORT"]):
        assert not stack.port_in_use("127.0.0.1", int(port))
