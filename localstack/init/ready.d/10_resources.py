#!/usr/bin/env python3
"""Create a stage's AWS resources on whatever `AWS_ENDPOINT_URL` points at (LocalStack in
Docker or without it, a moto server): the refresh queue and its dead-letter queue, the crate
bucket, the SES sender identity and the parameter-store entries. Idempotent: run it again
and it converges (changed attributes are set again, parameters overwritten).

* In the LocalStack container it is a *ready* hook (`/etc/localstack/init/ready.d`), run by
  LocalStack's own interpreter, which has boto3.
* `make start` (`infra/stack.py`) runs the same function against the emulator it started.
* By hand: ``python localstack/init/ready.d/10_resources.py [--stage dev] [--json]``.

Names follow `infra/cfn/stateful.yaml` for the stage (`lifemonitor-refresh-<stage>`, `-dlq`,
same redrive and visibility); the bucket has no account/region suffix locally. Only boto3
and the standard library: the hook runs outside the project.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

DEFAULT_REGION = "eu-west-1"
#: The queues of app.py's SQS handlers (`<name>-<stage>`, each with a `-dlq`), with their
#: visibility timeouts: 6 x the handler's timeout, as in stateful.yaml.
QUEUES = {"lifemonitor-refresh": 720, "lifemonitor-webhooks": 360}
VISIBILITY_TIMEOUT = QUEUES["lifemonitor-refresh"]
MAX_RECEIVE_COUNT = 5
DLQ_RETENTION = 14 * 24 * 3600
DEFAULT_SENDER = "lifemonitor@localhost.localdomain"


def names(stage: str) -> dict[str, str]:
    return {
        "bucket": f"lifemonitor-{stage}-crates",
        "prefix": f"/lifemonitor/{stage}/",
    }


def _client(service: str, region: str):
    import boto3

    # boto3 honours AWS_ENDPOINT_URL itself; nothing here names an emulator.
    return boto3.client(service, region_name=region)


def ensure_queue(sqs, name: str, attributes: dict[str, str]) -> str:
    from botocore.exceptions import ClientError

    try:
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    except ClientError as exc:
        # An existing queue with other attributes: converge instead of failing.
        if exc.response.get("Error", {}).get("Code") not in (
            "QueueAlreadyExists",
            "QueueNameExists",
            "AWS.SimpleQueueService.QueueNameExists",
        ):
            raise
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


def ensure_bucket(s3, bucket: str, region: str) -> None:
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            s3.create_bucket(**kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )


def ensure_resources(
    stage: str = "dev",
    *,
    region: str | None = None,
    database_url: str | None = None,
    bucket: str | None = None,
    sender: str = DEFAULT_SENDER,
    parameters: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Create or converge the stage's resources; returns their names and URLs.
    `parameters` are extra parameter-store keys (relative to the stage prefix)."""
    region = region or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
    n = names(stage)
    bucket = bucket or n["bucket"]

    sqs = _client("sqs", region)
    queues: dict[str, dict[str, str]] = {}
    for base, visibility in QUEUES.items():
        name = f"{base}-{stage}"
        dlq_url = ensure_queue(sqs, f"{name}-dlq", {"MessageRetentionPeriod": str(DLQ_RETENTION)})
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        url = ensure_queue(
            sqs,
            name,
            {
                "VisibilityTimeout": str(visibility),
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
                ),
            },
        )
        queues[base] = {"url": url, "dlq_url": dlq_url, "dlq_arn": dlq_arn}
    refresh = queues["lifemonitor-refresh"]

    ensure_bucket(_client("s3", region), bucket, region)

    ses = _client("ses", region)
    ses.verify_email_identity(EmailAddress=sender)  # idempotent by definition

    ssm = _client("ssm", region)
    values = dict(parameters or {})
    if database_url:
        values["database/url"] = database_url
    for key, value in sorted(values.items()):
        ssm.put_parameter(Name=n["prefix"] + key, Value=value, Type="SecureString", Overwrite=True)

    return {
        "stage": stage,
        "region": region,
        "queue_url": refresh["url"],
        "dlq_url": refresh["dlq_url"],
        "dlq_arn": refresh["dlq_arn"],
        "webhook_queue_url": queues["lifemonitor-webhooks"]["url"],
        "queues": queues,
        "bucket": bucket,
        "sender": sender,
        "ssm_prefix": n["prefix"],
        "parameters": sorted(values),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stage", default=os.environ.get("LM_STAGE", "dev"))
    parser.add_argument("--region", default=None)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "LM_LOCAL_DATABASE_URL",
            "postgresql://lifemonitor:lifemonitor@localhost:5433/lifemonitor",
        ),
        help="stored as <prefix>database/url (default: the compose PostgreSQL from the host)",
    )
    parser.add_argument("--bucket", default=os.environ.get("LM_CRATE_BUCKET") or None)
    parser.add_argument("--sender", default=os.environ.get("LM_MAIL_SENDER", DEFAULT_SENDER))
    parser.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="extra parameter"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    extra = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--param needs KEY=VALUE, got {item!r}")
        extra[key] = value
    try:
        result = ensure_resources(
            args.stage,
            region=args.region,
            database_url=args.database_url,
            bucket=args.bucket,
            sender=args.sender,
            parameters=extra,
        )
    except Exception as exc:  # one line: this runs in hooks and scripts
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "AWS")
        print(f"error: cannot create the resources on {endpoint}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"resources of stage {result['stage']} ready: {result['queue_url']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
