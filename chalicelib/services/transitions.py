"""Build transitions: a test instance that starts failing (BUILD_FAILED) or passes again
(BUILD_RECOVERED), found wherever builds are stored — the refresh and the webhooks in both
write through `jobs.refresh.apply_many`, which calls `record(...)` under the instances'
row locks, in the transaction that stores the builds.

Each instance keeps a baseline, `transition_build_id`: the newest completed build already
judged. Completed builds after it (in the status rule's order: started_at, then id) are
compared with their predecessor one by one, so a refresh that finds several new builds at
once still reports every change. An instance with no baseline (its first completed build)
takes the newest one as baseline and reports nothing: a first build is not a recovery
(LifeMonitor's quirk). Each transition is one notification with a unique key
(event, instance, build), so a repeated or concurrent write never notifies twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from chalicelib.models import (
    Build,
    TestingService,
    TestInstance,
    TestSuite,
    Workflow,
    WorkflowVersion,
    utcnow,
)
from chalicelib.models.testing import COMPLETED_STATUSES

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy.orm import Session

BUILD_FAILED = "BUILD_FAILED"
BUILD_RECOVERED = "BUILD_RECOVERED"
# Completed builds read per instance past the baseline: more new builds than this between
# two writes are judged from the newest ones.
WINDOW = 50


def passing(status: str) -> bool:
    return status == "passed"


def changes(baseline: str | None, statuses: list[str]) -> list[tuple[int, str]]:
    """Pure rule: (index into `statuses`, event) for each completed status whose
    pass/fail differs from the one before it (the first compared with `baseline`)."""
    out = []
    previous = baseline
    for i, status in enumerate(statuses):
        if previous is not None and passing(previous) != passing(status):
            out.append((i, BUILD_RECOVERED if passing(status) else BUILD_FAILED))
        previous = status
    return out


def record(session: Session, instance_ids: Iterable[int], now: datetime | None = None) -> int:
    """Judge the instances' new completed builds; the caller holds their row locks and
    has written the builds in this transaction. Returns how many notifications were
    created."""
    ids = sorted(set(instance_ids))
    if not ids:
        return 0
    now = now or utcnow()
    # Cheap first pass: only instances whose newest completed build moved need a look.
    rows = session.execute(
        select(
            TestInstance.id, TestInstance.transition_build_id, TestInstance.last_completed_build_id
        ).where(TestInstance.id.in_(ids))
    ).all()
    created = 0
    first: list[int] = []
    for instance_id, baseline_id, last_completed in rows:
        if last_completed is None or baseline_id == last_completed:
            continue  # nothing completed lately, or nothing new since the last judgement
        if baseline_id is None:
            first.append(instance_id)  # its first completed build: the baseline, no event
            continue
        created += _judge(session, instance_id, baseline_id, now)
    if first:
        # One statement for every first build of the group (the refresh's common case).
        session.execute(
            update(TestInstance)
            .where(TestInstance.id.in_(first))
            .values(transition_build_id=TestInstance.last_completed_build_id, stale_since=None)
            .execution_options(synchronize_session=False)
        )
    return created


def _judge(session: Session, instance_id: int, baseline_id: int | None, now: datetime) -> int:
    recent = (
        session.execute(
            select(Build)
            .where(Build.instance_id == instance_id, Build.status.in_(COMPLETED_STATUSES))
            .order_by(Build.started_at.desc().nulls_last(), Build.id.desc())
            .limit(WINDOW)
        )
        .scalars()
        .all()
    )
    if not recent:
        return 0
    newer: list[Build] = []
    baseline: Build | None = None
    for build in recent:
        if build.id == baseline_id:
            baseline = build
            break
        newer.append(build)
    if not newer:
        return 0
    newer.reverse()  # oldest first
    values: dict[str, Any] = {"transition_build_id": newer[-1].id, "stale_since": None}
    created = 0
    if baseline_id is not None:
        if baseline is None:  # older than the window: read it by id
            baseline = session.get(Build, baseline_id)
        found = changes(baseline.status if baseline else None, [b.status for b in newer])
        if found:
            context = _context(session, instance_id)
            for index, event in found:
                created += _notify(session, context, newer[index], event, now)
    session.execute(
        update(TestInstance)
        .where(TestInstance.id == instance_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return created


def _context(session: Session, instance_id: int) -> dict[str, Any]:
    instance, suite, version, workflow, service = session.execute(
        select(TestInstance, TestSuite, WorkflowVersion, Workflow, TestingService)
        .join(TestSuite, TestSuite.id == TestInstance.suite_id)
        .join(WorkflowVersion, WorkflowVersion.id == TestSuite.workflow_version_id)
        .join(Workflow, Workflow.id == WorkflowVersion.workflow_id)
        .join(TestingService, TestingService.id == TestInstance.testing_service_id)
        .where(TestInstance.id == instance_id)
    ).one()
    return {
        "instance": instance,
        "suite": suite,
        "version": version,
        "workflow": workflow,
        "service": service,
    }


def instance_body(instance: TestInstance, service: TestingService) -> dict[str, Any]:
    return {
        "uuid": instance.uuid,
        "roc_instance": instance.roc_instance,
        "name": instance.name,
        "resource": instance.resource,
        "managed": instance.managed,
        "service": {"uuid": service.uuid, "url": service.url, "type": service.type},
    }


def build_body(build: Build, context: dict[str, Any]) -> dict[str, Any]:
    """The BuildSummary of contract §1.5 as LifeMonitor put it in notifications, with the
    suite and the workflow."""
    suite, version, workflow = context["suite"], context["version"], context["workflow"]
    return {
        "build_id": build.build_id,
        "suite_uuid": suite.uuid,
        "status": build.status,
        "instance": instance_body(context["instance"], context["service"]),
        "timestamp": str(int(build.started_at.timestamp())) if build.started_at else None,
        "duration": round(build.duration) if build.duration is not None else None,
        "started_at": build.started_at.isoformat() if build.started_at else None,
        "finished_at": build.finished_at.isoformat() if build.finished_at else None,
        "links": {"origin": build.url},
        "suite": {"uuid": suite.uuid, "name": suite.name},
        "workflow": {"uuid": workflow.uuid, "name": workflow.name, "version": version.version},
    }


def _notify(
    session: Session, context: dict[str, Any], build: Build, event: str, now: datetime
) -> int:
    from chalicelib.services import notifications

    instance = context["instance"]
    word = "FAILED" if event == BUILD_FAILED else "RECOVERED"
    created = notifications.notify(
        session,
        event=event,
        name=f"TestBuild '{build.build_id}' @ instance '{instance.uuid}' {word}",
        data={"build": build_body(build, context)},
        workflow_id=context["workflow"].id,
        workflow_version_id=context["version"].id,
        dedup_key=f"{event}:{instance.uuid}:{build.build_id}"[:255],
        now=now,
    )
    return 0 if created is None else 1
