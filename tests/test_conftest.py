"""The suite's own setup: without PostgreSQL a run fails at once with one line, never a
green run whose PostgreSQL-only tests skipped."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("ci", [False, True])
@pytest.mark.parametrize("plugins", [["-p", "no:xdist"], ["-n", "2"]])
def test_run_fails_at_once_without_postgres(ci: bool, plugins: list[str]) -> None:
    # An unused port stands for "PostgreSQL stopped": bound, not listening, so refused.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "PYTEST_"))}
        env.update(TEST_POSTGRES="local", TEST_POSTGRES_PORT=str(port))
        if ci:
            env["CI"] = "true"
        else:
            env.pop("CI", None)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                *plugins,
                "tests/test_config.py",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    output = proc.stdout + proc.stderr
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("ERROR: no PostgreSQL server (TEST_POSTGRES=local): local: ")
    assert f"@127.0.0.1:{port}: " in lines[0]
    for word in ("passed", "skipped", "collected"):
        assert word not in output
