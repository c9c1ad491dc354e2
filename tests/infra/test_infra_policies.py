"""The IAM policy files of the stages (.chalice/policy-<stage>.json, autogen_policy off)."""

from __future__ import annotations

import fnmatch
import json

import pytest

from tests.infra.infra_support import CHALICE_DIR, STAGES, chalice_config

# The only actions AWS offers no resource-level permissions for, among those we need.
RESOURCELESS_ACTIONS = {
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
    "logs:CreateLogGroup",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
}


def policy_file(stage: str) -> str:
    stage_config = chalice_config()["stages"][stage]
    return stage_config.get("iam_policy_file", f"policy-{stage}.json")


def load_policy(stage: str) -> dict:
    return json.loads((CHALICE_DIR / policy_file(stage)).read_text())


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def grants(policy: dict, action: str, resource: str) -> bool:
    """Whether an Allow statement covers action on resource (IAM wildcard matching)."""
    for st in policy["Statement"]:
        if st["Effect"] != "Allow":
            continue
        if not any(fnmatch.fnmatchcase(action, a) for a in as_list(st["Action"])):
            continue
        if any(fnmatch.fnmatchcase(resource, r) for r in as_list(st["Resource"])):
            return True
    return False


def test_every_stage_has_its_policy_file():
    config = chalice_config()
    assert config["autogen_policy"] is False
    assert set(config["stages"]) == set(STAGES)
    for stage in STAGES:
        assert (CHALICE_DIR / policy_file(stage)).is_file(), stage
    assert policy_file("prod") == "policy-prod.json"


@pytest.mark.parametrize("stage", STAGES)
def test_policy_is_valid_and_allows_only(stage):
    policy = load_policy(stage)
    assert policy["Version"] == "2012-10-17"
    sids = [st["Sid"] for st in policy["Statement"]]
    assert len(sids) == len(set(sids))
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow"
        assert set(st) <= {"Sid", "Effect", "Action", "Resource", "Condition"}
        for action in as_list(st["Action"]):
            assert "*" not in action, f"wildcard action {action}"


@pytest.mark.parametrize("stage", STAGES)
def test_no_star_resource_except_where_aws_requires_it(stage):
    for st in load_policy(stage)["Statement"]:
        resources = as_list(st["Resource"])
        if "*" in resources:
            assert set(as_list(st["Action"])) <= RESOURCELESS_ACTIONS, st["Sid"]
        for resource in resources:
            assert resource == "*" or resource.startswith("arn:aws:"), resource


@pytest.mark.parametrize("stage", STAGES)
def test_policy_covers_the_stage_and_nothing_of_the_others(stage):
    policy = load_policy(stage)
    prefix = f"arn:aws:ssm:eu-west-1:123456789012:parameter/lifemonitor/{stage}"
    for action in ("GetParametersByPath", "GetParameter", "PutParameter", "DeleteParameter"):
        assert grants(policy, f"ssm:{action}", prefix), action  # the path itself
        assert grants(policy, f"ssm:{action}", prefix + "/database/url"), action
        assert grants(policy, f"ssm:{action}", prefix + "/registries/x/client_secret"), action
    queue = f"arn:aws:sqs:eu-west-1:123456789012:lifemonitor-refresh-{stage}"
    for action in ("SendMessage", "ReceiveMessage", "DeleteMessage", "GetQueueAttributes"):
        assert grants(policy, f"sqs:{action}", queue), action
    # Dead letters are read only to move them back (`admin queue redrive`), never consumed.
    draining = [
        st["Sid"]
        for st in policy["Statement"]
        if grants({"Statement": [st]}, "sqs:ReceiveMessage", queue + "-dlq")
    ]
    assert draining == ["DrainDeadLetters"]
    objects = f"arn:aws:s3:::lifemonitor-{stage}-crates-123456789012-eu-west-1/crates/1.zip"
    for action in ("GetObject", "PutObject", "DeleteObject"):
        assert grants(policy, f"s3:{action}", objects), action
    for action in ("CreateNetworkInterface", "DeleteNetworkInterface"):
        assert grants(policy, f"ec2:{action}", "*"), action
    assert grants(policy, "kms:Decrypt", "arn:aws:kms:eu-west-1:123456789012:key/abc")
    text = json.dumps(policy)
    for other in set(STAGES) - {stage}:
        assert f"/lifemonitor/{other}" not in text
        assert f"lifemonitor-{other}" not in text
        assert f"lifemonitor-refresh-{other}" not in text


@pytest.mark.parametrize("stage", STAGES)
def test_kms_is_usable_only_through_ssm_for_the_stage(stage):
    kms = [s for s in load_policy(stage)["Statement"] if s["Sid"].endswith("ViaSsm")]
    assert {a for st in kms for a in st["Action"]} == {"kms:Decrypt", "kms:Encrypt"}
    for st in kms:
        like = st["Condition"]["StringLike"]
        assert like["kms:ViaService"] == "ssm.*.amazonaws.com"
        arn = like["kms:EncryptionContext:PARAMETER_ARN"]
        assert arn.endswith(f"parameter/lifemonitor/{stage}/*")


# --- one role per function, each with only what it needs (infra/iam.py) ----------------------

FUNCTIONS = ("api_handler", "refresh", "worker", "admin")


def function_policy(stage: str, function: str) -> dict:
    name = chalice_config()["stages"][stage]["lambda_functions"][function]["iam_policy_file"]
    return json.loads((CHALICE_DIR / name).read_text())


def test_generated_policies_are_up_to_date():
    """`python -m infra.iam` writes them from its tables; a hand edit or a stale file fails
    here (and in `make lint-infra`)."""
    from infra import iam

    assert iam.main(["--check"]) == 0


@pytest.mark.parametrize("stage", STAGES)
def test_every_function_has_its_own_policy_file(stage):
    names = {
        chalice_config()["stages"][stage]["lambda_functions"][f]["iam_policy_file"]
        for f in FUNCTIONS
    }
    assert len(names) == len(FUNCTIONS)
    for function in FUNCTIONS:
        policy = function_policy(stage, function)
        assert grants(
            policy,
            "logs:PutLogEvents",
            f"arn:aws:logs:eu-west-1:1:log-group:/aws/lambda/lifemonitor-{stage}-{function}:x",
        )
        assert grants(
            policy,
            "ssm:GetParametersByPath",
            f"arn:aws:ssm:eu-west-1:1:parameter/lifemonitor/{stage}",
        )
        assert grants(policy, "ec2:CreateNetworkInterface", "*")


def _can(stage: str, function: str, action: str) -> bool:
    service = action.split(":")[0]
    resource = {
        "ssm": f"arn:aws:ssm:eu-west-1:1:parameter/lifemonitor/{stage}/registries/x/client_secret",
        "sqs": f"arn:aws:sqs:eu-west-1:1:lifemonitor-refresh-{stage}",
        "s3": f"arn:aws:s3:::lifemonitor-{stage}-crates-1-eu-west-1/workflows/a/b.zip",
    }[service]
    return grants(function_policy(stage, function), action, resource)


@pytest.mark.parametrize(
    ("function", "allowed", "denied"),
    [
        (
            "api_handler",
            {
                "ssm:PutParameter",
                "ssm:DeleteParameter",
                "sqs:SendMessage",
                "s3:PutObject",
                "s3:GetObject",
                "s3:DeleteObject",
            },
            {"sqs:ReceiveMessage", "sqs:DeleteMessage"},
        ),
        (
            "refresh",
            {"sqs:SendMessage"},
            {
                "ssm:PutParameter",
                "ssm:DeleteParameter",
                "sqs:ReceiveMessage",
                "s3:GetObject",
                "s3:PutObject",
            },
        ),
        (
            # Asynchronous registrations: the stashed crate and `authorization` are read and
            # deleted, the registered crate and its secret stored.
            "worker",
            {
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "ssm:PutParameter",
                "ssm:DeleteParameter",
                "s3:PutObject",
                "s3:GetObject",
                "s3:DeleteObject",
            },
            {"sqs:SendMessage"},
        ),
        (
            "admin",
            {"ssm:PutParameter", "ssm:DeleteParameter", "sqs:SendMessage", "s3:DeleteObject"},
            {"sqs:ReceiveMessage", "sqs:DeleteMessage"},
        ),
        (
            # Expires registration jobs that never ran: deletes their stash, writes nothing.
            "housekeeping",
            {"ssm:DeleteParameter", "s3:DeleteObject"},
            {"ssm:PutParameter", "s3:PutObject", "s3:GetObject", "sqs:ReceiveMessage"},
        ),
    ],
)
def test_least_privilege_per_function(function, allowed, denied):
    for stage in STAGES:
        for action in allowed:
            assert _can(stage, function, action), (stage, function, action)
        for action in denied:
            assert not _can(stage, function, action), (stage, function, action)


def test_adding_a_permission_is_one_line(monkeypatch):
    """The tables drive every file: a new permission granted to one function appears in
    that function's policy and the stage's union, nowhere else."""
    from infra import iam

    monkeypatch.setitem(
        iam.PERMISSIONS,
        "SendMail",
        (["ses:SendEmail"], "arn:aws:ses:*:*:identity/{stage}.example", None),
    )
    monkeypatch.setitem(iam.GRANTS, "worker", [*iam.GRANTS["worker"], "SendMail"])
    files = {k: json.loads(v) for k, v in iam.expected_files(chalice_config()).items()}
    assert grants(
        files["policy-dev-worker.json"], "ses:SendEmail", "arn:aws:ses:*:*:identity/dev.example"
    )
    assert grants(files["policy-dev.json"], "ses:SendEmail", "arn:aws:ses:*:*:identity/dev.example")
    assert not grants(
        files["policy-dev-api_handler.json"],
        "ses:SendEmail",
        "arn:aws:ses:*:*:identity/dev.example",
    )


def test_only_admin_drains_dead_letters_and_never_the_live_queues():
    for stage in STAGES:
        for queue in ("refresh", "webhooks"):
            dlq = f"arn:aws:sqs:eu-west-1:1:lifemonitor-{queue}-{stage}-dlq"
            live = f"arn:aws:sqs:eu-west-1:1:lifemonitor-{queue}-{stage}"
            admin = function_policy(stage, "admin")
            assert grants(admin, "sqs:ReceiveMessage", dlq)
            assert grants(admin, "sqs:DeleteMessage", dlq)
            assert grants(admin, "sqs:GetQueueAttributes", live)
            assert not grants(admin, "sqs:ReceiveMessage", live)
            assert not grants(function_policy(stage, "api_handler"), "sqs:ReceiveMessage", dlq)
