"""`python -m chalicelib.admin` run by an interpreter without the project's dependencies (a
system Python, outside the venv) ends with a one-line reason, not a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_missing_dependencies_give_one_line():
    # -S: no site-packages, so sqlalchemy and friends are missing, as in a bare system Python.
    done = subprocess.run(
        [sys.executable, "-S", "-m", "chalicelib.admin", "registry", "list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[0].startswith("error: ") and "cannot import" in lines[0]
    assert ".venv/bin/python -m chalicelib.admin" in lines[0]
