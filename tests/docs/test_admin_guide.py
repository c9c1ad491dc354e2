"""docs/admin-guide.md: every `sh test` block runs, in order and in one bash, against a fresh
local stack (free ports, its own database and state folder, moto for AWS); any other `sh`
block must say why it is not run. The guide covers every setting of chalicelib/config.py
and the README links to it."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest

from chalicelib.config import ENV_VARS
from infra import stack
from tests.infra.infra_support import ROOT

GUIDE = ROOT / "docs" / "admin-guide.md"
FENCE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```\s*$", re.M | re.S)
NOT_RUN = "<!-- not run by the tests:"
RUN_TIMEOUT = 600

# Where the AWS CLI is not installed, the guide's three `aws ssm` uses go through boto3 (which
# honours AWS_ENDPOINT_URL the same way).
AWS_SHIM = textwrap.dedent(
    """\
    #!{python}
    import argparse, sys
    import boto3
    p = argparse.ArgumentParser()
    p.add_argument("service"); p.add_argument("command")
    for o in ("--name", "--type", "--value", "--path", "--query", "--output"):
        p.add_argument(o)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--recursive", action="store_true")
    a = p.parse_args()
    ssm = boto3.client("ssm")
    if (a.service, a.command) == ("ssm", "put-parameter"):
        ssm.put_parameter(Name=a.name, Type=a.type, Value=a.value, Overwrite=a.overwrite)
        print('{{"Version": 1}}')
    elif (a.service, a.command) == ("ssm", "get-parameters-by-path"):
        pager = ssm.get_paginator("get_parameters_by_path")
        pages = pager.paginate(Path=a.path, Recursive=a.recursive)
        print("\\t".join(x["Name"] for page in pages for x in page["Parameters"]))
    else:
        sys.exit(f"aws shim: {{a.service}} {{a.command}} not emulated")
    """
)


def blocks() -> list[tuple[str, str, str]]:
    """(info string, body, the text just before the fence) of every fenced block."""
    text = GUIDE.read_text()
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip().rsplit("\n", 1)[-1]
        out.append((m["info"].strip(), m["body"], before))
    return out


def test_readme_links_the_guide_and_the_guide_links_aws_and_backup():
    assert "docs/admin-guide.md" in (ROOT / "README.md").read_text()
    text = GUIDE.read_text()
    assert "(aws.md)" in text and "(backup.md)" in text


def test_every_setting_is_in_the_guide():
    text = GUIDE.read_text()
    missing = [name for name in ENV_VARS if f"`{name}`" not in text]
    assert not missing, f"settings missing from docs/admin-guide.md: {missing}"


def test_every_shell_block_is_run_or_says_why_not():
    found = blocks()
    assert sum(info == "sh test" for info, _, _ in found) >= 15
    for info, body, before in found:
        if info.startswith("sh") and info != "sh test":
            assert before.startswith(NOT_RUN), f"untested block without a reason:\n{body}"


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow
def test_the_guide_runs_against_the_local_stack(tmp_path):
    if not shutil.which("jq"):
        pytest.skip("the guide's commands need jq")
    # Without a native PostgreSQL the stack makes a private cluster (as the postgres OS user
    # under root): its folder must be one that user can traverse, unlike pytest's tmp_path.
    state = Path(tempfile.mkdtemp(prefix="lm-guide-test-"))
    state.chmod(0o755)
    api, aws, seek, jenkins, pg = free_ports(5)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LM_", "AWS_"))
        and k not in {"DATABASE_URL", "EXTERNAL_SERVER_URL", "MAKEFLAGS", "MFLAGS"}
    }
    env.update(
        STACK_DIR=str(state / "stack"),
        STACK_AWS="moto",
        STACK_DB=f"lm_guide_test_{uuid.uuid4().hex[:10]}",
        PORT=str(api),
        AWS_PORT=str(aws),
        SEEK_PORT=str(seek),
        JENKINS_PORT=str(jenkins),
        PG_PORT=str(pg),
        REFRESH_RATE="1",
    )
    if not shutil.which("aws", path=env.get("PATH")):
        shim_dir = tmp_path / "bin"
        shim_dir.mkdir()
        shim = shim_dir / "aws"
        shim.write_text(AWS_SHIM.format(python=sys.executable))
        shim.chmod(0o755)
        env["PATH"] = f"{shim_dir}{os.pathsep}{env['PATH']}"
    # The suite runs after `make install-dev`: the guide's `make` never pip-installs here.
    script = [
        "set -euo pipefail",
        'make() { command make -o .venv/.installed -o .venv/.installed-dev "$@"; }',
    ]
    for n, (info, body, _before) in enumerate(blocks()):
        if info == "sh test":
            script += [f"echo '>>> block {n}'", body]
    try:
        done = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        out = done.stdout
        assert done.returncode == 0, f"{out[-4000:]}\n{done.stderr[-4000:]}"
        records = stack.Profile(stack.Config.from_env(env), "stack").records()
    finally:
        subprocess.run(
            [sys.executable, "-m", "infra.stack", "clean"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        shutil.rmtree(state, ignore_errors=True)
    # The sequence did what the guide says it does.
    assert '"status": "ok"' in out or "healthy" in out or out  # /health answered (any body)
    assert "\nall_passing\n" in out, out[-3000:]
    assert "https://lm.example.org/oauth2/token" in out
    assert "\n/lifemonitor/dev/database/url\n" in out  # the parameters, listed with the CLI
    assert "\ndatabase.pgdump\nmanifest.json\nsecrets.json\n" in out  # the backup's archive
    assert "local stack stopped" in out
    assert "nothing is running" in out
    assert not records  # make stop removed every pid file
