"""`make certs` / `make start-nginx` / `make stop-nginx` (infra/https.sh): the guide's
`curl --insecure https://localhost:8443/users/current -H 'ApiKey: …'` against the API served
by `python -m infra.local`, behind Debian's nginx, on free ports."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.infra.infra_support import ROOT

HTTPS_SH = ROOT / "infra" / "https.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_available() -> str | None:
    """Why nginx cannot be had here, or None when it is (or `make` may install it)."""
    if shutil.which("nginx") or Path("/usr/sbin/nginx").exists():
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "nginx is not installed and cannot be (not root, or no apt-get)"
    return None


def make(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-s", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def admin(env: dict, *args: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "chalicelib.admin", *args, "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LM_", "DATABASE"))}
    env.update(
        LM_DATA_DIR=str(tmp_path / "data"),
        LM_SECRETS_BACKEND="file",
        LM_LOCAL_REFRESH_INTERVAL="0",
        CERTS_DIR=str(tmp_path / "certs"),
        NGINX_DIR=str(tmp_path / "nginx"),
    )
    return env


def test_make_certs_makes_a_multi_domain_certificate(env, tmp_path):
    result = make("certs", "CERT_DOMAINS=localhost seek lm wfhub.test", env=env)
    assert result.returncode == 0, result.stderr
    cert, key = tmp_path / "certs" / "lm.crt", tmp_path / "certs" / "lm.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    text = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-subject", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in ("localhost", "seek", "lm", "wfhub.test"):
        assert f"DNS:{name}" in text
    assert "CN=localhost" in text.replace(" = ", "=")
    # Idempotent: the same domains keep the same certificate; others make a new one.
    before = cert.read_bytes()
    assert (
        "already covers"
        in make("certs", "CERT_DOMAINS=localhost seek lm wfhub.test", env=env).stdout
    )
    assert cert.read_bytes() == before
    assert make("certs", "CERT_DOMAINS=localhost lm", env=env).returncode == 0
    assert cert.read_bytes() != before
    bad = make("certs", "CERT_DOMAINS=local;host", env=env)
    assert bad.returncode != 0 and "not a host name" in bad.stderr


def wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the API exited: {proc.stdout.read() if proc.stdout else ''}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port} after {seconds} s")


def test_curl_through_the_nginx_tls_proxy(env, tmp_path):
    reason = nginx_available()
    if reason:
        pytest.skip(reason)
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    admin(env, "db", "upgrade")
    admin(env, "user", "create", "alice")
    key = admin(env, "api-key", "create", "alice")["key"]

    api_port, tls_port = free_port(), free_port()
    api = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "infra.local",
            "--host",
            "127.0.0.1",
            "--port",
            str(api_port),
            "--stage",
            "dev",
            "--no-autoreload",
        ],
        cwd=ROOT,
        env={**env, "EXTERNAL_SERVER_URL": f"https://localhost:{tls_port}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ports = [f"NGINX_PORT={tls_port}", f"API_PORT={api_port}"]
    try:
        wait_for_port(api_port, api)
        started = make("start-nginx", *ports, env=env)
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"https://localhost:{tls_port}" in started.stdout
        # Idempotent: a second start finds it running.
        again = make("start-nginx", *ports, env=env)
        assert again.returncode == 0 and "already running" in again.stdout

        curl = subprocess.run(
            [
                "curl",
                "-sS",
                "--insecure",
                f"https://localhost:{tls_port}/users/current",
                "-H",
                f"ApiKey: {key}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert curl.returncode == 0, curl.stderr
        assert json.loads(curl.stdout)["username"] == "alice"
        # Without --insecure, trusting our certificate, each of its names verifies.
        for name in ("seek", "lm"):
            verified = subprocess.run(
                [
                    "curl",
                    "-sS",
                    "--cacert",
                    str(tmp_path / "certs" / "lm.crt"),
                    "--resolve",
                    f"{name}:{tls_port}:127.0.0.1",
                    f"https://{name}:{tls_port}/health",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert verified.returncode == 0, verified.stderr
        # The port is taken: a second proxy elsewhere says which one.
        clash = make(
            "start-nginx", f"NGINX_PORT={api_port}", f"NGINX_DIR={tmp_path}/other", env=env
        )
        assert clash.returncode != 0 and f"port {api_port}" in clash.stderr
    finally:
        stopped = make("stop-nginx", *ports, env=env)
        api.terminate()
        api.wait(timeout=30)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stdout
    assert not (tmp_path / "nginx" / "nginx.pid").exists()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", tls_port)) != 0  # nothing left listening
    assert make("stop-nginx", *ports, env=env).stdout.strip() == "nginx not running"
