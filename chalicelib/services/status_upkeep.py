"""Stored aggregate statuses: kept equal to the rule (`chalicelib/status.py`) by the
transactions that change its inputs.

A version's status folds over its instances' build pointers; a suite's over its own
instances; a workflow's is its latest version's. Lists read the stored values (an index
read per row) instead of loading every suite and instance. Whatever writes builds
(refresh, webhooks), instances, suites or versions calls `update_statuses` with what it
touched, in its own transaction; the rule itself is applied here, never restated in SQL.

Concurrency: the versions concerned are locked (`FOR UPDATE`, in id order) before their
instances are read, so of two transactions touching one version the second recomputes
from what the first committed — never from a stale snapshot.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from chalicelib import status as status_rule

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def update_statuses(
    session: Session,
    *,
    instance_ids: Iterable[int] = (),
    suite_ids: Iterable[int] = (),
    version_ids: Iterable[int] = (),
    workflow_ids: Iterable[int] = (),
) -> int:
    """Recompute and store the statuses of the versions holding these instances or suites
    (and those versions), their suites, and their workflows (plus `workflow_ids`: a
    version added or removed changes which one is latest). Writes only what changed;
    returns the number of versions whose status changed."""
    from sqlalchemy import or_, select

    from chalicelib.models import TestInstance, TestSuite, WorkflowVersion
    from chalicelib.services.workflows import _in, load_suites

    instance_ids, suite_ids = list(instance_ids), list(suite_ids)
    version_ids, workflow_ids = list(version_ids), set(workflow_ids)
    session.flush()  # the ORM's pending changes are inputs of the reads below
    clauses = []
    if version_ids:
        clauses.append(_in(session, WorkflowVersion.id, version_ids))
    if suite_ids:
        clauses.append(
            WorkflowVersion.id.in_(
                select(TestSuite.workflow_version_id).where(_in(session, TestSuite.id, suite_ids))
            )
        )
    if instance_ids:
        clauses.append(
            WorkflowVersion.id.in_(
                select(TestSuite.workflow_version_id)
                .join(TestInstance, TestInstance.suite_id == TestSuite.id)
                .where(_in(session, TestInstance.id, instance_ids))
            )
        )
    changed = 0
    if clauses:
        query = (
            select(
                WorkflowVersion.id,
                WorkflowVersion.workflow_id,
                WorkflowVersion.status,
                WorkflowVersion.status_reason,
                WorkflowVersion.status_build_id,
            )
            .where(or_(*clauses))
            .order_by(WorkflowVersion.id)
        )
        if _postgres(session):
            query = query.with_for_update(of=WorkflowVersion)
        stored = {r[0]: tuple(r[1:]) for r in session.execute(query)}
        if stored:
            suites = load_suites(session, list(stored))
            suite_rows: list[dict[str, Any]] = []
            version_rows: list[dict[str, Any]] = []
            for vid, (wf_id, status, reason, build_id) in stored.items():
                views = suites.get(vid, [])
                for view in views:
                    result = status_rule.compute([view.state()])
                    if (result.aggregate_test_status, result.reason) != (
                        view.suite.status,
                        view.suite.status_reason,
                    ):
                        suite_rows.append(
                            {
                                "id": view.suite.id,
                                "status": result.aggregate_test_status,
                                "reason": result.reason,
                            }
                        )
                result = status_rule.compute([v.state() for v in views])
                first = result.latest_builds[0].id if result.latest_builds else None
                new = (result.aggregate_test_status, result.reason, first)
                if new != (status, reason, build_id):
                    version_rows.append(
                        {"id": vid, "status": new[0], "reason": new[1], "build_id": new[2]}
                    )
                    workflow_ids.add(wf_id)
                    changed += 1
            _write(session, "test_suites", suite_rows)
            _write(session, "workflow_versions", version_rows)
    if workflow_ids:
        _update_workflows(session, sorted(workflow_ids))
    return changed


# Fixed statements per table (no SQL assembled from values): Postgres takes every row in
# one statement, SQLite one row per execution (executemany).
_PG_WRITE = {
    "test_suites": (
        "UPDATE test_suites AS t SET status = u.status, status_reason = u.reason "
        "FROM json_to_recordset(CAST(:rows AS json)) AS u(id integer, status text, "
        "reason text) WHERE t.id = u.id"
    ),
    "workflow_versions": (
        "UPDATE workflow_versions AS t SET status = u.status, status_reason = u.reason, "
        "status_build_id = u.build_id FROM json_to_recordset(CAST(:rows AS json)) AS "
        "u(id integer, status text, reason text, build_id bigint) WHERE t.id = u.id"
    ),
}
_WRITE = {
    "test_suites": (
        "UPDATE test_suites SET status = :status, status_reason = :reason WHERE id = :id"
    ),
    "workflow_versions": (
        "UPDATE workflow_versions SET status = :status, status_reason = :reason, "
        "status_build_id = :build_id WHERE id = :id"
    ),
}


def _write(session: Session, table: str, rows: list[dict[str, Any]]) -> None:
    """`modified` is left alone: a status is derived data, not an edit of the resource."""
    if not rows:
        return
    from sqlalchemy import text

    if _postgres(session):
        session.execute(text(_PG_WRITE[table]), {"rows": json.dumps(rows)})
    else:
        session.execute(text(_WRITE[table]), rows)
    _expire(session, table, {r["id"] for r in rows})


def _update_workflows(session: Session, workflow_ids: list[int]) -> None:
    """A workflow's status is its latest version's (newest `created`, then id)."""
    from sqlalchemy import func, select, update

    from chalicelib.models import Workflow, WorkflowVersion
    from chalicelib.services.workflows import _in

    latest = (
        select(WorkflowVersion.status)
        .where(WorkflowVersion.workflow_id == Workflow.id)
        .order_by(WorkflowVersion.created.desc(), WorkflowVersion.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    new = func.coalesce(latest, status_rule.NOT_AVAILABLE)
    session.execute(
        update(Workflow)
        .where(_in(session, Workflow.id, workflow_ids), Workflow.status != new)
        .values(status=new, modified=Workflow.modified)
        .execution_options(synchronize_session=False)
    )
    _expire(session, "workflows", set(workflow_ids))


def _expire(session: Session, table: str, ids: set[int]) -> None:
    """Objects of these rows that the session holds reload the stored status on access."""
    for obj in list(session.identity_map.values()):
        if getattr(obj, "__tablename__", None) == table and obj.id in ids:
            session.expire(obj, ["status"] if table == "workflows" else None)


def recompute_all(session: Session, chunk: int = 500) -> int:
    """Every version's stored status recomputed (data loaded by other means than the
    write paths: benchmarks' seeds, repairs). Returns the number of versions changed."""
    from sqlalchemy import select

    from chalicelib.models import WorkflowVersion

    ids = list(session.scalars(select(WorkflowVersion.id).order_by(WorkflowVersion.id)))
    changed = 0
    for start in range(0, len(ids), chunk):
        changed += update_statuses(session, version_ids=ids[start : start + chunk])
    return changed


def mismatches(session: Session, version_ids: list[int] | None = None) -> list[str]:
    """Versions and suites whose stored status differs from the rule applied now (the
    benchmark's and the tests' check); empty when every stored value is right."""
    from sqlalchemy import select

    from chalicelib.models import Workflow, WorkflowVersion
    from chalicelib.services.workflows import load_suites

    query = select(
        WorkflowVersion.id,
        WorkflowVersion.status,
        WorkflowVersion.status_reason,
        WorkflowVersion.status_build_id,
    ).order_by(WorkflowVersion.id)
    if version_ids is not None:
        query = query.where(WorkflowVersion.id.in_(version_ids))
    rows = session.execute(query).all()
    out = []
    for start in range(0, len(rows), 500):
        part = rows[start : start + 500]
        suites = load_suites(session, [r[0] for r in part])
        for vid, status, reason, build_id in part:
            views = suites.get(vid, [])
            result = status_rule.compute([v.state() for v in views])
            first = result.latest_builds[0].id if result.latest_builds else None
            if (status, reason, build_id) != (result.aggregate_test_status, result.reason, first):
                out.append(
                    f"version {vid}: stored {status!r}, computed {result.aggregate_test_status!r}"
                )
            for view in views:
                r = status_rule.compute([view.state()])
                if (view.suite.status, view.suite.status_reason) != (
                    r.aggregate_test_status,
                    r.reason,
                ):
                    out.append(
                        f"suite {view.suite.id}: stored {view.suite.status!r}, computed "
                        f"{r.aggregate_test_status!r}"
                    )
    latest = {}
    for wf_id, status in session.execute(
        select(WorkflowVersion.workflow_id, WorkflowVersion.status).order_by(
            WorkflowVersion.workflow_id, WorkflowVersion.created.desc(), WorkflowVersion.id.desc()
        )
    ):
        latest.setdefault(wf_id, status)
    for wf_id, status in session.execute(select(Workflow.id, Workflow.status)):
        if status != latest.get(wf_id, status_rule.NOT_AVAILABLE):
            out.append(f"workflow {wf_id}: stored {status!r}, latest version {latest.get(wf_id)!r}")
    return out
