"""localstack/: Docker is not available here, so the compose file is checked structurally;
the init script (Python, boto3) runs for real against moto, twice, to show it converges."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import boto3
import pytest
import yaml
from moto import mock_aws

from infra.stack import load_init
from tests.infra.infra_support import ROOT

LOCALSTACK = ROOT / "localstack"
COMPOSE = LOCALSTACK / "docker-compose.yml"
INIT = LOCALSTACK / "init" / "ready.d" / "10_resources.py"
JOBS = LOCALSTACK / "jenkins" / "init.groovy.d" / "10-jobs.groovy"
REGION = "eu-west-1"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def published(service: dict) -> list[tuple[str, str, int]]:
    """(host ip, host port spec, container port) of each published port."""
    out = []
    for spec in service.get("ports", []):
        ip, rest = str(spec).split(":", 1)
        host, container = rest.rsplit(":", 1)
        out.append((ip, host, int(container.split("/")[0])))
    return out


def test_compose_declares_the_four_services_with_health_checks(compose):
    services = compose["services"]
    assert services["localstack"]["image"].startswith("localstack/localstack:")
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["seek"]["image"].startswith("fairdom/seek")
    assert services["jenkins"]["image"] == "jenkins/jenkins:lts"
    for name in ("localstack", "postgres", "seek", "jenkins"):
        test = " ".join(services[name]["healthcheck"]["test"])
        assert test.startswith("CMD"), name
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert set(services["localstack"]["environment"]["SERVICES"].split(",")) >= {
        "ssm",
        "sqs",
        "s3",
        "ses",
    }


def test_ports_are_loopback_only_and_configurable(compose):
    expected = {
        "localstack": ("AWS_PORT", "4566", 4566),
        "postgres": ("PG_PORT", "5433", 5432),
        "seek": ("SEEK_PORT", "3000", 3000),
        "jenkins": ("JENKINS_PORT", "8080", 8080),
    }
    for name, (var, default, container) in expected.items():
        [(ip, host, inside)] = published(compose["services"][name])
        assert ip == "127.0.0.1", name
        assert host == f"${{{var}:-{default}}}", name
        assert inside == container, name


def test_postgres_does_not_take_the_native_port_by_default(compose):
    [(_ip, host, _inside)] = published(compose["services"]["postgres"])
    assert not host.endswith(":-5432}")


def test_the_init_hook_is_mounted_and_finds_the_compose_database(compose):
    localstack = compose["services"]["localstack"]
    assert any(v.endswith(":/etc/localstack/init/ready.d:ro") for v in localstack["volumes"])
    env = compose["services"]["postgres"]["environment"]
    user, password, db = env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]
    url = localstack["environment"]["LM_LOCAL_DATABASE_URL"]
    assert url == f"postgresql://{user}:{password}@localhost:${{PG_PORT:-5433}}/{db}"
    assert localstack["environment"]["AWS_ENDPOINT_URL"] == "http://localhost:4566"


def test_jenkins_makes_a_passing_and_a_failing_job(compose):
    jenkins = compose["services"]["jenkins"]
    assert "runSetupWizard=false" in jenkins["environment"]["JAVA_OPTS"]
    assert any("init.groovy.d" in v for v in jenkins["volumes"])
    text = JOBS.read_text()
    assert "test:" in text and "exit 0" in text
    assert "failing:" in text and "exit 1" in text
    assert "job/test/lastCompletedBuild" in " ".join(jenkins["healthcheck"]["test"])


def test_seek_preload_is_a_one_shot_under_the_preload_profile(compose):
    preload = compose["services"]["seek-preload"]
    assert preload["image"] == "python:3.12-slim"
    # Only with `--profile preload`: SEEK's first account and project come from its web UI.
    assert preload["profiles"] == ["preload"]
    assert preload["restart"] == "no"
    assert preload["depends_on"] == {
        "seek": {"condition": "service_healthy"},
        "jenkins": {"condition": "service_healthy"},
    }
    # The project, read-only (relative to the compose file: its parent is the checkout).
    [volume] = preload["volumes"]
    source, target, mode = volume.split(":")
    assert ((LOCALSTACK / source).resolve(), target, mode) == (ROOT, "/project", "ro")
    assert preload["working_dir"] == "/project"
    assert {"SEEK_USER", "SEEK_PASSWORD", "SEEK_TOKEN", "SEEK_PROJECT"} <= set(
        preload["environment"]
    )
    command = preload["command"]
    assert command[:3] == ["python", "-m", "infra.seek_preload"]
    options = dict(zip(command[3::2], command[4::2], strict=True))
    assert options["--url"] == "http://seek:3000"  # the service name and its container port
    assert options["--wait"] == "600"
    assert options["--jenkins-url"].endswith(":-http://jenkins:8080/}")
    # The seek service answers what the script waits for.
    assert "/workflows.json" in " ".join(compose["services"]["seek"]["healthcheck"]["test"])


def test_the_preload_module_runs_in_a_plain_python():
    # The module the command names exists under the mounted project, and its --help runs
    # without site-packages (-S), as in python:3.12-slim.
    assert (ROOT / "infra" / "seek_preload.py").is_file()
    done = subprocess.run(
        [sys.executable, "-S", "-m", "infra.seek_preload", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for option in (
        "--url",
        "--user",
        "--password",
        "--token",
        "--project",
        "--jenkins-url",
        "--wait",
    ):
        assert option in done.stdout


def test_the_readme_gives_the_preload_command():
    text = " ".join((LOCALSTACK / "README.md").read_text().split())
    assert "--profile preload up seek-preload" in text
    assert "SEEK_USER=… SEEK_PASSWORD=… SEEK_PROJECT=…" in text


@pytest.fixture
def aws(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield


def test_init_creates_queues_dlqs_bucket_identity_and_parameters(aws):
    init = load_init()
    result = init.ensure_resources(
        "dev", region=REGION, database_url="postgresql://u@h:5433/db", parameters={"a/b": "c"}
    )
    sqs = boto3.client("sqs", region_name=REGION)
    attrs = sqs.get_queue_attributes(QueueUrl=result["queue_url"], AttributeNames=["All"])[
        "Attributes"
    ]
    assert result["queue_url"].endswith("/lifemonitor-refresh-dev")
    assert int(attrs["VisibilityTimeout"]) == 720
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(":lifemonitor-refresh-dev-dlq")
    assert int(redrive["maxReceiveCount"]) == 5
    webhooks = sqs.get_queue_attributes(
        QueueUrl=result["webhook_queue_url"], AttributeNames=["All"]
    )["Attributes"]
    assert result["webhook_queue_url"].endswith("/lifemonitor-webhooks-dev")
    assert int(webhooks["VisibilityTimeout"]) == 360
    assert json.loads(webhooks["RedrivePolicy"])["deadLetterTargetArn"].endswith(
        ":lifemonitor-webhooks-dev-dlq"
    )

    s3 = boto3.client("s3", region_name=REGION)
    block = s3.get_public_access_block(Bucket="lifemonitor-dev-crates")
    assert all(block["PublicAccessBlockConfiguration"].values())
    rules = s3.get_bucket_encryption(Bucket="lifemonitor-dev-crates")
    assert "AES256" in json.dumps(rules["ServerSideEncryptionConfiguration"])

    ses = boto3.client("ses", region_name=REGION)
    assert init.DEFAULT_SENDER in ses.list_identities()["Identities"]

    ssm = boto3.client("ssm", region_name=REGION)
    param = ssm.get_parameter(Name="/lifemonitor/dev/database/url", WithDecryption=True)
    assert param["Parameter"]["Type"] == "SecureString"
    assert param["Parameter"]["Value"] == "postgresql://u@h:5433/db"
    assert (
        ssm.get_parameter(Name="/lifemonitor/dev/a/b", WithDecryption=True)["Parameter"]["Value"]
        == "c"
    )


def test_init_is_idempotent_and_converges(aws):
    init = load_init()
    first = init.ensure_resources("dev", region=REGION, database_url="postgresql://one")
    sqs = boto3.client("sqs", region_name=REGION)
    # Someone changed the queue by hand: the next run sets it back, without failing.
    sqs.set_queue_attributes(QueueUrl=first["queue_url"], Attributes={"VisibilityTimeout": "30"})
    second = init.ensure_resources("dev", region=REGION, database_url="postgresql://two")
    assert second["queue_url"] == first["queue_url"]
    attrs = sqs.get_queue_attributes(QueueUrl=first["queue_url"], AttributeNames=["All"])
    assert attrs["Attributes"]["VisibilityTimeout"] == "720"
    assert len(sqs.list_queues()["QueueUrls"]) == 4  # refresh and webhooks, each with a DLQ
    ssm = boto3.client("ssm", region_name=REGION)
    value = ssm.get_parameter(Name="/lifemonitor/dev/database/url", WithDecryption=True)
    assert value["Parameter"]["Value"] == "postgresql://two"


def test_init_script_runs_standalone_and_fails_in_one_line():
    # Nothing listens on port 9 of loopback: a clear one-line error, exit status 1.
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_MAX_ATTEMPTS": "1",
    }
    done = subprocess.run(
        [sys.executable, str(INIT), "--stage", "dev"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot create the resources on "), (
        done.stderr
    )
    assert "Traceback" not in done.stderr


def test_localstack_readme_explains_the_endpoint():
    text = (LOCALSTACK / "README.md").read_text()
    for needle in ("AWS_ENDPOINT_URL", "LM_SECRETS_BACKEND=ssm", "make start", "10_resources.py"):
        assert needle in text
