"""`make lint-infra` (infra/lint.sh) fails on what it is there to catch: a stale IAM policy
file, and any cfn-lint error."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.infra_support import ROOT, clean_env


def copy_project(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("chalicelib", "migrations", "infra"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore, symlinks=True)
    shutil.copy2(ROOT / "app.py", dest / "app.py")
    shutil.copytree(ROOT / ".chalice", dest / ".chalice", ignore=shutil.ignore_patterns("deploy*"))
    return dest


def lint(project: Path, *stages: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(project / "infra" / "lint.sh"), *stages],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        env=clean_env(PYTHON=sys.executable),
        check=False,
    )


def test_a_stale_policy_file_fails(tmp_path):
    project = copy_project(tmp_path / "p")
    policy = project / ".chalice" / "policy-dev-worker.json"
    policy.write_text(policy.read_text().replace("sqs:DeleteMessage", "sqs:*"))
    result = lint(project, "dev")
    assert result.returncode == 1
    assert ".chalice/policy-dev-worker.json is stale" in result.stderr


@pytest.mark.skipif(sys.version_info < (3, 12), reason="package.sh needs Python 3.12+")
def test_a_template_error_fails(tmp_path):
    project = copy_project(tmp_path / "p")
    stateful = project / "infra" / "cfn" / "stateful.yaml"
    text = stateful.read_text()
    assert "      StorageEncrypted: true\n" in text
    stateful.write_text(
        text.replace("      StorageEncrypted: true\n", "      StorageEncrypted: maybe\n")
    )
    result = lint(project, "dev")
    assert result.returncode != 0
    assert "E3012" in result.stdout and "stateful.yaml" in result.stdout
    assert "infrastructure lint clean" not in result.stdout
