"""Response envelopes and resource shapes of the LifeMonitor API (contract §1.4, §1.5).
Every datetime leaves here as epoch seconds (legacy) or ISO-8601 text, never raw."""

from __future__ import annotations

from contextvars import ContextVar
from datetime import datetime
from typing import Any

from chalicelib.api.context import current_request_info
from chalicelib.config import get_settings

API_VERSION = "0.15.0"  # the LifeMonitor API version we are a drop-in for


_base_var: ContextVar[tuple[Any, str] | None] = ContextVar("serializer_base", default=None)


def base_url() -> str:
    """Our public base URL, read once per request (a list names it thousands of times, and
    `get_settings` reads the environment on each call)."""
    info = current_request_info()
    cached = _base_var.get()
    if info is not None and cached is not None and cached[0] is info:
        return cached[1]
    base = get_settings().external_server_url
    if info is not None:
        _base_var.set((info, base))
    return base


def epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def meta(created: datetime | None = None, modified: datetime | None = None) -> dict[str, Any]:
    settings = get_settings()
    info = current_request_info()
    return {
        "api_version": API_VERSION,
        "base_url": settings.external_server_url,
        "resource": info.full_path if info else None,
        "created": epoch(created),
        "modified": epoch(modified),
    }


def self_links(next_cursor: str | None = None) -> dict[str, str | None]:
    """`self`, and `next` (this request with `cursor` set) when a page has a successor."""
    info = current_request_info()
    base = get_settings().external_server_url
    links = {"self": base + info.full_path if info else None}
    if next_cursor is not None and info is not None:
        from urllib.parse import parse_qsl, urlencode

        query = [(k, v) for k, v in parse_qsl(info.query, keep_blank_values=True) if k != "cursor"]
        links["next"] = f"{base}{info.path}?{urlencode([*query, ('cursor', next_cursor)])}"
    return links


def single(
    body: dict[str, Any], created: datetime | None = None, modified: datetime | None = None
) -> dict[str, Any]:
    return {"meta": meta(created, modified), "links": self_links(), **body}


def listing(
    items: list[dict[str, Any]], *, next_cursor: str | None = None, **extra: Any
) -> dict[str, Any]:
    return {"meta": meta(), "links": self_links(next_cursor), "items": items, **extra}


def registry(r, *, nested: bool = False) -> dict[str, Any]:
    body = {
        "uuid": r.uuid,
        "identifier": r.client_name,
        "uri": r.uri,
        "type": r.type,
        "name": r.name,
    }
    return body if nested else single(body, r.created, r.modified)


# --- workflows, suites, instances, builds (contract §1.5) ------------------------------


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def user(u) -> dict[str, Any]:
    return {"id": u.id, "username": u.username}


def test_instance(view, *, nested: bool = True) -> dict[str, Any]:
    from chalicelib.testing.links import instance_link

    inst, service = view.instance, view.service
    # Built key by key, absent keys left out (lists build thousands: no _drop_none pass).
    body: dict[str, Any] = {"uuid": inst.uuid}
    if inst.roc_instance is not None:
        body["roc_instance"] = inst.roc_instance
    if inst.name is not None:
        body["name"] = inst.name
    if inst.resource is not None:
        body["resource"] = inst.resource
    if inst.managed is not None:
        body["managed"] = inst.managed
    body["service"] = {"uuid": service.uuid, "url": service.url, "type": service.type}
    body["links"] = {"origin": instance_link(service.type, service.url, inst.resource)}
    # Our additions: when we last looked and what went wrong, if anything.
    if inst.last_checked_at is not None:
        body["last_checked"] = iso(inst.last_checked_at)
    if inst.last_error is not None:
        body["last_error"] = inst.last_error
    # Staleness: the threshold set with PUT (days), and since when it is STALE.
    if inst.stale_after_days is not None:
        body["stale_after_days"] = inst.stale_after_days
    if inst.stale_since is not None:
        body["stale_since"] = iso(inst.stale_since)
    if nested:
        return body
    base = get_settings().external_server_url
    body["links"]["self"] = f"{base}/instances/{inst.uuid}"
    return {"meta": meta(inst.created, inst.modified), **body}


def build_summary(build, view, *, links: bool = True) -> dict[str, Any]:
    """BuildSummary: legacy `timestamp` (string, epoch seconds for every CI) and `duration`
    (integer seconds), plus ISO-8601 `started_at`/`finished_at`."""
    body: dict[str, Any] = {"build_id": build.build_id}
    if view.suite_uuid is not None:
        body["suite_uuid"] = view.suite_uuid
    if build.status is not None:
        body["status"] = build.status
    body["instance"] = test_instance(view)
    started, duration = build.started_at, build.duration
    if started is not None:
        body["timestamp"] = str(int(started.timestamp()))
    if duration is not None:
        body["duration"] = round(duration)
    if started is not None:
        body["started_at"] = iso(started)
    if build.finished_at is not None:
        body["finished_at"] = iso(build.finished_at)
    if duration is not None:
        body["duration_seconds"] = duration
    if links:
        body["links"] = {"origin": build.url}
    return body


def test_suite(
    view, *, nested: bool = True, with_status: bool = False, with_latest_builds: bool = False
) -> dict[str, Any]:
    suite = view.suite
    body: dict[str, Any] = {
        "uuid": suite.uuid,
        "roc_suite": suite.roc_suite,
        "name": suite.name,
        "definition": suite.definition or None,
        "instances": [test_instance(i) for i in view.instances],
    }
    body = _drop_none(body)
    if with_status or with_latest_builds:
        result = view.status()
        if with_status:
            body["aggregate_test_status"] = result.aggregate_test_status
        if with_latest_builds:
            body["latest_builds"] = [_build_of(b, view) for b in result.latest_builds]
    if nested:
        return body
    return single(body, suite.created, suite.modified)


def _build_of(build, suite_view, links: bool = True) -> dict[str, Any]:
    inst_view = next(
        i
        for i in suite_view.instances
        if build.id
        in (getattr(i.latest_build, "id", None), getattr(i.last_completed_build, "id", None))
    )
    return build_summary(build, inst_view, links=links)


def _builds_of(
    result, suites, links: bool = True, limit: int | None = None
) -> list[dict[str, Any]]:
    by_build = {}
    for s in suites:
        for i in s.instances:
            for b in (i.latest_build, i.last_completed_build):
                if b is not None:
                    by_build[b.id] = i
    builds = result.latest_builds if limit is None else result.latest_builds[:limit]
    return [build_summary(b, by_build[b.id], links=links) for b in builds]


def suite_status(view) -> dict[str, Any]:
    result = view.status()
    body = {
        "suite_uuid": view.suite.uuid,
        "aggregate_test_status": result.aggregate_test_status,
        "latest_builds": _builds_of(result, [view]),
    }
    if result.reason:
        body["reason"] = result.reason
    return single(body, view.suite.created, view.suite.modified)


def _origin(origin: str | None) -> str | None:
    """A roc_link's query may hold a token: never shown (rows stored before it was cut)."""
    from chalicelib.http import redact

    return redact(origin) if origin else origin


def ro_crate_links(version_view, base: str | None = None) -> dict[str, Any]:
    v = version_view.version
    base = base or base_url()
    wf_uuid = v.workflow.uuid
    links: dict[str, Any] = {
        "origin": _origin(v.crate_origin),
        "metadata": f"{base}/workflows/{wf_uuid}/rocrate/{v.version}/metadata",
        "download": f"{base}/workflows/{wf_uuid}/rocrate/{v.version}/download",
    }
    if v.based_on:
        links["based_on"] = v.based_on
    links["registries"] = {r.client_name: link.uri for r, link in version_view.registries}
    return links


def _version_status(version_view, *, latest_build_only: bool) -> dict[str, Any]:
    stored = version_view.stored
    if stored is not None and latest_build_only:  # lists: the stored status, one build
        body = {
            "aggregate_test_status": stored.aggregate_test_status,
            "latest_builds": (
                [build_summary(stored.build, stored.instance)] if stored.build is not None else []
            ),
        }
        if stored.reason:
            body["reason"] = stored.reason
        return body
    result = version_view.status()
    builds = _builds_of(result, version_view.suites, limit=1 if latest_build_only else None)
    body = {"aggregate_test_status": result.aggregate_test_status, "latest_builds": builds}
    if result.reason:
        body["reason"] = result.reason
    return body


def workflow_list_item(
    entry, *, with_status: bool, with_versions: bool, with_subscriptions: bool
) -> dict[str, Any]:
    wf = entry.workflow
    body: dict[str, Any] = {
        "uuid": wf.uuid,
        "name": wf.name,
        "public": wf.public,
        "latest_version": entry.latest.version.version,
    }
    latest_status = None
    if with_status:
        # The workflow's status is its latest version's: built once, shown twice.
        latest_status = body["status"] = _version_status(entry.latest, latest_build_only=True)
    if with_subscriptions:
        body["subscriptions"] = [
            subscription(s, workflow_uuid=wf.uuid) for s in entry.subscriptions
        ]
    if with_versions:
        body["versions"] = []
        base = base_url()
        for vv in entry.versions:
            item = {
                "uuid": vv.version.uuid,
                "version": vv.version.version,
                "ro_crate": {"links": ro_crate_links(vv, base)},
                "is_latest": vv.is_latest,
            }
            if with_status:
                item["status"] = (
                    latest_status
                    if vv is entry.latest
                    else _version_status(vv, latest_build_only=True)
                )
            body["versions"].append(item)
    return body


def subscription(s, workflow_uuid: str | None = None) -> dict[str, Any]:
    return {
        "user": user(s.user),
        "resource": {
            "uuid": s.workflow_id and (workflow_uuid or _workflow_uuid(s)),
            "type": "workflow" if s.workflow_id else "workflow_version",
        },
        "created": str(s.created.replace(tzinfo=None)),
        "modified": str(s.modified.replace(tzinfo=None)),
        "events": list(s.events),
    }


def _workflow_uuid(s) -> str | None:
    from sqlalchemy.orm import object_session

    from chalicelib.models import Workflow

    session = object_session(s)
    wf = session.get(Workflow, s.workflow_id) if session else None
    return wf.uuid if wf else None


def version_body(version_view, *, with_crate: bool = False) -> dict[str, Any]:
    v = version_view.version
    body: dict[str, Any] = {
        "uuid": v.uuid,
        "name": v.name,
        "version": v.version,
        "is_latest": version_view.is_latest,
        "submitter": user(v.submitter) if v.submitter else None,
        "authors": list(v.authors or []),
        "ro_crate": {"links": ro_crate_links(version_view)},
        "links": _drop_none(
            {
                "origin": _origin(v.crate_origin),
                "based_on": v.based_on,
                "registries": ro_crate_links(version_view)["registries"],
            }
        ),
    }
    if with_crate:
        body["ro_crate"]["metadata"] = v.crate_metadata
    return _drop_none(body)


def workflow_details(
    entry, *, with_crate: bool = False, previous_versions: bool = False, principal=None
) -> dict[str, Any]:
    wf = entry.workflow
    chosen = entry.versions[0]
    body: dict[str, Any] = {
        "uuid": wf.uuid,
        "name": wf.name,
        "public": wf.public,
        "registries": [registry(r, nested=True) for r, _ in chosen.registries],
        "version": version_body(chosen, with_crate=with_crate),
    }
    if principal is not None and principal.user_id is not None:
        body["subscriptions"] = [subscription(s) for s in entry.subscriptions]
    if previous_versions:
        body["previous_versions"] = [
            {
                "uuid": vv.version.uuid,
                "version": vv.version.version,
                "ro_crate": {"links": ro_crate_links(vv)},
            }
            for vv in entry.versions[1:]
        ]
    return single(body, chosen.version.created, chosen.version.modified)


def workflow_status(entry, principal=None) -> dict[str, Any]:
    body = workflow_details(entry, principal=principal)
    chosen = entry.versions[0]
    result = chosen.status()
    body["aggregate_test_status"] = result.aggregate_test_status
    body["latest_builds"] = _builds_of(result, chosen.suites, links=False)
    if result.reason:
        body["reason"] = result.reason
    return body


def versions_list(entry) -> dict[str, Any]:
    base = get_settings().external_server_url
    wf = entry.workflow
    versions = sorted(entry.versions, key=lambda vv: vv.version.modified, reverse=True)
    return {
        "meta": meta(wf.created, wf.modified),
        "links": self_links(),
        "workflow": {
            "uuid": wf.uuid,
            "name": wf.name,
            "links": {"self": f"{base}/workflows/{wf.uuid}"},
        },
        "versions": [
            _drop_none(
                {
                    "uuid": vv.version.uuid,
                    "version": vv.version.version,
                    "ro_crate": {"links": ro_crate_links(vv)},
                    "is_latest": vv.is_latest,
                    "submitter": user(vv.version.submitter) if vv.version.submitter else None,
                    "authors": list(vv.version.authors or []),
                }
            )
            for vv in versions
        ],
    }


def registered(version) -> dict[str, Any]:
    """The 201 body of every workflow POST (LifeMonitor's actual shape, contract §1.3)."""
    from chalicelib.services.registration_jobs import registered_body

    # One shape for the 201 and for an asynchronous registration's `result`.
    return registered_body(version)


def user_profile(profile) -> dict[str, Any]:
    u, identities, registry_, registries_by_id = profile
    base = get_settings().external_server_url
    ids: dict[str, Any] = {}
    if registry_ is None:
        ids["lifemonitor"] = {
            "sub": str(u.id),
            "username": u.username,
            "picture": None,
            "provider": {
                "name": "LifeMonitor",
                "type": "oauth2_identity_provider",
                "uri": base,
                "userinfo_endpoint": f"{base}/users/current",
            },
        }
    for ident in identities:
        info = ident.user_info or {}
        ids[ident.provider] = {
            "sub": ident.provider_user_id,
            "name": info.get("name"),
            "username": info.get("username") or info.get("preferred_username"),
            "email": info.get("email"),
            "mbox_sha1sum": info.get("mbox_sha1sum"),
            "profile": info.get("profile"),
            "picture": info.get("picture"),
            "provider": _identity_provider(ident, registries_by_id.get(ident.registry_id)),
        }
    return single({"id": u.id, "username": u.username, "identities": ids}, u.created, u.modified)


def _identity_provider(ident, reg) -> dict[str, Any]:
    if reg is not None:
        return {
            "uuid": reg.uuid,
            "name": reg.client_name,
            "type": "registry",
            "uri": reg.uri,
            "userinfo_endpoint": f"{reg.uri}/people/current?format=json",
        }
    info = ident.user_info or {}
    return {
        "uuid": None,
        "name": ident.provider,
        "type": "oauth2_identity_provider",
        "uri": info.get("provider_uri"),
        "userinfo_endpoint": info.get("userinfo_endpoint"),
    }


def notification(user_notification, n) -> dict[str, Any]:
    return _drop_none(
        {
            "uuid": n.uuid,
            "created": iso(n.created),
            "read": iso(user_notification.read_at),
            "emailed": iso(user_notification.emailed_at),
            "name": n.name,
            "event": n.event,
            "data": n.data,
        }
    )


def index_item(item, registry_body: dict[str, Any], *, detailed: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "identifier": item.identifier,
        "name": item.name,
        "registry": registry_body,
        "links": {"origin": item.link},
    }
    if detailed:
        body["latest_version"] = item.latest_version
        body["versions"] = item.versions
    return body
