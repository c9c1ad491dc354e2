"""infra/package.sh: `chalice package` + infra/cfn/chalice-merge.yaml, linted and checked.

Packaging runs once for the module, on a copy of the project whose requirements.txt is
empty: resolving the real requirements needs PyPI (the machines' pip mirror lacks most of
the pinned versions and their cp312 wheels) and takes 15-20 s when nothing is cached, while
everything this module checks — the merged template, the runtime, app code and migrations
in the zip — is independent of the third-party wheels. `make package` packages the real
thing (infra/README.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.infra.infra_support import (
    MERGE,
    PACKAGE_SH,
    ROOT,
    cfn_lint,
    clean_env,
    load_cfn,
)

STAGE = "dev"
FUNCTIONS = {  # logical id in Chalice's SAM output -> Chalice function name
    "APIHandler": "api_handler",
    "Refresh": "refresh",
    "Worker": "worker",
    "Admin": "admin",
    "Notify": "notify",
    "Housekeeping": "housekeeping",
    "WebhookWorker": "webhook_worker",
}
NEEDS_312 = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="package.sh refuses Python < 3.12 (Lambda runtime)"
)


def copy_project(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("chalicelib", "migrations", "infra"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore, symlinks=True)
    shutil.copy2(ROOT / "app.py", dest / "app.py")
    (dest / ".chalice").mkdir()
    for path in (ROOT / ".chalice").glob("*.json"):
        shutil.copy2(path, dest / ".chalice" / path.name)
    (dest / "requirements.txt").write_text("# emptied by tests/infra: no pip, no network\n")
    return dest


def run_package(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(project / "infra" / "package.sh"), *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(PIP_NO_INDEX="1", **env),
        check=False,
    )


@pytest.fixture(scope="module")
def package_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """One `infra/package.sh dev OUT` (which also runs cfn-lint on both templates)."""
    if sys.version_info < (3, 12):
        pytest.skip("package.sh refuses Python < 3.12 (the Lambda runtime follows it)")
    project = copy_project(tmp_path_factory.mktemp("project"))
    out = project / "out" / STAGE
    result = run_package(project, STAGE, str(out))
    assert result.returncode == 0, f"package.sh failed:\n{result.stdout}\n{result.stderr}"
    return result, out


@pytest.fixture(scope="module")
def packaged(package_run) -> Path:
    return package_run[1]


@pytest.fixture(scope="module")
def sam(packaged) -> dict:
    assert not (packaged / "sam.yaml").exists()
    return json.loads((packaged / "sam.json").read_text())


@NEEDS_312
def test_merged_template_passes_cfn_lint(package_run):
    result, out = package_run
    assert "==> cfn-lint sam.json infra/cfn/stateful.yaml" in result.stdout  # package.sh's
    lint = cfn_lint(out / "sam.json")  # and independently of the script
    assert lint.returncode == 0, lint.stdout + lint.stderr


@NEEDS_312
def test_generated_resource_names_are_the_ones_the_merge_template_patches(sam):
    resources = sam["Resources"]
    for logical_id in FUNCTIONS:
        assert resources[logical_id]["Type"] == "AWS::Serverless::Function"
        assert resources[logical_id]["Properties"]["Handler"].startswith("app.")
    assert resources["RestAPI"]["Type"] == "AWS::Serverless::Api"
    # Every resource the merge template touches existed before the merge (has a Type).
    for logical_id in load_cfn(MERGE)["Resources"]:
        assert "Type" in resources[logical_id], logical_id


@NEEDS_312
def test_runtime_is_python_312_or_newer(sam):
    runtimes = {sam["Resources"][fn]["Properties"]["Runtime"] for fn in FUNCTIONS}
    assert runtimes <= {"python3.12", "python3.13"}, runtimes


@NEEDS_312
def test_worker_reports_batch_item_failures_from_the_stage_queue(sam):
    event = sam["Resources"]["Worker"]["Properties"]["Events"]["WorkerSqsEventSource"]
    assert event["Type"] == "SQS"
    props = event["Properties"]
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["BatchSize"] == 10
    assert props["MaximumBatchingWindowInSeconds"] == 5
    template, variables = props["Queue"]["Fn::Sub"]
    assert template == "${RefreshQueueArn}"
    imported = variables["RefreshQueueArn"]["Fn::ImportValue"]
    assert imported == {"Fn::Sub": "lifemonitor-${Stage}-RefreshQueueArn"}


@NEEDS_312
def test_webhook_worker_reads_the_stage_webhooks_queue(sam):
    props = sam["Resources"]["WebhookWorker"]["Properties"]["Events"][
        "WebhookWorkerSqsEventSource"
    ]["Properties"]
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    template, variables = props["Queue"]["Fn::Sub"]
    assert template == "${WebhooksQueueArn}"
    assert variables["WebhooksQueueArn"]["Fn::ImportValue"] == {
        "Fn::Sub": "lifemonitor-${Stage}-WebhooksQueueArn"
    }


@NEEDS_312
def test_functions_are_named_wired_to_the_vpc_and_configured(sam):
    assert sam["Parameters"]["Stage"]["Default"] == STAGE
    assert sam["Parameters"]["Stage"]["AllowedValues"] == [STAGE]
    for logical_id, name in FUNCTIONS.items():
        props = sam["Resources"][logical_id]["Properties"]
        assert props["FunctionName"] == {"Fn::Sub": f"lifemonitor-${{Stage}}-{name}"}
        variables = props["Environment"]["Variables"]
        assert variables["LM_STAGE"] == STAGE  # from .chalice/config.json, kept by the merge
        assert variables["LM_SECRETS_BACKEND"] == "ssm"
        assert variables["LM_SSM_PREFIX"] == {"Fn::Sub": "/lifemonitor/${Stage}/"}
        for var in ("LM_REFRESH_QUEUE_URL", "LM_WEBHOOK_QUEUE_URL", "LM_CRATE_BUCKET"):
            assert "Fn::ImportValue" in variables[var], var
        for var, condition, param in [
            ("LM_EMAIL_SENDER", "HasEmailSender", "EmailSender"),
            ("LM_GITHUB_CLIENT_ID", "HasGithubLogin", "GithubClientId"),
            ("LM_LSAAI_CLIENT_ID", "HasLsaaiLogin", "LsaaiClientId"),
        ]:
            assert variables[var] == {
                "Fn::If": [condition, {"Ref": param}, {"Ref": "AWS::NoValue"}]
            }, var
        vpc = props["VpcConfig"]
        assert len(vpc["SubnetIds"]) == 2
        assert len(vpc["SecurityGroupIds"]) == 1


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        ("", True),
        ("noreply@lifemonitor.example.org", True),
        ("lifemonitor.example.org", False),  # a domain is an identity, not a From address
        ("two words@example.org", False),
    ],
)
def test_email_sender_parameter_takes_an_address_or_nothing(value, allowed):
    import re

    pattern = load_cfn(MERGE)["Parameters"]["EmailSender"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, value)) is allowed


PROBLEM_KEYS = {"type", "title", "detail", "instance", "extra_info"}


@NEEDS_312
def test_gateway_responses_are_problem_json_with_cors(sam):
    responses = sam["Resources"]["RestAPI"]["Properties"]["GatewayResponses"]
    assert {"MISSING_AUTHENTICATION_TOKEN", "DEFAULT_4XX", "DEFAULT_5XX"} <= set(responses)
    missing = responses["MISSING_AUTHENTICATION_TOKEN"]
    assert missing["StatusCode"] == 404
    assert json.loads(missing["ResponseTemplates"]["application/json"]) == {
        "type": "about:blank",
        "title": "Resource not found",
        "status": 404,
        "detail": "No such route",
        "instance": None,
        "extra_info": {},
    }
    for kind, response in responses.items():
        headers = response["ResponseParameters"]["Headers"]
        assert headers["Content-Type"] == "'application/problem+json'", kind
        assert headers["Access-Control-Allow-Origin"] == "'*'", kind
        assert "ApiKey" in headers["Access-Control-Allow-Headers"], kind
        if kind.startswith("DEFAULT_"):
            # A status code here would overwrite every response type that falls back to it.
            assert "StatusCode" not in response, kind
        for content_type, body in response["ResponseTemplates"].items():
            assert content_type in {"application/json", "application/problem+json"}
            # `$context.error.messageString` is substituted already JSON-quoted.
            problem = json.loads(body.replace("$context.error.messageString", '"message"'))
            assert set(problem) >= PROBLEM_KEYS, kind
            # The body's status is the response's (absent where API Gateway decides it).
            assert problem.get("status") == response.get("StatusCode"), kind


@NEEDS_312
def test_sam_translator_turns_the_merge_into_the_real_resources(sam, monkeypatch):
    """What CloudFormation's SAM transform makes of it (offline, as cfn-lint does)."""
    from samtranslator.translator.transform import transform

    class NoManagedPolicies:
        def load(self):
            return {}

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    template = json.loads(json.dumps(sam))
    for logical_id in FUNCTIONS:
        template["Resources"][logical_id]["Properties"]["CodeUri"] = "s3://bucket/key.zip"
    out = transform(template, {}, NoManagedPolicies())["Resources"]
    mappings = [r for r in out.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    assert len(mappings) == 2  # the refresh worker and the webhook worker
    for mapping in mappings:
        assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    (api,) = [r for r in out.values() if r["Type"] == "AWS::ApiGateway::RestApi"]
    # In the Swagger body: a changed response changes the deployment hash, so it ships.
    gateway = api["Properties"]["Body"]["x-amazon-apigateway-gateway-responses"]
    assert gateway["MISSING_AUTHENTICATION_TOKEN"]["statusCode"] == "404"
    params = gateway["DEFAULT_5XX"]["responseParameters"]
    assert params["gatewayresponse.header.Content-Type"] == "'application/problem+json'"


@NEEDS_312
def test_deployment_zip_holds_the_app_and_the_migrations(packaged):
    names = set(zipfile.ZipFile(packaged / "deployment.zip").namelist())
    for required in (
        "app.py",
        "chalice/app.py",
        "chalicelib/migrate.py",
        "migrations/env.py",
        "migrations/versions/0001_initial_schema.py",
    ):
        assert required in names, required
    if (ROOT / "chalicelib" / "api" / "openapi.json").exists():
        assert "chalicelib/api/openapi.json" in names
    assert not any(n.startswith(("tests/", "infra/", "localstack/", "vendor/")) for n in names)


def fake_chalice(directory: Path, python: str) -> Path:
    script = directory / "chalice"
    script.write_text(f'#!/bin/sh\necho "chalice 1.34.0, python {python}, linux 6.1"\n')
    script.chmod(0o755)
    return script


def test_package_refuses_a_chalice_on_python_311(tmp_path):
    project = copy_project(tmp_path / "project")
    chalice = fake_chalice(tmp_path, "3.11.9")
    result = run_package(project, STAGE, str(tmp_path / "out"), CHALICE=str(chalice))
    assert result.returncode == 1
    assert "Python 3.11" in result.stderr
    assert not (tmp_path / "out").exists()
    assert not (project / "vendor").exists()


def test_package_checks_its_arguments(tmp_path):
    project = copy_project(tmp_path / "project")
    assert run_package(project).returncode == 2
    result = run_package(project, "Prod;rm", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "invalid stage name" in result.stderr
    result = run_package(project, "staging", str(tmp_path / "out"))
    assert result.returncode == 1
    assert "not in .chalice/config.json" in result.stderr


def test_package_script_is_strict_bash():
    text = PACKAGE_SH.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(PACKAGE_SH, os.X_OK)


def test_local_gateway_emulation_answers_unknown_routes_like_the_deployed_one():
    """`make run` (infra/local.py) and the merge template must agree on the 404 body."""
    local = pytest.importorskip("infra.local")
    template = load_cfn(MERGE)["Resources"]["RestAPI"]["Properties"]["GatewayResponses"]
    deployed = json.loads(
        template["MISSING_AUTHENTICATION_TOKEN"]["ResponseTemplates"]["application/json"]
    )
    assert deployed == local.NOT_FOUND_BODY


# --- deploy: migration before traffic, connection budget, alarms, roles ----------------------


def migrations_digest(root: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((root / "migrations" / "versions").glob("*.py")):
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


@NEEDS_312
def test_migration_runs_in_the_admin_function_before_traffic_shifts(sam):
    resources = sam["Resources"]
    migrate = resources["Migrate"]
    assert migrate["Type"].startswith("Custom::")
    props = migrate["Properties"]
    assert props["ServiceToken"] == {"Fn::GetAtt": ["Admin", "Arn"]}
    assert props["ServiceTimeout"] <= 900
    # Pinned by package.sh: a change of the migrations (only) triggers an Update.
    assert props["Migrations"] == migrations_digest(ROOT)
    for logical_id in ("APIHandler", "Worker", "Refresh"):
        assert resources[logical_id]["DependsOn"] == "Migrate", logical_id
    assert "DependsOn" not in resources["Admin"]  # the custom resource needs it first


@NEEDS_312
def test_reserved_concurrency_is_the_database_connection_budget(sam):
    resources, params = sam["Resources"], sam["Parameters"]

    def reserved(logical_id):
        value = resources[logical_id]["Properties"]["ReservedConcurrentExecutions"]
        condition, yes, no = value["Fn::If"]
        assert condition == "WithReservations" and no == {"Ref": "AWS::NoValue"}
        return params[yes["Ref"]]["Default"] if isinstance(yes, dict) else yes

    budget = {fn: reserved(fn) for fn in ("APIHandler", "Worker", "Refresh", "Admin")}
    assert budget["Refresh"] == 1 and budget["Admin"] == 1  # migrations never concurrent
    # The SQS event source never starts more workers than the reservation allows.
    event = resources["Worker"]["Properties"]["Events"]["WorkerSqsEventSource"]["Properties"]
    assert event["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "WorkerMaxConcurrency"}
    assert resources["Worker"]["Properties"]["ReservedConcurrentExecutions"]["Fn::If"][1] == {
        "Ref": "WorkerMaxConcurrency"
    }
    # One connection per container (LM_DB_POOL_SIZE is 1 in Lambda): the defaults must fit
    # the smallest instance (db.t4g.micro: max_connections ~ 80) with room for operators.
    assert sum(budget.values()) <= 40, budget


@NEEDS_312
def test_alarms_watch_error_rates_and_the_api(sam):
    resources = sam["Resources"]
    alarms = {k: v for k, v in resources.items() if v["Type"] == "AWS::CloudWatch::Alarm"}
    assert {
        "ApiErrorRateAlarm",
        "WorkerErrorRateAlarm",
        "RefreshErrorAlarm",
        "Api5xxRateAlarm",
    } <= set(alarms)
    for name in ("ApiErrorRateAlarm", "WorkerErrorRateAlarm"):
        metrics = {m["Id"]: m for m in alarms[name]["Properties"]["Metrics"]}
        assert "errors / invocations" in metrics["rate"]["Expression"]
        (dim,) = metrics["errors"]["MetricStat"]["Metric"]["Dimensions"]
        assert dim["Value"] == {"Ref": "APIHandler" if name.startswith("Api") else "Worker"}
    api = {m["Id"]: m for m in alarms["Api5xxRateAlarm"]["Properties"]["Metrics"]}
    dims = {d["Name"]: d["Value"] for d in api["errors"]["MetricStat"]["Metric"]["Dimensions"]}
    assert dims["ApiName"] == resources["RestAPI"]["Properties"]["Name"]
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"]["Fn::If"][0] == "WithAlarmTopic"


@NEEDS_312
def test_each_function_has_its_own_role_and_mail_is_opt_in(sam):
    resources = sam["Resources"]
    roles = {fn: resources[fn]["Properties"]["Role"]["Fn::GetAtt"][0] for fn in FUNCTIONS}
    assert len(set(roles.values())) == len(FUNCTIONS)
    for role in roles.values():
        assert resources[role]["Type"] == "AWS::IAM::Role"
    ses = resources["SesSendPolicy"]
    assert ses["Condition"] == "WithSes"
    assert {r["Ref"] for r in ses["Properties"]["Roles"]} <= set(roles.values())
    (statement,) = ses["Properties"]["PolicyDocument"]["Statement"]
    assert "identity/${SesIdentity}" in statement["Resource"]["Fn::Sub"]


def _wheel(directory: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel, written by hand (no build backend, no network)."""
    import base64
    import hashlib

    files = {
        f"{name}/__init__.py": b"VALUE = 42\n",
        f"{name}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        ).encode(),
        f"{name}-{version}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for path, data in files.items()
    )
    files[f"{name}-{version}.dist-info/RECORD"] = (
        record + f"{name}-{version}.dist-info/RECORD,,\n"
    ).encode()
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in files.items():
            zf.writestr(member, data)
    return path


@NEEDS_312
def test_package_is_built_offline_from_the_wheel_cache(tmp_path):
    """With wheels in WHEELHOUSE, pip reads only that folder (what `make wheels` fills)."""
    project = copy_project(tmp_path / "project")
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    _wheel(wheelhouse, "lm_cached_dep", "1.0")
    (project / "requirements.txt").write_text("lm_cached_dep==1.0\n")
    env = clean_env(WHEELHOUSE=str(wheelhouse), SKIP_LINT="1")
    env.pop("PIP_NO_INDEX", None)  # package.sh itself turns the index off
    result = subprocess.run(
        ["bash", str(project / "infra" / "package.sh"), STAGE, str(tmp_path / "out")],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"offline: requirements from the wheel cache {wheelhouse}" in result.stdout
    names = zipfile.ZipFile(tmp_path / "out" / "deployment.zip").namelist()
    assert "lm_cached_dep/__init__.py" in names
    # And a requirement the cache lacks fails instead of reaching for an index.
    (project / "requirements.txt").write_text("lm_not_cached==1.0\n")
    result = subprocess.run(
        ["bash", str(project / "infra" / "package.sh"), STAGE, str(tmp_path / "out2")],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert result.returncode != 0
