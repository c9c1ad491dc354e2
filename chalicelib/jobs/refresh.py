"""The status refresh: claim due test instances, fan them out, fetch and store their builds.

Flow (architecture §2): `dispatch_due()` (the `refresh` schedule) claims instances whose
next-check time has passed with a lease, groups them by CI host and sends them in batches to
SQS (or, with no queue configured — the embedded default — refreshes them inline);
`handle_sqs_records()` (the `worker`) refreshes the batches; `refresh_now()` is the admin
command's door (chosen instances, next-check times ignored, leases honoured). The same queue
carries asynchronous registrations (`{"kind": "register", "job": <id>}`), which the worker
hands to chalicelib.services.registration_jobs.

Concurrency (`run_refresh`): a thread pool of ``LM_REFRESH_CONCURRENCY`` (default 8) with at
most ``LM_REFRESH_PER_HOST`` (default 4) fetches in flight per CI host, every request going
through chalicelib.http's one pooled session (keep-alive). Instances go through three
phases, and no database connection is held while a CI answers:

1. read — targets are read in chunks (`load_targets`: two queries for up to 500) into
   detached `Target`s;
2. fetch — the adapter call in a pool thread, outside any transaction, under the host's
   semaphore;
3. write — the calling thread writes what has arrived, up to `WRITE_GROUP` instances in one
   short transaction (`apply_many`: on Postgres, four statements for the whole group):
   lock the instance rows (``SELECT … FOR UPDATE``, in id order), upsert the builds on
   (instance, build id), recompute the denormalised pointers, and write the bookkeeping
   (next check, last error, back-off). A group that fails is written again one instance
   at a time, so a bad row fails its own instance only.

Writes are idempotent: duplicate SQS deliveries and concurrent refreshes of one instance
serialise on the row lock, the upsert never duplicates a build, a build row is only
overwritten by an observation at least as recent as its own (so a slow, stale fetch never
undoes a newer one), and the pointers are recomputed from the rows under the lock. One
failing CI degrades its own instances only: errors are recorded with exponential back-off
(and a rate-limited host is skipped by the scheduler until its `Retry-After`), never raised.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from chalicelib.models import Build, TestingService, TestInstance, utcnow
from chalicelib.models.testing import COMPLETED_STATUSES
from chalicelib.testing import (
    BuildData,
    CIError,
    FetchResult,
    UnsupportedServiceError,
    get_adapter,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

MESSAGE_VERSION = 1
INSTANCES_PER_MESSAGE = 25
MAX_INSTANCES_PER_MESSAGE = 1000  # anything bigger is not one of ours: poison
LEASE = timedelta(minutes=10)
BUILDS_PER_FETCH = 10  # the window of LifeMonitor's status rule
INTERVAL = timedelta(minutes=5)  # idle instances
RUNNING_INTERVAL = timedelta(minutes=1)  # a build is running: look again soon
MAX_BACKOFF = timedelta(hours=6)
# Time a worker invocation spends starting fetches when the caller gives no deadline while
# running in Lambda (the worker's timeout is 120 s; an in-flight fetch may take ~40 s more).
# Instances not started by then keep their lease and are claimed again when it runs out.
WORKER_TIME_BUDGET = 60.0
ADMIN_TIME_BUDGET = 240.0  # the admin Lambda's timeout is 300 s

#: Outcomes of one instance's refresh.
UPDATED, UNCHANGED, ERROR, MISSING, FAILED = "updated", "unchanged", "error", "missing", "failed"
DEFERRED = "deferred"  # not started before the deadline; the lease runs out
LEASED = "leased"  # admin refresh: someone else holds the lease, left alone


# --- settings ------------------------------------------------------------------------------


def refresh_concurrency() -> int:
    """Instances refreshed at once by one process (``LM_REFRESH_CONCURRENCY``, default 8)."""
    from chalicelib.config import get_settings

    return get_settings().refresh_concurrency


def refresh_per_host() -> int:
    """Fetches in flight per CI host (``LM_REFRESH_PER_HOST``, default 4)."""
    from chalicelib.config import get_settings

    return get_settings().refresh_per_host


def local_refresh_interval() -> int:
    """Seconds between two in-process refreshes of `make run` (``LM_LOCAL_REFRESH_INTERVAL``,
    default 60; 0 disables the timer)."""
    from chalicelib.config import get_settings

    return get_settings().local_refresh_interval


def _in_lambda() -> bool:
    from chalicelib.config import get_settings

    return get_settings().in_lambda


# --- claiming ------------------------------------------------------------------------------


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _id_in(session: Session, column, ids: list[int]):
    """`column IN ids` as one bound array on Postgres: the statement stays the same size
    whatever the number of ids (and pg8000's parameter limit never bites)."""
    if _is_postgres(session):
        from sqlalchemy import Integer, any_, bindparam
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam(None, list(ids), type_=ARRAY(Integer)))
    return column.in_(list(ids))


def _claim(
    session: Session,
    now: datetime,
    *,
    ids: list[int] | None = None,
    due_only: bool = True,
    limit: int | None = None,
) -> list[tuple[int, str]]:
    """Lease instances nobody else holds; returns (instance id, CI url) pairs. `due_only`:
    the scheduler's claim (next check passed, host not blocked); otherwise every instance
    in `ids` (or all of them) whose lease is free."""
    from sqlalchemy import or_, select, update

    query = (
        select(TestInstance.id, TestingService.url)
        .join(TestingService, TestInstance.testing_service_id == TestingService.id)
        .where(or_(TestInstance.lease_until.is_(None), TestInstance.lease_until < now))
        .where(TestInstance.managed.is_(False))
    )
    if due_only:
        query = query.where(
            or_(TestInstance.next_check_at.is_(None), TestInstance.next_check_at <= now)
        ).where(or_(TestingService.blocked_until.is_(None), TestingService.blocked_until <= now))
    if ids is not None:
        if not ids:
            return []
        query = query.where(_id_in(session, TestInstance.id, ids))
    query = query.order_by(TestInstance.next_check_at.asc().nulls_first(), TestInstance.id)
    if limit is not None:
        query = query.limit(limit)
    if _is_postgres(session):
        # Overlapping claimers skip each other's rows instead of double-enqueuing.
        query = query.with_for_update(skip_locked=True, of=TestInstance)
    rows = [(row[0], row[1]) for row in session.execute(query)]
    if rows:
        session.execute(
            update(TestInstance)
            .where(_id_in(session, TestInstance.id, [r[0] for r in rows]))
            .values(lease_until=now + LEASE)
        )
    return rows


def claim_due(session: Session, now: datetime, limit: int = 10_000) -> list[tuple[int, str]]:
    """Lease up to `limit` due instances; returns (instance id, CI url) pairs."""
    return _claim(session, now, due_only=True, limit=limit)


def build_messages(rows: Iterable[tuple[int, str]]) -> list[dict[str, Any]]:
    """One message per CI host and chunk, so a worker's concurrency maps to one host."""
    by_host: dict[str, list[int]] = defaultdict(list)
    for instance_id, url in rows:
        by_host[_host_of(url)].append(instance_id)
    messages = []
    for host, ids in sorted(by_host.items()):
        for i in range(0, len(ids), INSTANCES_PER_MESSAGE):
            chunk = ids[i : i + INSTANCES_PER_MESSAGE]
            messages.append({"v": MESSAGE_VERSION, "host": host, "instances": chunk})
    return messages


def _host_of(url: str) -> str:
    return urlsplit(url).netloc.lower() or url


# --- the three doors -----------------------------------------------------------------------


def dispatch_due(now: datetime | None = None, limit: int = 10_000) -> dict[str, Any]:
    """The `refresh` schedule (and the local timer): claim due instances, then queue them,
    or refresh them here when no queue is configured."""
    from chalicelib.config import get_settings
    from chalicelib.db import session_scope

    now = now or utcnow()
    with session_scope() as session:
        rows = claim_due(session, now, limit)
    messages = build_messages(rows)
    queue = get_settings().refresh_queue_url
    if queue:
        from chalicelib import queues

        sent = queues.send_messages(queue, messages)
        summary = {"mode": "sqs", "claimed": len(rows), "messages": len(messages), "sent": sent}
    else:
        results = run_refresh([instance_id for instance_id, _ in rows], now=now)
        summary = {
            "mode": "inline",
            "claimed": len(rows),
            "messages": len(messages),
            "outcomes": dict(Counter(r.outcome for r in results)),
        }
    log.info("refresh dispatched", extra=summary)
    return summary


def _parse_message(record: dict[str, Any]) -> list[int]:
    message = json.loads(record["body"])
    instances = message.get("instances")
    if message.get("v") != MESSAGE_VERSION or not isinstance(instances, list):
        raise ValueError(f"unexpected message: {record['body'][:200]!r}")
    if len(instances) > MAX_INSTANCES_PER_MESSAGE:
        raise ValueError(f"message with {len(instances)} instances")
    ids = []
    for value in instances:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(f"not an instance id: {value!r}")
        ids.append(int(value))
    return ids


def _registration_job(record: dict[str, Any]) -> str | None:
    """The job id of an asynchronous registration's message (`{"kind": "register", "job":
    …}`); None for a refresh batch, left to `_parse_message`."""
    from chalicelib.services.registration_jobs import parse_message

    try:
        message = json.loads(record["body"])
    except (TypeError, ValueError):
        return None  # `_parse_message` reports it
    return parse_message(message)


def _run_registrations(jobs: list[tuple[str, str]]) -> list[str]:
    """Run queued registrations one after the other (each records its own outcome); the
    ids of the messages to get again: a job being run elsewhere, or an error we could not
    record (the redelivery then records it)."""
    from chalicelib.services.registration_jobs import handle_message

    retry = []
    for message_id, job in jobs:
        try:
            if not handle_message(job):
                retry.append(message_id)
        except Exception:
            log.exception("refresh worker: registration job %s failed", job)
            retry.append(message_id)
    return retry


def handle_sqs_records(
    records: Iterable[dict[str, Any]], *, time_budget: float | None = None
) -> dict[str, list]:
    """SQS worker: every instance of every message of the batch is refreshed through one
    pool (bounded per host); the response lists the messages to retry (partial batch
    response), so a poison message is retried and then dead-lettered by the queue's redrive
    policy without repeating the others. A message fails when it cannot be read or when one
    of its instances failed unexpectedly (CI errors are recorded, not failures).

    `time_budget`: seconds to keep starting fetches (pass the invocation's remaining time
    minus a margin); in Lambda it defaults to `WORKER_TIME_BUDGET`."""
    failures: list[str] = []
    batches: list[tuple[str, list[int]]] = []
    jobs: list[tuple[str, str]] = []  # (message id, registration job id)
    for record in records:
        message_id = record.get("messageId")
        try:
            job = _registration_job(record)
            if job is not None:
                jobs.append((message_id, job))
            else:
                batches.append((message_id, _parse_message(record)))
        except Exception:
            log.exception("refresh worker: message %s is unreadable", message_id)
            failures.append(message_id)
    if time_budget is None and _in_lambda():
        time_budget = WORKER_TIME_BUDGET
    deadline = time.monotonic() + time_budget if time_budget is not None else None
    if jobs:
        failures.extend(_run_registrations(jobs))
    if not batches:
        return {"batchItemFailures": [{"itemIdentifier": m} for m in failures]}
    try:
        # Duplicates (the same instance in two deliveries) are refreshed once.
        results = run_refresh([i for _, ids in batches for i in ids], deadline=deadline)
        by_id = {r.instance_id: r.outcome for r in results}
    except Exception:  # pragma: no cover - run_refresh catches per instance
        log.exception("refresh worker: batch failed")
        by_id = {}
    for message_id, ids in batches:
        if any(by_id.get(i, FAILED) == FAILED for i in ids):
            failures.append(message_id)
    return {"batchItemFailures": [{"itemIdentifier": m} for m in failures]}


def process_batch(instance_ids: list[int], now: datetime | None = None) -> dict[str, int]:
    """Refresh these instances (concurrently); returns the count of each outcome."""
    return dict(Counter(r.outcome for r in run_refresh(instance_ids, now=now)))


# --- the admin door ------------------------------------------------------------------------


@dataclass(frozen=True)
class Selected:
    id: int
    uuid: str
    name: str | None
    workflow: str | None  # "<name> (<version>)", for humans


def _check_uuids(values: Iterable[str], what: str) -> list[str]:
    import uuid

    out = []
    for value in values:
        try:
            out.append(str(uuid.UUID(str(value))))
        except ValueError:
            from chalicelib.errors import BadRequestError

            raise BadRequestError(f"not a {what} UUID: {str(value)[:80]!r}") from None
    return list(dict.fromkeys(out))


def select_instances(
    session: Session,
    *,
    everything: bool = False,
    instance_uuids: Iterable[str] = (),
    workflow_uuids: Iterable[str] = (),
) -> list[Selected]:
    """The instances an admin refresh names; NotFoundError names any unknown uuid."""
    from sqlalchemy import select

    from chalicelib.errors import BadRequestError, NotFoundError
    from chalicelib.models import TestSuite, Workflow, WorkflowVersion

    instance_uuids = _check_uuids(instance_uuids, "test instance")
    workflow_uuids = _check_uuids(workflow_uuids, "workflow")
    query = (
        select(
            TestInstance.id,
            TestInstance.uuid,
            TestInstance.name,
            Workflow.name,
            WorkflowVersion.version,
        )
        .join(TestSuite, TestInstance.suite_id == TestSuite.id)
        .join(WorkflowVersion, TestSuite.workflow_version_id == WorkflowVersion.id)
        .join(Workflow, WorkflowVersion.workflow_id == Workflow.id)
        .order_by(TestInstance.id)
    )
    if everything:
        pass
    elif instance_uuids:
        query = query.where(TestInstance.uuid.in_(instance_uuids))
    elif workflow_uuids:
        known = set(session.scalars(select(Workflow.uuid).where(Workflow.uuid.in_(workflow_uuids))))
        unknown = [u for u in workflow_uuids if u not in known]
        if unknown:
            raise NotFoundError(f"unknown workflow: {', '.join(unknown)}")
        query = query.where(Workflow.uuid.in_(workflow_uuids))
    else:
        raise BadRequestError("say which instances: --all, --instance UUID or --workflow UUID")
    rows = [
        Selected(r[0], r[1], r[2], f"{r[3] or '(unnamed)'} ({r[4]})")
        for r in session.execute(query)
    ]
    if instance_uuids:
        found = {r.uuid for r in rows}
        unknown = [u for u in instance_uuids if u not in found]
        if unknown:
            raise NotFoundError(f"unknown test instance: {', '.join(unknown)}")
    return rows


def refresh_now(
    *,
    everything: bool = False,
    instance_uuids: Iterable[str] = (),
    workflow_uuids: Iterable[str] = (),
    now: datetime | None = None,
    progress: Callable[[int, int, Outcome], None] | None = None,
    time_budget: float | None = None,
) -> dict[str, Any]:
    """Refresh the chosen instances now, whatever their next-check time, except those
    whose lease another refresh holds (never race a worker). Returns a summary: counts
    per outcome, the instances with errors and their reason, the skipped ones."""
    from chalicelib.db import session_scope

    started = time.monotonic()
    claim_time = now or utcnow()
    with session_scope() as session:
        selected = select_instances(
            session,
            everything=everything,
            instance_uuids=instance_uuids,
            workflow_uuids=workflow_uuids,
        )
        ids = None if everything else [s.id for s in selected]
        claimed = {i for i, _ in _claim(session, claim_time, ids=ids, due_only=False)}
    if time_budget is None and _in_lambda():
        time_budget = ADMIN_TIME_BUDGET
    deadline = started + time_budget if time_budget is not None else None
    todo = [s.id for s in selected if s.id in claimed]
    results = {
        r.instance_id: r for r in run_refresh(todo, now=now, progress=progress, deadline=deadline)
    }
    outcomes: Counter[str] = Counter()
    errors, skipped = [], []
    for s in selected:
        result = results.get(s.id)
        if result is None:
            outcomes[LEASED] += 1
            skipped.append({"instance": s.uuid, "name": s.name, "workflow": s.workflow})
            continue
        outcomes[result.outcome] += 1
        if result.outcome in (ERROR, FAILED):
            errors.append(
                {
                    "instance": s.uuid,
                    "name": s.name,
                    "workflow": s.workflow,
                    "outcome": result.outcome,
                    "reason": result.error,
                }
            )
    return {
        "selected": len(selected),
        "refreshed": len(results),
        "outcomes": dict(sorted(outcomes.items())),
        "errors": errors,
        "skipped": skipped,
        "seconds": round(time.monotonic() - started, 3),
    }


# --- the concurrent runner -----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What an adapter needs of one instance, detached from any session (phase 1). It
    satisfies `chalicelib.testing.InstanceRef`; `known_build_ids` lets the GitHub adapter
    skip run attempts already stored (superseded attempts never change)."""

    id: int
    uuid: str
    resource: str
    parameters: dict = field(hash=False)
    etag: str | None
    service_id: int
    service_type: str
    service_url: str
    known_build_ids: frozenset[str] = frozenset()

    @property
    def host(self) -> str:
        return _host_of(self.service_url)


@dataclass(frozen=True)
class Fetched:
    """Phase 2's answer: the adapter's result or the CI error, and when it was asked."""

    observed_at: datetime
    result: FetchResult | None = None
    error: Exception | None = None


@dataclass(frozen=True)
class Outcome:
    instance_id: int
    outcome: str
    error: str | None = None  # the recorded reason, for "error" and "failed"


#: Targets read per query in phase 1.
LOAD_CHUNK = 500
#: Fetched instances written per transaction in phase 3, at most.
WRITE_GROUP = 64


def run_refresh(
    instance_ids: Iterable[int],
    now: datetime | None = None,
    *,
    concurrency: int | None = None,
    per_host: int | None = None,
    progress: Callable[[int, int, Outcome], None] | None = None,
    deadline: float | None = None,
) -> list[Outcome]:
    """Refresh instances concurrently (each once); never raises for one instance. `now`
    fixes the scheduling clock (tests); by default each group uses the time it is written.
    `deadline` (time.monotonic()) stops starting fetches.

    The targets are read in chunks (phase 1), fetched by a pool of `concurrency` threads
    (phase 2), and written by the calling thread in groups of what has arrived (phase 3,
    at most `WRITE_GROUP` instances a transaction): a short write costs one transaction
    per group instead of one per instance, which is what keeps one process near the
    concurrency ÷ latency bound. No database connection is held while a CI answers."""
    ids = list(dict.fromkeys(instance_ids))
    if not ids:
        return []
    workers = min(concurrency or refresh_concurrency(), len(ids))
    slots = per_host or refresh_per_host()
    outcomes: dict[int, Outcome] = {}
    arrived: queue.SimpleQueue[tuple[int, Fetched | BaseException | None]] = queue.SimpleQueue()

    def report(outcome: Outcome) -> None:
        outcomes[outcome.instance_id] = outcome
        if progress is not None:
            try:
                progress(len(outcomes), len(ids), outcome)
            except Exception:  # a display problem must not stop the refresh
                log.exception("refresh progress callback failed")

    def fetch_in_pool(target: Target) -> None:
        try:
            with _host_slot(target.host, slots):
                if deadline is not None and time.monotonic() > deadline:
                    arrived.put((target.id, None))  # the lease runs out; claimed again
                    return
                arrived.put((target.id, fetch(target)))
        except BaseException as exc:  # a bug in an adapter: this instance fails alone
            arrived.put((target.id, exc))

    in_flight = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lm-refresh") as pool:
        for start in range(0, len(ids), LOAD_CHUNK):
            chunk = ids[start : start + LOAD_CHUNK]
            for target in _load_chunk(chunk, now).values():
                if isinstance(target, Outcome):
                    report(target)
                else:
                    pool.submit(fetch_in_pool, target)
                    in_flight += 1
            # Write what has arrived while the next chunk loads.
            in_flight -= _write_arrived(arrived, now, report, block=False)
        while in_flight:
            in_flight -= _write_arrived(arrived, now, report, block=True)
    return [outcomes[i] for i in ids]


def _load_chunk(ids: list[int], now: datetime | None) -> dict[int, Target | Outcome]:
    """Phase 1 for a chunk: its targets, or an Outcome for the missing and the failed."""
    from chalicelib.db import session_scope

    try:
        with session_scope() as session:
            targets = load_targets(session, ids)
    except Exception as exc:
        log.exception("refresh: could not read %d instances", len(ids))
        reason = f"internal error while refreshing ({type(exc).__name__})"
        for instance_id in ids:
            _record_failure(instance_id, reason, now or utcnow())
        return {i: Outcome(i, FAILED, reason) for i in ids}
    return {i: targets.get(i) or Outcome(i, MISSING) for i in ids}


def _write_arrived(
    arrived: queue.SimpleQueue,
    now: datetime | None,
    report: Callable[[Outcome], None],
    *,
    block: bool,
) -> int:
    """Phase 3: write the fetches that have arrived (waiting for one when `block`), as one
    group; returns how many were taken."""
    group = []
    try:
        if block:
            group.append(arrived.get())
        while len(group) < WRITE_GROUP:
            group.append(arrived.get_nowait())
    except queue.Empty:
        pass
    if group:
        for outcome in write_group(group, now):
            report(outcome)
    return len(group)


def write_group(
    items: list[tuple[int, Fetched | BaseException | None]], now: datetime | None = None
) -> list[Outcome]:
    """Store fetched instances in one transaction; a failing group is written again one
    instance at a time, so a bad row fails its own instance only."""
    from chalicelib.db import session_scope

    outcomes: list[Outcome] = []
    writable: list[tuple[int, Fetched]] = []
    for instance_id, fetched in items:
        if fetched is None:
            outcomes.append(Outcome(instance_id, DEFERRED))
        elif isinstance(fetched, BaseException):
            log.error("refresh of instance %s failed", instance_id, exc_info=fetched)
            outcomes.append(_failed(instance_id, fetched, now))
        else:
            writable.append((instance_id, fetched))
    if not writable:
        return outcomes
    try:
        with session_scope() as session:
            written = apply_many(session, writable, now or utcnow())
    except Exception as exc:
        if len(writable) == 1:
            log.exception("refresh of instance %s failed", writable[0][0])
            return [*outcomes, _failed(writable[0][0], exc, now)]
        log.warning("refresh: a group of %d failed to write; writing one by one", len(writable))
        for item in writable:
            outcomes.extend(write_group([item], now))
        return outcomes
    for instance_id, fetched in writable:
        outcome = written[instance_id]
        error = _reason(fetched.error) if outcome == ERROR else None
        outcomes.append(Outcome(instance_id, outcome, error))
    return outcomes


def _failed(instance_id: int, exc: BaseException, now: datetime | None) -> Outcome:
    # A bug or a database hiccup for one instance: record it if we can, keep going.
    reason = f"internal error while refreshing ({type(exc).__name__})"
    _record_failure(instance_id, reason, now or utcnow())
    return Outcome(instance_id, FAILED, reason)


_slots: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


@contextmanager
def _host_slot(host: str, per_host: int) -> Iterator[None]:
    """At most `per_host` fetches in flight to one host in this process (shared by every
    batch running here: worker, admin command and local timer alike)."""
    key = (host, per_host)
    with _slots_lock:
        semaphore = _slots.get(key)
        if semaphore is None:
            semaphore = _slots[key] = threading.BoundedSemaphore(per_host)
    with semaphore:
        yield


def _record_failure(instance_id: int, reason: str, now: datetime) -> None:
    from chalicelib.db import session_scope

    try:
        with session_scope() as session:
            instance = lock_instance(session, instance_id)
            if instance is not None:
                record_error(instance, reason, now)
                _statuses_after(session, instance_id)  # a reason may name the error
    except Exception:
        log.exception("could not record the failure of instance %s", instance_id)


def _reason(exc: BaseException | None) -> str | None:
    return None if exc is None else str(exc)[:2000]


# --- the phases ----------------------------------------------------------------------------


def load_target(session: Session, instance_id: int) -> Target | None:
    """Phase 1 for one instance (None: deleted since queued)."""
    return load_targets(session, [instance_id]).get(instance_id)


def load_targets(session: Session, instance_ids: list[int]) -> dict[int, Target]:
    """Phase 1: detached copies of what the adapters need, in two queries at most (the
    deleted are absent)."""
    from sqlalchemy import select

    if not instance_ids:
        return {}
    rows = session.execute(
        select(
            TestInstance.id,
            TestInstance.uuid,
            TestInstance.resource,
            TestInstance.parameters,
            TestInstance.etag,
            TestingService.id,
            TestingService.type,
            TestingService.url,
        )
        .join(TestingService, TestInstance.testing_service_id == TestingService.id)
        .where(_id_in(session, TestInstance.id, instance_ids))
    ).all()
    known: dict[int, set[str]] = defaultdict(set)
    github = [r[0] for r in rows if r[6] == "github"]
    if github:
        # Superseded GitHub run attempts never change: let the adapter skip stored ones.
        for i, b in session.execute(
            select(Build.instance_id, Build.build_id).where(
                _id_in(session, Build.instance_id, github)
            )
        ):
            known[i].add(b)
    return {
        r[0]: Target(
            id=r[0],
            uuid=r[1],
            resource=r[2],
            parameters=dict(r[3] or {}),
            etag=r[4],
            service_id=r[5],
            service_type=r[6],
            service_url=r[7],
            known_build_ids=frozenset(known.get(r[0], ())),
        )
        for r in rows
    }


def fetch(target: Target) -> Fetched:
    """Phase 2: ask the CI. CI errors are returned (they are data); anything else raises.

    The observation is stamped when the request *starts*: whatever the CI answers is at
    least that fresh, so of two overlapping fetches the one that started later wins, even
    when its answer arrives first."""
    started = utcnow()
    try:
        adapter = get_adapter(target.service_type)
        result: FetchResult = adapter.fetch_builds(target.service_url, target, BUILDS_PER_FETCH)
    except (CIError, UnsupportedServiceError) as exc:
        return Fetched(observed_at=started, error=exc)
    return Fetched(observed_at=started, result=result)


def lock_instance(session: Session, instance_id: int) -> TestInstance | None:
    """The instance row, locked until the transaction ends (Postgres), freshly read."""
    from sqlalchemy import select

    query = (
        select(TestInstance)
        .where(TestInstance.id == instance_id)
        .execution_options(populate_existing=True)
    )
    if _is_postgres(session):
        query = query.with_for_update(of=TestInstance)
    return session.scalar(query)


def apply(session: Session, instance_id: int, fetched: Fetched, now: datetime) -> str:
    """Phase 3 for one instance, in the caller's transaction; returns its outcome."""
    return apply_many(session, [(instance_id, fetched)], now)[instance_id]


def apply_many(session: Session, items: list[tuple[int, Fetched]], now: datetime) -> dict[int, str]:
    """Phase 3: store what the fetches found, under the instances' row locks, in the
    caller's transaction; returns each instance's outcome ("updated", "unchanged",
    "error" or "missing").

    On Postgres the whole group takes four statements: lock the rows (in id order, so
    concurrent groups never deadlock), upsert every build, read the new pointers, update
    every instance (plus one per rate-limited host). Elsewhere (the embedded SQLite
    default, one writer at a time) each instance goes through the ORM."""
    from chalicelib.services.status_upkeep import update_statuses

    if not _is_postgres(session):
        outcomes = {i: _apply_orm(session, i, f, now) for i, f in items}
        update_statuses(session, instance_ids=[i for i, o in outcomes.items() if o != MISSING])
        _record_transitions(session, outcomes, now)
        return outcomes
    from sqlalchemy import text

    fetched_by_id = dict(items)
    locked = session.execute(
        text(
            "SELECT t.id, t.etag, t.consecutive_errors, t.testing_service_id, b.status "
            "FROM test_instances t LEFT JOIN builds b ON b.id = t.latest_build_id "
            "WHERE t.id = ANY(CAST(:ids AS integer[])) ORDER BY t.id FOR UPDATE OF t"
        ),
        {"ids": sorted(fetched_by_id)},
    ).all()
    outcomes = {i: MISSING for i in fetched_by_id}  # deleted while we were fetching
    updates: dict[int, dict[str, Any]] = {}
    blocks: dict[int, float] = {}
    upserts: list[tuple[int, list, datetime]] = []
    for instance_id, etag, errors, service_id, latest_status in locked:
        fetched = fetched_by_id[instance_id]
        if fetched.error is not None:
            retry_after = getattr(fetched.error, "retry_after", None)
            updates[instance_id] = _error_values(
                instance_id, str(fetched.error), errors, etag, now, retry_after
            )
            if retry_after is not None and retry_after > 0:
                blocks[service_id] = max(retry_after, blocks.get(service_id, 0))
            outcomes[instance_id] = ERROR
            continue
        result = fetched.result
        assert result is not None
        updates[instance_id] = {
            "id": instance_id,
            "last_error": None,
            "consecutive_errors": 0,
            "etag": result.etag if result.etag is not None else etag,
            "next_check_at": now + _interval_for(latest_status),
            "pointers": False,
        }
        if result.not_modified:
            outcomes[instance_id] = UNCHANGED
        else:
            upserts.append((instance_id, result.builds, fetched.observed_at))
            # Recomputed below; an instance with no build at all keeps these.
            updates[instance_id].update(
                pointers=True, latest_build_id=None, last_completed_build_id=None
            )
            outcomes[instance_id] = UPDATED
    for service_id, retry_after in blocks.items():
        block_service(session, service_id, retry_after, now)
    if upserts:
        _upsert_builds(session, upserts)
        for instance_id, recent in _recent_builds(session, [u[0] for u in upserts]).items():
            values = updates[instance_id]
            values["latest_build_id"], values["last_completed_build_id"] = _pointers(recent)
            values["next_check_at"] = now + _interval_for(recent[0][1])
    if updates:
        session.execute(
            text(
                "UPDATE test_instances AS t SET last_checked_at = :now, "
                "last_error = u.last_error, consecutive_errors = u.consecutive_errors, "
                "lease_until = NULL, etag = u.etag, next_check_at = u.next_check_at, "
                "latest_build_id = CASE WHEN u.pointers THEN u.latest_build_id "
                "ELSE t.latest_build_id END, "
                "last_completed_build_id = CASE WHEN u.pointers THEN u.last_completed_build_id "
                "ELSE t.last_completed_build_id END, modified = :modified "
                "FROM json_to_recordset(CAST(:rows AS json)) AS u(id integer, last_error text, "
                "consecutive_errors integer, etag text, next_check_at timestamptz, "
                "pointers boolean, latest_build_id bigint, last_completed_build_id bigint) "
                "WHERE t.id = u.id"
            ),
            {
                "rows": json.dumps(list(updates.values()), default=_json_default),
                "now": now,
                "modified": utcnow(),
            },
        )
    _expire_written(session, set(updates))
    update_statuses(session, instance_ids=list(updates))
    _record_transitions(session, outcomes, now)
    return outcomes


def _record_transitions(session: Session, outcomes: dict[int, str], now: datetime) -> None:
    """Notify BUILD_FAILED / BUILD_RECOVERED for what was just stored, in this transaction."""
    from chalicelib.services import transitions

    transitions.record(session, [i for i, o in outcomes.items() if o == UPDATED], now)


def _expire_written(session: Session, instance_ids: set[int]) -> None:
    """The statements above bypass the ORM: objects of these instances (and their builds)
    that the caller's session holds are reloaded on next access (webhooks, tests)."""
    for obj in list(session.identity_map.values()):
        if (isinstance(obj, TestInstance) and obj.id in instance_ids) or (
            isinstance(obj, Build) and obj.instance_id in instance_ids
        ):
            session.expire(obj)


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _apply_orm(session: Session, instance_id: int, fetched: Fetched, now: datetime) -> str:
    instance = lock_instance(session, instance_id)
    if instance is None:
        return MISSING  # deleted while we were fetching
    if fetched.error is not None:
        retry_after = getattr(fetched.error, "retry_after", None)
        record_error(instance, str(fetched.error), now, retry_after=retry_after)
        block_service(session, instance.testing_service_id, retry_after, now)
        return ERROR
    result = fetched.result
    assert result is not None
    with session.no_autoflush:
        if result.not_modified:
            latest = (
                session.get(Build, instance.latest_build_id)
                if instance.latest_build_id is not None
                else None
            )
            latest_status = latest.status if latest is not None else None
            outcome = UNCHANGED
        else:
            latest_status = store_builds(
                session, instance, result.builds, observed_at=fetched.observed_at
            )
            outcome = UPDATED
    instance.last_checked_at = now
    instance.last_error = None
    instance.consecutive_errors = 0
    instance.lease_until = None
    if result.etag is not None:
        instance.etag = result.etag
    instance.next_check_at = now + _interval_for(latest_status)
    return outcome


def refresh_instance(session: Session, instance_id: int, now: datetime | None = None) -> str:
    """Fetch one instance's recent builds and store them, all in the caller's session and
    transaction (tests, webhooks). Returns the outcome: "updated", "unchanged", "error" or
    "missing". Unexpected errors propagate."""
    target = load_target(session, instance_id)
    if target is None:
        return MISSING
    return apply(session, instance_id, fetch(target), now or utcnow())


def _backoff(errors: int, now: datetime, retry_after: float | None) -> datetime:
    """The next check after the `errors`-th error in a row: exponential, capped, at least
    the host's Retry-After, with jitter spreading instances that failed together."""
    backoff = min(INTERVAL * (2 ** min(errors - 1, 10)), MAX_BACKOFF)
    if retry_after is not None:
        backoff = max(backoff, min(timedelta(seconds=retry_after), MAX_BACKOFF))
    return now + backoff * random.uniform(1.0, 1.2)  # noqa: S311


def _error_values(
    instance_id: int,
    message: str,
    errors: int,
    etag: str | None,
    now: datetime,
    retry_after: float | None,
) -> dict[str, Any]:
    return {
        "id": instance_id,
        "last_error": message[:2000],
        "consecutive_errors": errors + 1,
        "etag": etag,
        "next_check_at": _backoff(errors + 1, now, retry_after),
        "pointers": False,
    }


def record_error(
    instance: TestInstance, message: str, now: datetime, retry_after: float | None = None
) -> None:
    instance.last_error = message[:2000]
    instance.last_checked_at = now
    instance.consecutive_errors += 1
    instance.lease_until = None
    instance.next_check_at = _backoff(instance.consecutive_errors, now, retry_after)


def block_service(
    session: Session, service_id: int, retry_after: float | None, now: datetime
) -> None:
    """The host asked us to come back later (rate limit, Retry-After): the scheduler skips
    all its instances until then (`claim_due`); admin refreshes still try."""
    if retry_after is None or retry_after <= 0:
        return
    from sqlalchemy import or_, update

    until = now + min(timedelta(seconds=retry_after), MAX_BACKOFF)
    session.execute(
        update(TestingService)
        .where(TestingService.id == service_id)
        .where(or_(TestingService.blocked_until.is_(None), TestingService.blocked_until < until))
        .values(blocked_until=until)
        .execution_options(synchronize_session=False)
    )


_UPSERT_COLUMNS = (
    "status",
    "started_at",
    "finished_at",
    "duration",
    "url",
    "revision",
    "links",
    "modified",
)

# One fixed text for any number of builds of any number of instances: compiled and
# rewritten once (a multi-VALUES insert is a new statement for every row count). Rows are
# sorted by (instance, build id) so concurrent writers lock them in the same order.
_UPSERT_SQL = (
    "INSERT INTO builds AS b (instance_id, build_id, status, started_at, finished_at, "
    "duration, url, revision, links, created, modified) "
    "SELECT u.instance_id, u.build_id, u.status, u.started_at, u.finished_at, u.duration, "
    "u.url, u.revision, coalesce(u.links, '{}'::jsonb), u.stamp, u.stamp "
    "FROM json_to_recordset(CAST(:rows AS json)) AS u(instance_id integer, build_id text, "
    "status text, started_at timestamptz, finished_at timestamptz, duration float8, "
    "url text, revision text, links jsonb, stamp timestamptz) "
    "ORDER BY u.instance_id, u.build_id "
    "ON CONFLICT (instance_id, build_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _UPSERT_COLUMNS)
    + " WHERE b.modified <= excluded.modified"
)


def _build_values(b: BuildData) -> dict[str, Any]:
    """A fetched build's columns."""
    return {
        "build_id": b.build_id,
        "status": b.status,
        "started_at": b.started_at,
        "finished_at": b.finished_at,
        "duration": b.duration,
        "url": b.url,
        "revision": b.revision,
        "links": b.links,
    }


def _upsert_builds(session: Session, groups: list[tuple[int, list, datetime]]) -> None:
    """Postgres: upsert the builds of several instances in one statement. A row is only
    overwritten by an observation at least as recent as its own."""
    from sqlalchemy import text

    rows = []
    for instance_id, builds, stamp in groups:
        seen: set[str] = set()
        for b in builds:
            if b.build_id in seen:  # one statement may not touch a row twice
                continue
            seen.add(b.build_id)
            rows.append({"instance_id": instance_id, **_build_values(b), "stamp": stamp})
    if rows:
        session.execute(text(_UPSERT_SQL), {"rows": json.dumps(rows, default=_json_default)})


def _recent_builds(session: Session, instance_ids: list[int]) -> dict[int, list[tuple]]:
    """Postgres: each instance's newest `BUILDS_PER_FETCH` builds as (id, status), newest
    first, in one statement."""
    from sqlalchemy import text

    rows = session.execute(
        text(
            "SELECT i.id, r.id, r.status, r.rn FROM unnest(CAST(:ids AS integer[])) AS i(id) "
            "CROSS JOIN LATERAL (SELECT id, status, row_number() OVER ("
            "ORDER BY started_at DESC NULLS LAST, id DESC) AS rn FROM builds "
            "WHERE instance_id = i.id ORDER BY started_at DESC NULLS LAST, id DESC "
            "LIMIT :n) AS r"
        ),
        {"ids": instance_ids, "n": BUILDS_PER_FETCH},
    ).all()
    out: dict[int, list[tuple]] = defaultdict(list)
    for instance_id, build_id, status, _rn in sorted(rows, key=lambda r: (r[0], r[3])):
        out[instance_id].append((build_id, status))
    return out


def _pointers(recent: list[tuple]) -> tuple[int | None, int | None]:
    """(latest build, first completed build among the recent ones) — the status rule's
    two builds, kept on the instance so reads need no build query."""
    latest = recent[0][0] if recent else None
    completed = next((b for b, status in recent if status in COMPLETED_STATUSES), None)
    return latest, completed


def store_builds(
    session: Session, instance: TestInstance, builds: list, observed_at: datetime | None = None
) -> str | None:
    """Upsert on (instance, build id), then recompute the denormalised pointers; returns
    the latest build's status.

    `observed_at` (when the fetch started; default now) becomes the rows' `modified`, and
    a row is only overwritten by an observation at least as recent: a slow refresh that read
    a build while it was running cannot undo a newer one that saw it finish."""
    stamp = observed_at or utcnow()
    if _is_postgres(session):
        _lock_row(session, instance.id)  # first, so concurrent writers never deadlock
        if builds:
            _upsert_builds(session, [(instance.id, builds, stamp)])
        latest_status = update_pointers(session, instance)
        _statuses_after(session, instance.id)
        return latest_status
    if builds:
        from sqlalchemy.dialects.sqlite import insert

        table = Build.__table__
        unique: dict[str, Any] = {}
        for b in builds:
            unique.setdefault(b.build_id, b)  # one statement may not touch a row twice
        stmt = insert(table).values(
            [
                {
                    "instance_id": instance.id,
                    **_build_values(b),
                    "created": stamp,
                    "modified": stamp,
                }
                for b in sorted(unique.values(), key=lambda b: b.build_id)
            ]
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["instance_id", "build_id"],
            set_={c: getattr(stmt.excluded, c) for c in _UPSERT_COLUMNS},
            where=table.c.modified <= stmt.excluded.modified,
        )
        session.execute(stmt)
    latest_status = update_pointers(session, instance)
    _statuses_after(session, instance.id)
    return latest_status


def _statuses_after(session: Session, instance_id: int) -> None:
    from chalicelib.services.status_upkeep import update_statuses

    update_statuses(session, instance_ids=[instance_id])


def _lock_row(session: Session, instance_id: int) -> None:
    if _is_postgres(session):
        from sqlalchemy import select

        session.execute(
            select(TestInstance.id).where(TestInstance.id == instance_id).with_for_update()
        )


def update_pointers(session: Session, instance: TestInstance) -> str | None:
    """Recompute `latest_build_id`/`last_completed_build_id` from the stored rows; returns
    the latest build's status. The caller holds the instance's row lock (`store_builds`
    takes it), so the last writer to get here sees every build the others committed."""
    from sqlalchemy import select

    recent = [
        tuple(r)
        for r in session.execute(
            select(Build.id, Build.status)
            .where(Build.instance_id == instance.id)
            .order_by(Build.started_at.desc().nulls_last(), Build.id.desc())
            .limit(BUILDS_PER_FETCH)
        )
    ]
    instance.latest_build_id, instance.last_completed_build_id = _pointers(recent)
    return recent[0][1] if recent else None


def _interval_for(latest_status: str | None) -> timedelta:
    """A running build is looked at again soon; anything else at the idle pace."""
    return RUNNING_INTERVAL if latest_status in {"running", "waiting"} else INTERVAL
