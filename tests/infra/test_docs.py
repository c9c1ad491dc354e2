"""The operator docs of this part (docs/aws.md, docs/backup.md, docs/https.md): every
`make` target they name exists, every `python -m` module they name runs `--help`, and the
backup page's commands run as written (on the embedded SQLite database, through make)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

from tests.infra.infra_support import ROOT

DOCS = [ROOT / "docs" / name for name in ("aws.md", "backup.md", "https.md")]


def code_lines() -> list[str]:
    lines = []
    for doc in DOCS:
        blocks = re.findall(r"```(?:sh|bash)\n(.*?)```", doc.read_text(), flags=re.S)
        for block in blocks:
            lines += [ln.strip() for ln in block.replace("\\\n", " ").splitlines() if ln.strip()]
    return lines


def make_targets() -> set[str]:
    out = subprocess.run(
        ["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_every_make_target_in_the_docs_exists():
    targets = make_targets()
    named = {m for line in code_lines() for m in re.findall(r"\bmake ([a-z][a-z-]*)", line)}
    assert named, "no make command found in the docs"
    assert named <= targets, sorted(named - targets)


def test_every_module_in_the_docs_runs():
    modules = {m for line in code_lines() for m in re.findall(r"python -m ([\w.]+)", line)}
    assert {"chalicelib.admin", "infra.invoke"} <= modules
    for module in sorted(modules):
        assert importlib.util.find_spec(module) is not None, module
        result = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, (module, result.stderr)


@pytest.fixture
def embedded_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LM_", "DATABASE"))}
    env.update(LM_DATA_DIR=str(tmp_path / "data"), LM_SECRETS_BACKEND="file", LM_STAGE="dev")
    return env


def sh(command: str, env: dict, cwd, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_backup_page_commands_run_as_written(embedded_env, tmp_path):
    """docs/backup.md: make backup FILE=… / make restore FILE=… [ARGS=--clean], and the
    passphrase piped into `python -m chalicelib.admin backup … --passphrase-stdin`."""
    py = sys.executable
    make = f"make -s -C {ROOT} -o install"
    for command in (
        "db upgrade",
        "user create alice",
        "registry add seek seek ID S https://seek:3000",
    ):
        assert sh(f"{py} -m chalicelib.admin {command}", embedded_env, ROOT).returncode == 0
    result = sh(f"{make} backup FILE={tmp_path}/lm.tar", embedded_env, ROOT)
    assert result.returncode == 0, result.stderr
    assert "IN CLEAR (file mode 0600" in result.stdout
    result = sh(
        f"printf '%s' \"$PASSPHRASE\" | {py} -m chalicelib.admin backup {tmp_path}/enc.tar "
        "--passphrase-stdin",
        {**embedded_env, "PASSPHRASE": "correct horse"},
        ROOT,
    )
    assert result.returncode == 0, result.stderr

    restored = {**embedded_env, "LM_DATA_DIR": str(tmp_path / "restored")}
    result = sh(f"{make} restore FILE={tmp_path}/lm.tar", restored, ROOT)
    assert result.returncode == 0, result.stderr
    assert "counts and checksums match" in result.stdout
    result = sh(f"{make} restore FILE={tmp_path}/lm.tar", restored, ROOT)
    assert result.returncode != 0 and "--clean" in result.stderr
    result = sh(f"{make} restore FILE={tmp_path}/lm.tar ARGS=--clean", restored, ROOT)
    assert result.returncode == 0, result.stderr
    result = sh(
        f"printf '%s' \"$PASSPHRASE\" | {py} -m chalicelib.admin restore {tmp_path}/enc.tar "
        "--passphrase-stdin --clean",
        {**restored, "PASSPHRASE": "correct horse"},
        ROOT,
    )
    assert result.returncode == 0, result.stderr
    shown = sh(f"{py} -m chalicelib.admin registry show seek --json", restored, ROOT)
    assert json.loads(shown.stdout)["client_secret"]  # back from the restored secrets
    assert sh(f"{make} restore", restored, ROOT).returncode == 2  # FILE is required
