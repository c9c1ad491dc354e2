"""localstack/: Docker is not available here, so the compose file and the init hook are
checked structurally, and the hook is run against a recording stand-in for `awslocal`."""

from __future__ import annotations

import json
import os
import shlex
import subprocess

import pytest
import yaml

from tests.infra.infra_support import ROOT

LOCALSTACK = ROOT / "localstack"
COMPOSE = LOCALSTACK / "docker-compose.yml"
INIT = LOCALSTACK / "init" / "ready.d" / "10-resources.sh"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def published_ports(service: dict) -> set[int]:
    return {int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in service.get("ports", [])}


def test_compose_declares_localstack_and_postgres(compose):
    services = compose["services"]
    localstack, postgres = services["localstack"], services["postgres"]
    assert localstack["image"].startswith("localstack/localstack:")
    assert 4566 in published_ports(localstack)
    assert set(localstack["environment"]["SERVICES"].split(",")) >= {"ssm", "sqs", "s3"}
    assert any(v.endswith(":/etc/localstack/init/ready.d:ro") for v in localstack["volumes"])
    assert postgres["image"] == "postgres:15"
    assert 5432 in published_ports(postgres)
    for service in (localstack, postgres):
        assert service["healthcheck"]["test"], service["image"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def test_compose_database_matches_the_parameter(compose):
    env = compose["services"]["postgres"]["environment"]
    url = f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@localhost:5432/"
    assert url + env["POSTGRES_DB"] in INIT.read_text()


def test_init_script_is_executable_strict_bash():
    assert os.access(INIT, os.X_OK)
    text = INIT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    subprocess.run(["bash", "-n", str(INIT)], check=True)


FAKE_AWSLOCAL = r"""#!/usr/bin/env bash
# Records each call as a JSON list and answers the --query lookups the hook makes.
python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@" >> "$AWSLOCAL_LOG"
case "$*" in
  *"get-queue-attributes"*) echo "arn:aws:sqs:eu-west-1:000000000000:lifemonitor-refresh-dev-dlq" ;;
  *"create-queue"*) echo "http://localhost:4566/queue/eu-west-1/000000000000/queue" ;;
  *"head-bucket"*) exit 254 ;;
esac
"""


@pytest.fixture(scope="module")
def init_calls(tmp_path_factory) -> list[list[str]]:
    tmp = tmp_path_factory.mktemp("awslocal")
    fake = tmp / "awslocal"
    fake.write_text(FAKE_AWSLOCAL)
    fake.chmod(0o755)
    log = tmp / "calls.jsonl"
    env = {
        "PATH": f"{tmp}{os.pathsep}{os.environ['PATH']}",
        "AWSLOCAL_LOG": str(log),
        "AWS_DEFAULT_REGION": "eu-west-1",
    }
    result = subprocess.run(
        ["bash", str(INIT)], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return [json.loads(line) for line in log.read_text().splitlines()]


def find_call(calls, *words) -> list[str]:
    matches = [c for c in calls if all(w in c for w in words)]
    assert matches, f"no awslocal call with {words}: {[shlex.join(c) for c in calls]}"
    return matches[0]


def option(call: list[str], name: str) -> str:
    return call[call.index(name) + 1]


def test_init_creates_the_queue_with_a_dead_letter_queue(init_calls):
    find_call(init_calls, "create-queue", "lifemonitor-refresh-dev-dlq")
    call = find_call(init_calls, "create-queue", "lifemonitor-refresh-dev")
    attributes = json.loads(option(call, "--attributes"))
    assert int(attributes["VisibilityTimeout"]) >= 720
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(":lifemonitor-refresh-dev-dlq")
    assert int(redrive["maxReceiveCount"]) == 5


def test_init_creates_the_private_bucket(init_calls):
    call = find_call(init_calls, "s3api", "create-bucket")
    assert option(call, "--bucket") == "lifemonitor-dev-crates"
    find_call(init_calls, "put-public-access-block")


def test_init_puts_the_database_url_as_a_secure_string(init_calls):
    call = find_call(init_calls, "ssm", "put-parameter")
    assert option(call, "--name") == "/lifemonitor/dev/database/url"
    assert option(call, "--type") == "SecureString"
    assert option(call, "--value").startswith("postgresql://")
    assert "--overwrite" in call


def test_localstack_readme_explains_the_endpoint():
    text = (LOCALSTACK / "README.md").read_text()
    for needle in ("AWS_ENDPOINT_URL=http://localhost:4566", "LM_SECRETS_BACKEND=ssm"):
        assert needle in text
