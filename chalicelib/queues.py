"""Sending to our SQS queues (the refresh queue carries refresh batches and registration
jobs): one place for the batch limit and for what a partly refused batch means."""

from __future__ import annotations

import json
import logging
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
