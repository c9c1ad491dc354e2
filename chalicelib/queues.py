"""Our SQS queues (the refresh queue carries refresh batches and registration jobs; the
webhooks queue outbound deliveries): sending in batches, and what an administrator needs
when the dead-letter alarm fires — each queue's depth and moving its dead letters back."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)


def send_messages(queue_url: str, messages: list[dict[str, Any]]) -> int:
    """Queue `messages` (JSON bodies) in batches of ten, SQS's limit; the number sent. What
    SQS refuses is logged: the caller knows from the count and keeps whatever lets it be
    retried (a refresh lease expires and is claimed again; a job is marked failed)."""
    import boto3

    sqs = boto3.client("sqs")
    sent = 0
    for i in range(0, len(messages), 10):
        chunk = messages[i : i + 10]
        response = sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(n), "MessageBody": json.dumps(m)} for n, m in enumerate(chunk)],
        )
        failed = response.get("Failed", [])
        if failed:
            log.error("%d messages not queued: %s", len(failed), failed[:3])
        sent += len(response.get("Successful", []))
    return sent


# --- what the administrator sees and does (admin `queue status` / `queue redrive`) ----------

#: Our queues by the name the admin commands use, and the setting holding each one's URL.
NAMES = ("refresh", "webhooks")


@dataclass(frozen=True)
class QueueDepth:
    """A queue's approximate counts (SQS's own), and its dead-letter queue's."""

    name: str
    url: str
    waiting: int
    in_flight: int
    delayed: int
    dead_letter_url: str | None
    dead_letters: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def configured() -> dict[str, str]:
    """The queues this stage uses (none: jobs run inline, as `make run` does)."""
    from chalicelib.config import get_settings

    settings = get_settings()
    urls = {"refresh": settings.refresh_queue_url, "webhooks": settings.webhook_queue_url}
    return {name: url for name, url in urls.items() if url}


def _sqs():
    import boto3

    return boto3.client("sqs")


def _counts(sqs, url: str) -> dict[str, str]:
    return sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
            "RedrivePolicy",
        ],
    )["Attributes"]


def _dead_letter_url(sqs, attributes: dict[str, str]) -> str | None:
    """The URL of the queue's dead-letter queue, from its redrive policy's ARN."""
    try:
        policy = json.loads(attributes.get("RedrivePolicy") or "null")
    except ValueError:
        return None
    arn = policy.get("deadLetterTargetArn") if isinstance(policy, dict) else None
    parts = arn.split(":") if isinstance(arn, str) else []
    if len(parts) != 6 or parts[2] != "sqs":
        return None
    return sqs.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])["QueueUrl"]


def _sqs_failed(exc: Exception):
    """An SQS error as one line the admin command prints (no traceback, no secret)."""
    from chalicelib.errors import ServiceUnavailableError

    code = getattr(exc, "response", {}).get("Error", {}).get("Code") or type(exc).__name__
    return ServiceUnavailableError(f"SQS refused or did not answer: {code}")


def depths() -> list[QueueDepth]:
    """Every configured queue's counts, with its dead-letter queue's."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return _depths()
    except (BotoCoreError, ClientError) as exc:
        raise _sqs_failed(exc) from None


def _depths() -> list[QueueDepth]:
    sqs = _sqs()
    out = []
    for name, url in configured().items():
        attributes = _counts(sqs, url)
        dlq = _dead_letter_url(sqs, attributes)
        dead = int(_counts(sqs, dlq)["ApproximateNumberOfMessages"]) if dlq else None
        out.append(
            QueueDepth(
                name=name,
                url=url,
                waiting=int(attributes.get("ApproximateNumberOfMessages", 0)),
                in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
                delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
                dead_letter_url=dlq,
                dead_letters=dead,
            )
        )
    return out


def redrive(name: str, *, limit: int = 10_000) -> int:
    """Move up to `limit` messages from the queue's dead-letter queue back to it (after the
    cause was fixed: the DLQ alarm fired); how many moved. A message is deleted from the
    dead-letter queue only once SQS accepted it on the queue: one that was not shows up
    there again when its 60 s of invisibility end."""
    from botocore.exceptions import BotoCoreError, ClientError

    from chalicelib.errors import BadRequestError, NotFoundError

    queues = configured()
    if name not in NAMES:
        raise BadRequestError(f"no queue named {name!r} (queues: {', '.join(NAMES)})")
    if name not in queues:
        raise NotFoundError(f"the {name} queue is not configured here: its jobs run inline")
    try:
        return _redrive(name, queues[name], limit)
    except (BotoCoreError, ClientError) as exc:
        raise _sqs_failed(exc) from None


def _redrive(name: str, url: str, limit: int) -> int:
    from chalicelib.errors import NotFoundError

    sqs = _sqs()
    dlq = _dead_letter_url(sqs, _counts(sqs, url))
    if dlq is None:
        raise NotFoundError(f"the {name} queue has no dead-letter queue")
    moved = 0
    while moved < limit:
        # Long polling (1 s) asks every SQS server: a short poll may miss a few messages.
        received = sqs.receive_message(
            QueueUrl=dlq,
            MaxNumberOfMessages=min(10, limit - moved),
            WaitTimeSeconds=1,
            VisibilityTimeout=60,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not received:
            break
        entries = []
        for n, message in enumerate(received):
            entry: dict[str, Any] = {"Id": str(n), "MessageBody": message["Body"]}
            if message.get("MessageAttributes"):
                entry["MessageAttributes"] = message["MessageAttributes"]
            entries.append(entry)
        sent = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        accepted = {e["Id"] for e in sent.get("Successful", [])}
        done = [(str(n), m) for n, m in enumerate(received) if str(n) in accepted]
        if done:
            sqs.delete_message_batch(
                QueueUrl=dlq,
                Entries=[{"Id": i, "ReceiptHandle": m["ReceiptHandle"]} for i, m in done],
            )
        moved += len(done)
        if len(done) < len(received):
            log.error(
                "redrive %s: %d messages refused by the queue", name, len(received) - len(done)
            )
            break
    log.info("redrive %s: %d messages moved back from the dead-letter queue", name, moved)
    return moved
