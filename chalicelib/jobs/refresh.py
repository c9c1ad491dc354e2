"""The status refresh: claim due test instances, fan them out, fetch and store their builds.

Flow (architecture §2): `dispatch_due()` (the `refresh` schedule) claims instances whose
next-check time has passed with a lease, groups them by CI host and sends them in batches to
SQS (or, with no queue configured — the embedded default — processes them inline);
`handle_sqs_records()` (the `worker`) refreshes each batch. Every instance is refreshed in
its own transaction, so one failing CI degrades one instance, never the batch. Builds are
upserted on (instance, build id): duplicate or concurrent deliveries are harmless.
"""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from chalicelib.models import Build, TestingService, TestInstance, utcnow
from chalicelib.models.testing import COMPLETED_STATUSES
from chalicelib.testing import CIError, FetchResult, UnsupportedServiceError, get_adapter

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

MESSAGE_VERSION = 1
INSTANCES_PER_MESSAGE = 25
LEASE = timedelta(minutes=10)
BUILDS_PER_FETCH = 10  # the window of LifeMonitor's status rule
INTERVAL = timedelta(minutes=5)  # idle instances
RUNNING_INTERVAL = timedelta(minutes=1)  # a build is running: look again soon
MAX_BACKOFF = timedelta(hours=6)


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def claim_due(session: Session, now: datetime, limit: int = 10_000) -> list[tuple[int, str]]:
    """Lease up to `limit` due instances; returns (instance id, CI url) pairs."""
    from sqlalchemy import or_, select, update

    query = (
        select(TestInstance.id, TestingService.url)
        .join(TestingService, TestInstance.testing_service_id == TestingService.id)
        .where(or_(TestInstance.next_check_at.is_(None), TestInstance.next_check_at <= now))
        .where(or_(TestInstance.lease_until.is_(None), TestInstance.lease_until < now))
        .where(or_(TestingService.blocked_until.is_(None), TestingService.blocked_until <= now))
        .where(TestInstance.managed.is_(False))
        .order_by(TestInstance.next_check_at.asc().nulls_first(), TestInstance.id)
        .limit(limit)
    )
    if _is_postgres(session):
        # Overlapping schedulers skip each other's rows instead of double-enqueuing.
        query = query.with_for_update(skip_locked=True, of=TestInstance)
    rows = [(row[0], row[1]) for row in session.execute(query)]
    if rows:
        session.execute(
            update(TestInstance)
            .where(TestInstance.id.in_([r[0] for r in rows]))
            .values(lease_until=now + LEASE)
        )
    return rows


def build_messages(rows: Iterable[tuple[int, str]]) -> list[dict[str, Any]]:
    """One message per CI host and chunk, so a worker's concurrency maps to one host."""
    by_host: dict[str, list[int]] = defaultdict(list)
    for instance_id, url in rows:
        by_host[urlsplit(url).netloc or url].append(instance_id)
    messages = []
    for host, ids in sorted(by_host.items()):
        for i in range(0, len(ids), INSTANCES_PER_MESSAGE):
            messages.append({"v": MESSAGE_VERSION, "host": host,
                             "instances": ids[i:i + INSTANCES_PER_MESSAGE]})
    return messages


def send_messages(queue_url: str, messages: list[dict[str, Any]]) -> int:
    import boto3

    sqs = boto3.client("sqs")
    sent = 0
    for i in range(0, len(messages), 10):  # SQS batch limit
        chunk = messages[i:i + 10]
        response = sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(n), "MessageBody": json.dumps(m)} for n, m in enumerate(chunk)],
        )
        failed = response.get("Failed", [])
        if failed:
            # Unsent instances keep their lease and are claimed again when it expires.
            log.error("refresh: %d messages not queued: %s", len(failed), failed[:3])
        sent += len(response.get("Successful", []))
    return sent


def dispatch_due(now: datetime | None = None, limit: int = 10_000) -> dict[str, Any]:
    from chalicelib.config import get_settings
    from chalicelib.db import session_scope

    now = now or utcnow()
    with session_scope() as session:
        rows = claim_due(session, now, limit)
    messages = build_messages(rows)
    queue = get_settings().refresh_queue_url
    if queue:
        sent = send_messages(queue, messages)
        summary = {"mode": "sqs", "claimed": len(rows), "messages": len(messages), "sent": sent}
    else:
        outcomes: dict[str, int] = defaultdict(int)
        for message in messages:
            for outcome, count in process_batch(message["instances"], now=now).items():
                outcomes[outcome] += count
        summary = {"mode": "inline", "claimed": len(rows), "messages": len(messages),
                   "outcomes": dict(outcomes)}
    log.info("refresh dispatched", extra=summary)
    return summary


def handle_sqs_records(records: Iterable[dict[str, Any]]) -> dict[str, list]:
    """SQS worker: partial batch response, so one poison message is retried (and then
    dead-lettered by the queue's redrive policy) without repeating the others."""
    failures = []
    for record in records:
        try:
            message = json.loads(record["body"])
            if message.get("v") != MESSAGE_VERSION or not isinstance(
                message.get("instances"), list
            ):
                raise ValueError(f"unexpected message: {record['body'][:200]!r}")
            ids = [int(i) for i in message["instances"]]
            process_batch(ids)
        except Exception:
            log.exception("refresh worker: message %s failed", record.get("messageId"))
            failures.append({"itemIdentifier": record.get("messageId")})
    return {"batchItemFailures": failures}


def process_batch(instance_ids: list[int], now: datetime | None = None) -> dict[str, int]:
    from chalicelib.db import session_scope

    outcomes: dict[str, int] = defaultdict(int)
    for instance_id in instance_ids:
        try:
            with session_scope() as session:
                outcomes[refresh_instance(session, instance_id, now=now)] += 1
        except Exception:
            # A bug or a database hiccup for one instance: log it, keep going. The lease
            # expires and the instance is claimed again.
            log.exception("refresh of instance %s failed", instance_id)
            outcomes["failed"] += 1
    return dict(outcomes)


def refresh_instance(session: Session, instance_id: int, now: datetime | None = None) -> str:
    """Fetch one instance's recent builds and store them. Returns the outcome:
    "updated", "unchanged", "error" or "missing"."""
    now = now or utcnow()
    instance = session.get(TestInstance, instance_id)
    if instance is None:
        return "missing"  # deleted since it was queued
    service = instance.testing_service
    if service.type == "github":
        from sqlalchemy import select

        # Superseded GitHub run attempts never change: let the adapter skip stored ones.
        instance.known_build_ids = frozenset(session.scalars(
            select(Build.build_id).where(Build.instance_id == instance.id)))
    try:
        adapter = get_adapter(service.type)
        result: FetchResult = adapter.fetch_builds(service.url, instance, BUILDS_PER_FETCH)
    except (CIError, UnsupportedServiceError) as exc:
        record_error(instance, str(exc), now,
                     retry_after=getattr(exc, "retry_after", None))
        return "error"
    instance.last_checked_at = now
    instance.last_error = None
    instance.consecutive_errors = 0
    instance.lease_until = None
    if result.etag is not None:
        instance.etag = result.etag
    if result.not_modified:
        instance.next_check_at = now + _interval(instance, session)
        return "unchanged"
    store_builds(session, instance, result.builds)
    instance.next_check_at = now + _interval(instance, session)
    return "updated"


def record_error(instance: TestInstance, message: str, now: datetime,
                 retry_after: float | None = None) -> None:
    instance.last_error = message[:2000]
    instance.last_checked_at = now
    instance.consecutive_errors += 1
    instance.lease_until = None
    backoff = min(INTERVAL * (2 ** min(instance.consecutive_errors - 1, 10)), MAX_BACKOFF)
    if retry_after is not None:
        backoff = max(backoff, timedelta(seconds=retry_after))
    # Jitter spreads retries of instances that failed together (one CI outage).
    instance.next_check_at = now + backoff * random.uniform(1.0, 1.2)  # noqa: S311


def store_builds(session: Session, instance: TestInstance, builds: list) -> None:
    """Upsert on (instance, build id), then recompute the denormalised pointers."""
    if builds:
        table = Build.__table__
        now = utcnow()
        rows = [
            {"instance_id": instance.id, "build_id": b.build_id, "status": b.status,
             "started_at": b.started_at, "finished_at": b.finished_at, "duration": b.duration,
             "url": b.url, "revision": b.revision, "links": b.links, "created": now,
             "modified": now}
            for b in builds
        ]
        if _is_postgres(session):
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(table).values(rows)
        stmt = stmt.on_conflict_do_update(
            index_elements=["instance_id", "build_id"],
            set_={c: getattr(stmt.excluded, c) for c in
                  ("status", "started_at", "finished_at", "duration", "url", "revision", "links",
                   "modified")},
        )
        session.execute(stmt)
    update_pointers(session, instance)


def update_pointers(session: Session, instance: TestInstance) -> None:
    from sqlalchemy import select

    recent = session.execute(
        select(Build.id, Build.status)
        .where(Build.instance_id == instance.id)
        .order_by(Build.started_at.desc().nulls_last(), Build.id.desc())
        .limit(BUILDS_PER_FETCH)
    ).all()
    instance.latest_build_id = recent[0].id if recent else None
    instance.last_completed_build_id = next(
        (r.id for r in recent if r.status in COMPLETED_STATUSES), None
    )


def _interval(instance: TestInstance, session: Session) -> timedelta:
    if instance.latest_build_id is not None:
        latest = session.get(Build, instance.latest_build_id)
        if latest is not None and latest.status in {"running", "waiting"}:
            return RUNNING_INTERVAL
    return INTERVAL
