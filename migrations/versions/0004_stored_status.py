"""stored aggregate statuses of workflows, versions and suites

Lists (the registry sweep of a whole catalogue) read the aggregate status from a column
instead of folding over every instance on each read; the write paths keep it
(`chalicelib/services/status_upkeep.py`). The back-fill applies the same rule
(`chalicelib/status.py`, pure) to what is stored, reading with plain SQL so that it does
not depend on the models of later revisions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from collections import defaultdict
from collections.abc import Sequence
from types import SimpleNamespace

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NA = "not_available"
CHUNK = 500


def upgrade() -> None:
    for table in ("workflows", "workflow_versions", "test_suites"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("status", sa.String(16), nullable=False, server_default=NA)
            )
            if table != "workflows":
                batch_op.add_column(sa.Column("status_reason", sa.Text(), nullable=True))
            if table == "workflow_versions":
                batch_op.add_column(
                    sa.Column(
                        "status_build_id",
                        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                        nullable=True,
                    )
                )
    backfill(op.get_bind())


def backfill(conn) -> None:
    from chalicelib import status as rule

    version_ids = [r[0] for r in conn.execute(sa.text("SELECT id FROM workflow_versions"))]
    for start in range(0, len(version_ids), CHUNK):
        ids = version_ids[start : start + CHUNK]
        rows = conn.execute(
            sa.text(
                "SELECT s.id, s.workflow_version_id, s.name, i.id, i.name, i.resource, "
                "i.last_error, ts.url, lb.id, lb.status, cb.id, cb.status "
                "FROM test_suites s LEFT JOIN test_instances i ON i.suite_id = s.id "
                "LEFT JOIN testing_services ts ON ts.id = i.testing_service_id "
                "LEFT JOIN builds lb ON lb.id = i.latest_build_id "
                "LEFT JOIN builds cb ON cb.id = i.last_completed_build_id "
                "WHERE s.workflow_version_id IN :ids ORDER BY s.id, i.id"
            ).bindparams(sa.bindparam("ids", expanding=True)),
            {"ids": ids},
        ).all()
        suites: dict[int, list] = defaultdict(list)  # version -> [(suite id, SuiteState)]
        instances: dict[int, list] = defaultdict(list)
        names: dict[int, tuple[int, str | None]] = {}
        for sid, vid, sname, iid, iname, resource, error, url, lb, lbs, cb, cbs in rows:
            if sid not in names:
                names[sid] = (vid, sname)
            if iid is not None:
                instances[sid].append(
                    rule.InstanceState(
                        name=iname,
                        resource=resource,
                        service_url=url,
                        latest_build=SimpleNamespace(id=lb, status=lbs) if lb else None,
                        last_completed_build=SimpleNamespace(id=cb, status=cbs) if cb else None,
                        last_error=error,
                    )
                )
        for sid, (vid, sname) in names.items():
            state = rule.SuiteState(sname, instances.get(sid, []))
            suites[vid].append(state)
            result = rule.compute([state])
            conn.execute(
                sa.text("UPDATE test_suites SET status = :s, status_reason = :r WHERE id = :id"),
                {"s": result.aggregate_test_status, "r": result.reason, "id": sid},
            )
        for vid in ids:
            result = rule.compute(suites.get(vid, []))
            first = result.latest_builds[0].id if result.latest_builds else None
            conn.execute(
                sa.text(
                    "UPDATE workflow_versions SET status = :s, status_reason = :r, "
                    "status_build_id = :b WHERE id = :id"
                ),
                {"s": result.aggregate_test_status, "r": result.reason, "b": first, "id": vid},
            )
    conn.execute(
        sa.text(
            "UPDATE workflows SET status = coalesce((SELECT v.status FROM workflow_versions v "
            "WHERE v.workflow_id = workflows.id ORDER BY v.created DESC, v.id DESC LIMIT 1), "
            ":na)"
        ),
        {"na": NA},
    )


def downgrade() -> None:
    with op.batch_alter_table("workflow_versions", schema=None) as batch_op:
        batch_op.drop_column("status_build_id")
    for table in ("workflows", "workflow_versions", "test_suites"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            if table != "workflows":
                batch_op.drop_column("status_reason")
            batch_op.drop_column("status")
