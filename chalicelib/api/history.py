"""Build history of a test instance and of a workflow's versions (our addition to the
LifeMonitor API): last green build, pass rates and mean time to recovery over 7/30/90
days, duration trend. Same access rules as the resources they describe; times are ISO-8601
with epoch-second companions (`*_epoch`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from chalice import Blueprint

from chalicelib.api import serializers
from chalicelib.api.context import current_principal
from chalicelib.api.routing import endpoint, query_int, query_text
from chalicelib.auth import scopes as S

routes = Blueprint(__name__)


@endpoint(routes, "/instances/{instance_uuid}/history", scopes=[S.WORKFLOW_READ], anonymous=True)
def instance_history(instance_uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.jobs import history
    from chalicelib.models import utcnow
    from chalicelib.services import workflows

    series = _series()
    now = utcnow()
    with session_scope() as s:
        view = workflows.get_instance(s, current_principal(), instance_uuid)
        stats = history.for_instances(s, [view.instance.id], now=now, series=series)
        inst, service = view.instance, view.service
        body = {
            "instance": {
                "uuid": inst.uuid,
                "name": inst.name,
                "roc_instance": inst.roc_instance,
                "suite_uuid": view.suite_uuid,
                "service": {"uuid": service.uuid, "type": service.type, "url": service.url},
            },
            **_stamp("generated_at", now),
            "history": history_body(stats[inst.id]),
        }
        out = serializers.single(body, inst.created, inst.modified)
    out["links"]["instance"] = _url(f"/instances/{instance_uuid}")
    return out


@endpoint(routes, "/workflows/{wf_uuid}/history", scopes=[S.WORKFLOW_READ], anonymous=True)
def workflow_history(wf_uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.jobs import history
    from chalicelib.models import utcnow
    from chalicelib.services import workflows

    request = routes.current_request
    version = query_text(request, "version")
    series = _series()
    now = utcnow()
    with session_scope() as s:
        principal = current_principal()
        if version is None:  # every version, newest first
            entry = workflows.list_versions(s, principal, wf_uuid)
            views = entry.versions
        else:
            entry = workflows.get_version(s, principal, wf_uuid, version, with_suites=False)
            views = entry.versions[:1]
        version_ids = [v.version.id for v in views]
        instances = _instances_of(s, version_ids)
        by_version = history.for_versions(s, version_ids, now=now, series=series)
        by_instance = history.for_instances(
            s, [i["id"] for rows in instances.values() for i in rows], now=now, series=series
        )
        workflow = entry.workflow
        body = {
            "workflow": {"uuid": workflow.uuid, "name": workflow.name, "public": workflow.public},
            **_stamp("generated_at", now),
            "versions": [
                {
                    "uuid": v.version.uuid,
                    "version": v.version.version,
                    "is_latest": v.is_latest,
                    "history": history_body(by_version[v.version.id]),
                    "instances": [
                        {
                            "uuid": i["uuid"],
                            "name": i["name"],
                            "roc_instance": i["roc_instance"],
                            "suite_uuid": i["suite_uuid"],
                            "history": history_body(by_instance[i["id"]]),
                        }
                        for i in instances.get(v.version.id, [])
                    ],
                }
                for v in views
            ],
        }
        out = serializers.single(body, workflow.created, workflow.modified)
    out["links"]["workflow"] = _url(f"/workflows/{wf_uuid}")
    return out


# --- serialization -------------------------------------------------------------------------


def _series() -> int:
    from chalicelib.jobs.history import DEFAULT_SERIES, MAX_SERIES

    return query_int(routes.current_request, "series", DEFAULT_SERIES, 1, MAX_SERIES)


def _url(path: str) -> str:
    from chalicelib.config import get_settings

    return get_settings().url_for(path)


def _stamp(name: str, value: datetime | None) -> dict[str, Any]:
    """`name` as ISO-8601 and `name_epoch` as epoch seconds."""
    return {name: serializers.iso(value), f"{name}_epoch": serializers.epoch(value)}


def _point(point) -> dict[str, Any]:
    return {
        "build_id": point.build_id,
        "instance_uuid": point.instance_uuid,
        "status": point.status,
        **_stamp("started_at", point.started_at),
        **_stamp("finished_at", point.finished_at),
        "duration_seconds": point.duration,
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def history_body(h) -> dict[str, Any]:
    """A `chalicelib.jobs.history.History` as the API shows it."""
    last = None
    if h.last_passed is not None:
        last = {**_point(h.last_passed), **_stamp("at", h.last_passed.ended_at)}
    return {
        "builds": {"total": h.builds_total, **_stamp("last_build_at", h.last_build_at)},
        "last_passed": last,
        **_stamp("last_green_at", h.last_passed.ended_at if h.last_passed else None),
        **_stamp("failing_since", h.failing_since),
        "windows": {
            f"{w.days}d": {
                "days": w.days,
                **_stamp("since", w.since),
                "passed": w.passed,
                "completed": w.completed,
                "pass_rate": _round(w.pass_rate),
                "recoveries": w.recoveries,
                "mttr_seconds": _round(w.mttr_seconds, 3),
            }
            for w in h.windows
        },
        "duration": {
            "recent_mean_seconds": _round(h.recent_mean, 3),
            "recent_count": h.recent_count,
            "previous_mean_seconds": _round(h.previous_mean, 3),
            "previous_count": h.previous_count,
            "change_ratio": _round(h.change_ratio),
            "trend": h.trend,
            "series": [_point(p) for p in h.series],
        },
    }


def _instances_of(session, version_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """The instances of these versions (one query), grouped by version id."""
    from collections import defaultdict

    from sqlalchemy import select

    from chalicelib.models import TestInstance, TestSuite

    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if not version_ids:
        return out
    rows = session.execute(
        select(
            TestInstance.id,
            TestInstance.uuid,
            TestInstance.name,
            TestInstance.roc_instance,
            TestSuite.uuid,
            TestSuite.workflow_version_id,
        )
        .join(TestSuite, TestInstance.suite_id == TestSuite.id)
        .where(TestSuite.workflow_version_id.in_(version_ids))
        .order_by(TestSuite.id, TestInstance.id)
    )
    for iid, uuid, name, roc, suite_uuid, version_id in rows:
        out[version_id].append(
            {"id": iid, "uuid": uuid, "name": name, "roc_instance": roc, "suite_uuid": suite_uuid}
        )
    return out
