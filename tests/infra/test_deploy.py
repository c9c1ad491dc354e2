"""Deploy and the admin doors (infra/deploy.py, infra/remote_admin.py, infra/invoke.py and
their make targets). Nothing may reach AWS: `aws` and `chalice` are recorders on PATH that
log their arguments (and the payload they were given) and answer like the real tools."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.infra_support import ROOT

RECORDER = r"""#!{python}
import json, os, sys
args = sys.argv[1:]
entry = {{"tool": os.path.basename(sys.argv[0]), "args": args}}
if entry["tool"] == "chalice" and args[:1] == ["invoke"]:
    entry["stdin"] = sys.stdin.read()
if "--payload" in args:
    source = args[args.index("--payload") + 1]
    assert source.startswith("fileb://"), source
    path = source[len("fileb://"):]
    entry["payload"] = open(path).read()
    entry["payload_mode"] = oct(os.stat(path).st_mode & 0o777)
    entry["payload_dir_mode"] = oct(os.stat(os.path.dirname(path)).st_mode & 0o777)
with open(os.environ["RECORDER_LOG"], "a") as fh:
    fh.write(json.dumps(entry) + "\n")
default = '{{"exit_code": 0, "stdout": "ok\\n", "stderr": ""}}'
response = os.environ.get("RECORDER_RESPONSE", default)
if args[:2] == ["lambda", "invoke"]:
    with open(args[-1], "w") as fh:
        fh.write(response)
    print(json.dumps({{"StatusCode": 200, "ExecutedVersion": "$LATEST"}}))
elif args[:1] == ["invoke"]:
    print(response)
elif args[:2] == ["cloudformation", "package"]:
    out = args[args.index("--output-template-file") + 1]
    with open(out, "w") as fh:
        fh.write("Resources: {{}}\n")
elif args[:2] == ["cloudformation", "describe-stacks"]:
    print("https://abc.execute-api.eu-west-1.amazonaws.com/api/")
"""

ADMIN = [sys.executable, "-m", "infra.remote_admin"]
DEPLOY = [sys.executable, "-m", "infra.deploy"]
OPTS = ["--no-package", "--param", "ExternalServerUrl=https://lm.example"]


@pytest.fixture
def recorders(tmp_path) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("aws", "chalice"):
        path = bin_dir / name
        path.write_text(RECORDER.format(python=sys.executable))
        path.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LM_", "DATABASE_URL"))}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
        RECORDER_LOG=str(log),
        AWS=str(bin_dir / "aws"),
        CHALICE=str(bin_dir / "chalice"),
    )
    return {"env": env, "log": log, "bin": bin_dir}


def calls(recorders) -> list[dict]:
    log = recorders["log"]
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def run(args: list[str], env: dict, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=120
    )


def make(*args: str, env: dict, stdin: str | None = None) -> subprocess.CompletedProcess:
    # -o install…: the shared venv is installed; never let make run pip here.
    return run(["make", "-s", "-o", "install", "-o", "install-dev", *args], env, stdin)


# --- make admin STAGE=… ---------------------------------------------------------------------


def test_make_admin_with_a_stage_invokes_the_deployed_function(recorders):
    result = make("admin", "STAGE=prod", "ARGS=registry list --json", env=recorders["env"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
    (call,) = calls(recorders)
    assert call["tool"] == "aws"
    args = call["args"]
    assert args[:2] == ["lambda", "invoke"]
    assert args[args.index("--function-name") + 1] == "lifemonitor-prod-admin"
    assert int(args[args.index("--cli-read-timeout") + 1]) > 300  # the function's timeout
    assert json.loads(call["payload"]) == {"args": ["registry", "list", "--json"]}


def test_the_admin_commands_exit_code_and_streams_come_back(recorders):
    env = {
        **recorders["env"],
        "RECORDER_RESPONSE": json.dumps(
            {"exit_code": 1, "stdout": "", "stderr": "error: registry 'x' not found\n"}
        ),
    }
    result = make("admin", "STAGE=prod", "ARGS=registry show x", env=env)
    assert result.returncode != 0
    assert "error: registry 'x' not found" in result.stderr


def test_a_password_travels_in_a_private_file_not_on_the_command_line(recorders):
    result = run(
        [*ADMIN, "--stage", "dev", "--", "user", "create", "bob", "--password-stdin"],
        recorders["env"],
        stdin="hunter2\n",
    )
    assert result.returncode == 0, result.stderr
    (call,) = calls(recorders)
    assert "hunter2" not in " ".join(call["args"])
    assert json.loads(call["payload"]) == {
        "args": ["user", "create", "bob", "--password-stdin"],
        "stdin": "hunter2\n",
    }
    assert call["payload_dir_mode"] == "0o700"


def test_a_crashed_function_is_a_failure(recorders):
    env = {**recorders["env"], "RECORDER_RESPONSE": '{"errorMessage": "boom", "errorType": "X"}'}
    result = run(
        [sys.executable, "-m", "infra.remote_admin", "--stage", "dev", "db", "current"], env
    )
    assert result.returncode == 1
    assert "the function failed" in result.stderr and "boom" in result.stderr


def test_chalice_deploy_stages_use_chalice_invoke(recorders, tmp_path, monkeypatch):
    from infra import remote_admin

    project = tmp_path / "project"
    (project / ".chalice" / "deployed").mkdir(parents=True)
    (project / ".chalice" / "deployed" / "dev.json").write_text("{}")
    assert remote_admin.deployed_by_chalice("dev", project)
    assert not remote_admin.deployed_by_chalice("prod", project)
    for name, value in recorders["env"].items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(remote_admin, "ROOT", project)
    monkeypatch.setattr(remote_admin, "deployed_by_chalice", lambda s, p=project: s == "dev")
    assert remote_admin.main(["--stage", "dev", "--", "db", "current"]) == 0
    (call,) = calls(recorders)
    assert call["tool"] == "chalice"
    assert call["args"] == ["invoke", "-n", "admin", "--stage", "dev"]
    assert json.loads(call["stdin"]) == {"args": ["db", "current"]}


def test_bad_stage_names_and_empty_commands_are_refused(recorders):
    result = make("admin", "STAGE=Prod;rm", "ARGS=db current", env=recorders["env"])
    assert result.returncode != 0 and "invalid stage name" in result.stderr
    result = make("admin", "STAGE=prod", "ARGS=", env=recorders["env"])
    assert result.returncode != 0 and "no command" in result.stderr
    assert calls(recorders) == []


# --- make deploy ----------------------------------------------------------------------------


def test_deploy_packages_uploads_deploys_then_checks_the_schema(recorders, tmp_path):
    from infra import deploy

    out = tmp_path / "out"
    out.mkdir()
    (out / "sam.json").write_text("{}")
    result = run(
        [*DEPLOY, "--stage", "prod", "--artifacts", "my-artifacts", "--out", str(out), *OPTS],
        recorders["env"],
    )
    assert result.returncode == 0, result.stderr
    recorded = [c["args"] for c in calls(recorders)]
    assert [a[:2] for a in recorded] == [
        ["cloudformation", "package"],
        ["cloudformation", "deploy"],
        ["cloudformation", "describe-stacks"],
        ["lambda", "invoke"],
    ]
    package, deploy_, _describe, check = recorded
    assert package[package.index("--s3-bucket") + 1] == "my-artifacts"
    assert package[package.index("--template-file") + 1] == str(out / "sam.json")
    assert deploy_[deploy_.index("--stack-name") + 1] == "lifemonitor-prod"
    assert deploy_[deploy_.index("--template-file") + 1] == str(out / "packaged.yaml")
    assert {"CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"} <= set(deploy_)
    assert (
        deploy_[deploy_.index("--parameter-overrides") + 1]
        == "ExternalServerUrl=https://lm.example"
    )
    assert "--no-fail-on-empty-changeset" in deploy_
    assert check[check.index("--function-name") + 1] == "lifemonitor-prod-admin"
    assert "https://abc.execute-api" in result.stdout
    # The package step it skipped here is infra/package.sh (tests/infra/test_infra_package.py).
    first = deploy.package_commands("aws", "prod", out, "b")[0]
    assert first[1:] == [str(ROOT / "infra" / "package.sh"), "prod", str(out)]


def test_make_deploy_needs_the_artifacts_bucket(recorders):
    result = make("deploy", "STAGE=prod", env=recorders["env"])
    assert result.returncode != 0 and "ARTIFACTS" in result.stdout + result.stderr
    assert calls(recorders) == []


def test_make_deploy_stateful_passes_the_stage_and_parameters(recorders):
    result = make(
        "deploy-stateful",
        "STAGE=prod",
        "PARAMS=EnableRdsProxy=true DbMultiAz=true",
        env=recorders["env"],
    )
    assert result.returncode == 0, result.stderr
    (call,) = calls(recorders)
    args = call["args"]
    assert args[args.index("--stack-name") + 1] == "lifemonitor-prod-stateful"
    assert args[args.index("--template-file") + 1].endswith("infra/cfn/stateful.yaml")
    overrides = args[args.index("--parameter-overrides") + 1 :]
    assert overrides == ["Stage=prod", "EnableRdsProxy=true", "DbMultiAz=true"]


# --- the admin handler invoked locally as Lambda does ---------------------------------------


def test_invoke_admin_locally_runs_the_lambda_handler(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LM_", "DATABASE"))}
    env.update(LM_DATA_DIR=str(tmp_path / "data"), LM_SECRETS_BACKEND="file")
    result = make("invoke-admin", "ARGS=db upgrade --json", env=env)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["exit_code"] == 0
    assert payload["result"]["to"] == payload["result"]["head"]
    result = run(
        [sys.executable, "-m", "infra.invoke", "admin", '{"args": ["registry", "show", "x"]}'],
        env,
    )
    assert result.returncode == 1  # the command's exit code
    answer = json.loads(result.stdout)
    assert answer["exit_code"] == 1 and "no registry named" in answer["stderr"]
    result = run([sys.executable, "-m", "infra.invoke", "admin", "{not json"], env)
    assert result.returncode == 2 and "not JSON" in result.stderr


def test_invoke_gives_the_handler_a_lambda_context(monkeypatch):
    from infra import invoke

    env, memory, timeout = invoke.chalice_settings("prod", "admin")
    assert env["LM_STAGE"] == "prod" and env["LM_SECRETS_BACKEND"] == "ssm"
    assert (memory, timeout) == (512, 300)
    context = invoke.LambdaContext("lifemonitor-prod-admin", memory, timeout)
    assert 299_000 < context.get_remaining_time_in_millis() <= 300_000
    assert context.function_name == "lifemonitor-prod-admin"
    assert Path(context.log_group_name).name == "lifemonitor-prod-admin"
