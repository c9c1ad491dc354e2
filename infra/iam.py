"""The IAM policies of the Lambda functions, generated from two tables: what each
permission is (`PERMISSIONS`) and which function needs which (`GRANTS`).

    python -m infra.iam          # (re)write .chalice/policy-*.json
    python -m infra.iam --check  # exit 1 if a file differs from what the tables give

Each stage gets one file per function, ``.chalice/policy-<stage>-<function>.json``, named
in .chalice/config.json (``stages.<stage>.lambda_functions.<function>.iam_policy_file``),
so Chalice gives every function its own role with only what it needs; and the stage's
``policy-<stage>.json``, the union, for anything Chalice creates besides the four functions.
Adding a permission is one line in `PERMISSIONS` (or one name in `GRANTS`); tests/infra
fails while the generated files are stale.

Resources name the stage (``{stage}``) and leave region and account as wildcards, so one
file serves any account. The ENI actions (VPC) allow no resource-level restriction.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHALICE = ROOT / ".chalice"
FUNCTIONS = (
    "api_handler",
    "refresh",
    "worker",
    "admin",
    "notify",
    "housekeeping",
    "webhook_worker",
)

_OWN_ACCOUNT = {"StringEquals": {"aws:ResourceAccount": "${aws:PrincipalAccount}"}}
_PARAMS = [
    "arn:aws:ssm:*:*:parameter/lifemonitor/{stage}",
    "arn:aws:ssm:*:*:parameter/lifemonitor/{stage}/*",
]
_KMS_VIA_SSM = {
    "StringLike": {
        "kms:ViaService": "ssm.*.amazonaws.com",
        "kms:EncryptionContext:PARAMETER_ARN": "arn:aws:ssm:*:*:parameter/lifemonitor/{stage}/*",
    }
}
_QUEUE = "arn:aws:sqs:*:*:lifemonitor-refresh-{stage}"
_CRATES = "arn:aws:s3:::lifemonitor-{stage}-crates-*"
_WEBHOOKS = "arn:aws:sqs:*:*:lifemonitor-webhooks-{stage}"
_DEAD_LETTERS = [_QUEUE + "-dlq", _WEBHOOKS + "-dlq"]

#: Sid -> (actions, resources, condition). One line per permission.
PERMISSIONS: dict[str, tuple[list[str], list[str] | str, dict | None]] = {
    "WriteOwnLogs": (
        ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
        [
            "arn:aws:logs:*:*:log-group:/aws/lambda/lifemonitor-{stage}",
            "arn:aws:logs:*:*:log-group:/aws/lambda/lifemonitor-{stage}:*",
            "arn:aws:logs:*:*:log-group:/aws/lambda/lifemonitor-{stage}-*",
        ],
        None,
    ),
    "ReadStageParameters": (["ssm:GetParametersByPath", "ssm:GetParameter"], _PARAMS, None),
    "WriteStageParameters": (["ssm:PutParameter"], _PARAMS, None),
    "DeleteStageParameters": (["ssm:DeleteParameter"], _PARAMS, None),
    "DecryptViaSsm": (["kms:Decrypt"], "arn:aws:kms:*:*:key/*", _KMS_VIA_SSM),
    "EncryptViaSsm": (["kms:Encrypt"], "arn:aws:kms:*:*:key/*", _KMS_VIA_SSM),
    "SendToRefreshQueue": (["sqs:SendMessage"], _QUEUE, None),
    # What Lambda's SQS event source mapping does with the worker's role.
    "ConsumeRefreshQueue": (
        ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
        _QUEUE,
        None,
    ),
    # Outbound webhook deliveries: queued where transitions are found, retried with back-off.
    "SendToWebhookQueue": (["sqs:SendMessage"], _WEBHOOKS, None),
    "ConsumeWebhookQueue": (
        ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
        _WEBHOOKS,
        None,
    ),
    # `admin queue status` / `queue redrive`: counts, and dead letters moved back.
    "InspectQueues": (
        ["sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
        [_QUEUE, _WEBHOOKS, *_DEAD_LETTERS],
        None,
    ),
    "DrainDeadLetters": (["sqs:ReceiveMessage", "sqs:DeleteMessage"], _DEAD_LETTERS, None),
    "ReadCrates": (["s3:GetObject"], _CRATES + "/*", _OWN_ACCOUNT),
    "WriteCrates": (["s3:PutObject"], _CRATES + "/*", _OWN_ACCOUNT),
    "DeleteCrates": (["s3:DeleteObject"], _CRATES + "/*", _OWN_ACCOUNT),
    # ListBucket makes a missing crate a 404 rather than a 403.
    "ListCrates": (["s3:ListBucket"], _CRATES, _OWN_ACCOUNT),
    "VpcNetworkInterfaces": (
        [
            "ec2:CreateNetworkInterface",
            "ec2:DescribeNetworkInterfaces",
            "ec2:DescribeSubnets",
            "ec2:DeleteNetworkInterface",
            "ec2:AssignPrivateIpAddresses",
            "ec2:UnassignPrivateIpAddresses",
        ],
        "*",
        None,
    ),
}

_BASE = ["WriteOwnLogs", "VpcNetworkInterfaces", "ReadStageParameters", "DecryptViaSsm"]
_SECRETS_RW = ["WriteStageParameters", "DeleteStageParameters", "EncryptViaSsm"]
_CRATES_RW = ["ReadCrates", "WriteCrates", "DeleteCrates", "ListCrates"]

#: Function -> the permissions it needs (why, briefly).
GRANTS: dict[str, list[str]] = {
    # submissions store crates and `authorization` secrets, deletions remove both;
    # webhooks queue refreshes.
    "api_handler": [
        *_BASE,
        *_SECRETS_RW,
        *_CRATES_RW,
        "SendToRefreshQueue",
        "SendToWebhookQueue",
    ],
    # reads the database URL, queues the due instances.
    "refresh": [*_BASE, "SendToRefreshQueue"],
    # reads CI credentials; its SQS event source receives and deletes with this role;
    # asynchronous registrations read and delete the stashed crate and `authorization`,
    # and store the crate and the secret as a submission does.
    "worker": [*_BASE, *_SECRETS_RW, *_CRATES_RW, "ConsumeRefreshQueue", "SendToWebhookQueue"],
    # every admin command: registries' secrets, workflow deletion, refresh, migrations,
    # the queues' counts and dead letters.
    "admin": [
        *_BASE,
        *_SECRETS_RW,
        *_CRATES_RW,
        "SendToRefreshQueue",
        "SendToWebhookQueue",
        "InspectQueues",
        "DrainDeadLetters",
    ],
    # mails pending notifications (SES: the merge template's SesSendPolicy), queues due
    # webhook deliveries.
    "notify": [*_BASE, "SendToWebhookQueue"],
    # marks stale instances (their notifications may queue webhooks), prunes old rows,
    # expires registration jobs that never ran (deleting their stashed crate and secret).
    "housekeeping": [*_BASE, "SendToWebhookQueue", "DeleteCrates", "DeleteStageParameters"],
    # delivers webhooks; a failed delivery is queued again with a delay.
    "webhook_worker": [*_BASE, "ConsumeWebhookQueue", "SendToWebhookQueue"],
}


def _fill(value, stage: str):
    if isinstance(value, str):
        return value.replace("{stage}", stage)
    if isinstance(value, list):
        return [_fill(v, stage) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, stage) for k, v in value.items()}
    return value


def policy(stage: str, sids: list[str]) -> dict:
    statements = []
    for sid in PERMISSIONS:  # the table's order, whatever the grant's
        if sid not in sids:
            continue
        actions, resources, condition = PERMISSIONS[sid]
        st = {"Sid": sid, "Effect": "Allow", "Action": list(actions)}
        st["Resource"] = _fill(resources, stage)
        if condition:
            st["Condition"] = _fill(condition, stage)
        statements.append(st)
    return {"Version": "2012-10-17", "Statement": statements}


def function_policy_file(stage: str, function: str) -> str:
    return f"policy-{stage}-{function}.json"


def stage_policy_file(config: dict, stage: str) -> str:
    return config["stages"][stage].get("iam_policy_file", f"policy-{stage}.json")


def expected_files(config: dict) -> dict[str, str]:
    """File name (in .chalice/) -> contents, for every stage of the config."""
    files = {}
    for stage in config["stages"]:
        union = sorted({sid for sids in GRANTS.values() for sid in sids})
        files[stage_policy_file(config, stage)] = policy(stage, union)
        for function in FUNCTIONS:
            files[function_policy_file(stage, function)] = policy(stage, GRANTS[function])
    return {name: json.dumps(doc, indent=2) + "\n" for name, doc in files.items()}


def expected_config(config: dict) -> dict:
    """The config with every function of every stage pointing at its policy file."""
    out = json.loads(json.dumps(config))
    out["autogen_policy"] = False
    for stage, settings in out["stages"].items():
        functions = settings.setdefault("lambda_functions", {})
        for function in FUNCTIONS:
            functions.setdefault(function, {})["iam_policy_file"] = function_policy_file(
                stage, function
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.iam", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    ns = parser.parse_args(argv)
    config_path = CHALICE / "config.json"
    config = json.loads(config_path.read_text())
    wanted = {name: text for name, text in expected_files(config).items()}
    wanted["config.json"] = json.dumps(expected_config(config), indent=2) + "\n"
    stale = [
        name
        for name, text in wanted.items()
        if not (CHALICE / name).is_file() or (CHALICE / name).read_text() != text
    ]
    if ns.check:
        for name in stale:
            print(
                f"infra.iam: .chalice/{name} is stale: run `python -m infra.iam`", file=sys.stderr
            )
        return 1 if stale else 0
    for name in stale:
        (CHALICE / name).write_text(wanted[name])
        print(f"wrote .chalice/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
