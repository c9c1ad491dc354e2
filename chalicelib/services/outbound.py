"""Outbound webhooks: endpoints that users or registries register, and the delivery of
every notification about their workflows as a CloudEvents 1.0 JSON event signed the
Standard Webhooks way (or as a Slack incoming-webhook message).

Signature (standardwebhooks.com): headers `webhook-id` (the delivery's uuid, the same on
every retry), `webhook-timestamp` (epoch seconds) and `webhook-signature`
= ``v1,`` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")), where the key is the
base64 part of the endpoint's secret ``whsec_<base64>``, shown once at registration and kept
in the parameter store (`webhooks/out/<endpoint uuid>/secret`).

Delivery: a notification adds one pending row per endpoint (notifications.add_deliveries);
after the transaction commits they are claimed and sent — to the SQS queue
``LM_WEBHOOK_QUEUE_URL`` when set, else delivered inline (the embedded default), as the
refresh does. A failed attempt is retried with exponential back-off (through an SQS
message delay when it fits, else the `webhooks` schedule's sweep of due rows); after
``LM_WEBHOOK_DISABLE_AFTER`` failed attempts in a row the endpoint is disabled and its
owner notified. Every request goes through the guarded HTTP client (no private addresses).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets as pysecrets
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import select, update

from chalicelib.auth.principals import Principal
from chalicelib.errors import BadRequestError, ForbiddenError, NotFoundError
from chalicelib.models import (
    Notification,
    Permission,
    Registry,
    WebhookDelivery,
    WebhookEndpoint,
    Workflow,
    utcnow,
)
from chalicelib.models.notifications import WEBHOOK_DISABLED
from chalicelib.services import access

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

FORMATS = ("cloudevents", "slack")
EVENT_TYPE_PREFIX = "eu.lifemonitor."
MAX_ATTEMPTS = 8  # per delivery: about 4 hours of back-off in all
BASE_BACKOFF = timedelta(seconds=30)
MAX_BACKOFF = timedelta(hours=2)
LEASE = timedelta(minutes=5)  # a claimed delivery is not claimed again before
SQS_MAX_DELAY = 900  # seconds
TIMEOUT = (5.0, 10.0)


# --- endpoints ------------------------------------------------------------------------------


def secret_key(endpoint_uuid: str) -> str:
    return f"webhooks/out/{endpoint_uuid}/secret"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(pysecrets.token_bytes(32)).decode("ascii")


def _owner_filter(principal: Principal):
    if principal.user_id is not None:
        return WebhookEndpoint.user_id == principal.user_id
    if principal.registry_id is not None:
        return WebhookEndpoint.registry_id == principal.registry_id
    raise ForbiddenError("Webhooks belong to a user or a registry: call with their credentials")


def _check_url(url: Any) -> str:
    if not isinstance(url, str) or not url.strip():
        raise BadRequestError(
            "'url' is required: the HTTPS endpoint to POST events to", field="url"
        )
    url = url.strip()
    if len(url) > 2048:
        raise BadRequestError("'url' is longer than 2048 characters", field="url")
    parts = urlsplit(url)
    from chalicelib.config import get_settings

    # HTTPS only, except on loopback in development (ALLOW_PRIVATE_URLS) for tests.
    if parts.scheme != "https" and not (
        parts.scheme == "http" and get_settings().allow_private_urls
    ):
        raise BadRequestError("'url' must be an https:// URL", field="url")
    if not parts.hostname or parts.username or parts.password:
        raise BadRequestError("'url' must have a host and no user:password", field="url")
    from chalicelib.http import BlockedURLError, address_allowed, check_url

    try:
        check_url(url)
    except BlockedURLError as exc:
        raise BadRequestError(f"'url' is not allowed: {exc.reason}", field="url") from None
    # An address literal is judged now; a host name when each delivery connects (the
    # guarded client checks every address it connects to).
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        literal = None
    if (
        literal is not None
        and not get_settings().allow_private_urls
        and not address_allowed(str(literal))
    ):
        raise BadRequestError(
            "'url' points to a private, loopback or reserved address", field="url"
        )
    return url


def _check_events(events: Any) -> list[str]:
    if events is None:
        return ["ALL"]
    from chalicelib.services.subscriptions import validate_events

    return validate_events(events)


def create_endpoint(
    session: Session, principal: Principal, body: Any
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint: {url, workflow? (uuid; omitted: all the owner's workflows),
    events? (default ["ALL"]), format? ("cloudevents" | "slack")}. Returns the endpoint and
    its signing secret, shown this once."""
    if not isinstance(body, dict):
        raise BadRequestError("the body must be a JSON object")
    _owner_filter(principal)  # raises for a caller that is neither user nor registry
    url = _check_url(body.get("url"))
    fmt = body.get("format", "cloudevents")
    if fmt not in FORMATS:
        raise BadRequestError(f"'format' must be one of {', '.join(FORMATS)}", field="format")
    events = _check_events(body.get("events"))
    workflow_id = None
    if body.get("workflow") is not None:
        if not isinstance(body["workflow"], str) or len(body["workflow"]) > 64:
            raise BadRequestError("'workflow' must be a workflow uuid", field="workflow")
        workflow_id = access.workflow_for_read(session, principal, body["workflow"]).id
    endpoint = WebhookEndpoint(
        user_id=principal.user_id,
        registry_id=principal.registry_id if principal.user_id is None else None,
        workflow_id=workflow_id,
        url=url,
        format=fmt,
        events=events,
        enabled=True,
        consecutive_failures=0,
    )
    session.add(endpoint)
    session.flush()
    secret = None
    if fmt == "cloudevents":
        from chalicelib.secrets import get_secrets

        secret = new_secret()
        endpoint.secret_key = secret_key(endpoint.uuid)
        get_secrets().put(endpoint.secret_key, secret)
    return endpoint, secret


def list_endpoints(session: Session, principal: Principal) -> list[WebhookEndpoint]:
    return list(
        session.scalars(
            select(WebhookEndpoint).where(_owner_filter(principal)).order_by(WebhookEndpoint.id)
        )
    )


def get_endpoint(session: Session, principal: Principal, uuid: str) -> WebhookEndpoint:
    endpoint = session.scalar(
        select(WebhookEndpoint).where(WebhookEndpoint.uuid == uuid, _owner_filter(principal))
    )
    if endpoint is None:
        raise NotFoundError(f"Webhook '{uuid}' not found", resource_type="webhook")
    return endpoint


def update_endpoint(
    session: Session, principal: Principal, uuid: str, body: Any
) -> WebhookEndpoint:
    """Change {url?, events?, enabled?}; enabling again resets the failure count."""
    if not isinstance(body, dict):
        raise BadRequestError("the body must be a JSON object")
    endpoint = get_endpoint(session, principal, uuid)
    if "url" in body:
        endpoint.url = _check_url(body["url"])
    if "events" in body:
        endpoint.events = _check_events(body["events"])
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            raise BadRequestError("'enabled' must be true or false", field="enabled")
        endpoint.enabled = body["enabled"]
        if endpoint.enabled:
            endpoint.consecutive_failures = 0
            endpoint.disabled_reason = None
    session.flush()
    return endpoint


def delete_endpoint(session: Session, principal: Principal, uuid: str) -> None:
    endpoint = get_endpoint(session, principal, uuid)
    if endpoint.secret_key:
        from chalicelib.secrets import get_secrets

        get_secrets().delete(endpoint.secret_key)
    session.delete(endpoint)


def endpoint_body(session: Session, endpoint: WebhookEndpoint) -> dict[str, Any]:
    workflow_uuid = (
        session.scalar(select(Workflow.uuid).where(Workflow.id == endpoint.workflow_id))
        if endpoint.workflow_id is not None
        else None
    )
    return {
        "uuid": endpoint.uuid,
        "url": endpoint.url,
        "format": endpoint.format,
        "workflow": workflow_uuid,
        "events": list(endpoint.events),
        "enabled": endpoint.enabled,
        "consecutive_failures": endpoint.consecutive_failures,
        "disabled_reason": endpoint.disabled_reason,
        "created": endpoint.created.isoformat(),
        "modified": endpoint.modified.isoformat(),
    }


# --- signing and payloads -----------------------------------------------------------------


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks signature header value for one message."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def cloudevent(notification: Notification, delivery_uuid: str) -> dict[str, Any]:
    """A CloudEvents 1.0 structured-mode JSON event."""
    from chalicelib.config import get_settings

    data = dict(notification.data or {})
    workflow = (data.get("build") or {}).get("workflow") or data.get("workflow") or {}
    subject = (data.get("build") or {}).get("instance", {}).get("uuid") or data.get(
        "instance", {}
    ).get("uuid")
    event = {
        "specversion": "1.0",
        "id": delivery_uuid,
        "source": get_settings().url_for(f"/workflows/{workflow['uuid']}")
        if workflow.get("uuid")
        else get_settings().external_server_url,
        "type": EVENT_TYPE_PREFIX + notification.event.lower(),
        "time": notification.created.isoformat(),
        "datacontenttype": "application/json",
        "data": {
            "notification": notification.uuid,
            "event": notification.event,
            "name": notification.name,
            **data,
        },
    }
    if subject:
        event["subject"] = f"instances/{subject}"
    return event


_WORDS = {
    "BUILD_FAILED": ":red_circle: is failing",
    "BUILD_RECOVERED": ":large_green_circle: has recovered",
    "STALE": ":hourglass: is stale",
}


def slack_message(notification: Notification) -> dict[str, Any]:
    """A readable Slack incoming-webhook message (text plus one section block)."""
    from chalicelib.config import get_settings

    data = notification.data or {}
    build = data.get("build") or {}
    workflow = build.get("workflow") or data.get("workflow") or {}
    instance = build.get("instance") or data.get("instance") or {}
    what = _WORDS.get(notification.event, notification.event)
    title = (
        f"Workflow *{workflow.get('name') or workflow.get('uuid')}*"
        f" (version {workflow.get('version', '?')}): test instance "
        f"*{instance.get('name') or instance.get('uuid')}* {what}"
    )
    lines = [title]
    if build:
        lines.append(f"Build `{build.get('build_id')}`: {build.get('status')}")
        origin = (build.get("links") or {}).get("origin")
        if origin:
            lines.append(f"<{origin}|Open the build>")
    if workflow.get("uuid"):
        url = get_settings().url_for(f"/workflows/{workflow['uuid']}/status")
        lines.append(f"<{url}|Status on LifeMonitor>")
    text = "\n".join(lines)
    return {
        "text": text.replace("*", ""),
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    }


def request_for(
    delivery: WebhookDelivery, endpoint: WebhookEndpoint, notification: Notification, now: datetime
) -> tuple[bytes, dict[str, str]]:
    if endpoint.format == "slack":
        body = json.dumps(slack_message(notification)).encode()
        return body, {"Content-Type": "application/json"}
    body = json.dumps(cloudevent(notification, delivery.uuid), separators=(",", ":")).encode()
    # The real sending time (receivers refuse timestamps far from their clock), whatever
    # `now` the scheduler reasons with.
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/cloudevents+json",
        "webhook-id": delivery.uuid,
        "webhook-timestamp": str(timestamp),
    }
    from chalicelib.secrets import get_secrets

    secret = get_secrets().get(endpoint.secret_key) if endpoint.secret_key else None
    if secret:
        headers["webhook-signature"] = sign(secret, delivery.uuid, timestamp, body)
    return body, headers


# --- delivery ---------------------------------------------------------------------------------


def _queue_url() -> str | None:
    from chalicelib.config import get_settings

    return get_settings().webhook_queue_url


def dispatch_after_commit(session: Session, delivery_ids: list[int]) -> None:
    """Send these deliveries once the transaction that created them has committed (the
    receivers must never hear of an event that was rolled back)."""
    if not delivery_ids:
        return
    pending = session.info.setdefault("lm_webhook_deliveries", [])
    if not pending:
        from sqlalchemy import event

        def after_commit(s) -> None:
            ids = list(s.info.pop("lm_webhook_deliveries", []))
            if ids:
                try:
                    dispatch(ids)
                except Exception:  # the sweep retries what was not sent
                    log.exception("webhooks: dispatch of %d deliveries failed", len(ids))

        def after_rollback(s) -> None:
            s.info.pop("lm_webhook_deliveries", None)

        event.listen(session, "after_commit", after_commit, once=True)
        event.listen(session, "after_soft_rollback", after_rollback, once=True)
    pending.extend(delivery_ids)


def dispatch(delivery_ids: list[int], now: datetime | None = None) -> int:
    """Claim these deliveries (if still due) and send them: to SQS, or inline."""
    from chalicelib.db import session_scope

    now = now or utcnow()
    with session_scope() as session:
        claimed = _claim(session, now, ids=delivery_ids)
    return _send(claimed, now)


def deliver_due(now: datetime | None = None, limit: int = 1000) -> dict[str, int]:
    """The `webhooks` schedule: claim every due delivery (new ones whose dispatch was lost,
    retries whose back-off has passed) and send them."""
    from chalicelib.db import session_scope

    now = now or utcnow()
    with session_scope() as session:
        claimed = _claim(session, now, limit=limit)
    return {"claimed": len(claimed), "sent": _send(claimed, now)}


def _claim(
    session: Session, now: datetime, *, ids: list[int] | None = None, limit: int = 1000
) -> list[int]:
    query = (
        select(WebhookDelivery.id)
        .where(WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
    )
    if ids is not None:
        query = query.where(WebhookDelivery.id.in_(ids))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    claimed = list(session.scalars(query))
    if claimed:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(claimed))
            .values(next_attempt_at=now + LEASE)
            .execution_options(synchronize_session=False)
        )
    return claimed


def _send(delivery_ids: list[int], now: datetime) -> int:
    if not delivery_ids:
        return 0
    queue_url = _queue_url()
    if queue_url:
        return _enqueue(queue_url, delivery_ids)
    for delivery_id in delivery_ids:
        attempt(delivery_id, now)
    return len(delivery_ids)


def _enqueue(queue_url: str, delivery_ids: list[int], delay: int = 0) -> int:
    import boto3

    sqs = boto3.client("sqs")
    sent = 0
    for i in range(0, len(delivery_ids), 10):
        chunk = delivery_ids[i : i + 10]
        response = sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {
                    "Id": str(n),
                    "MessageBody": json.dumps({"v": 1, "delivery": d}),
                    "DelaySeconds": delay,
                }
                for n, d in enumerate(chunk)
            ],
        )
        for failed in response.get("Failed", []):  # leased: the sweep sends them again
            log.error("webhooks: delivery not queued: %s", failed)
        sent += len(response.get("Successful", []))
    return sent


def handle_sqs_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The `webhook_worker`: one delivery attempt per message. A message that cannot be
    parsed is dropped (logged); attempts record their own failures (never raised)."""
    for record in records:
        try:
            delivery_id = int(json.loads(record["body"])["delivery"])
        except (KeyError, TypeError, ValueError):
            log.error("webhooks: unreadable message %s dropped", record.get("messageId"))
            continue
        attempt(delivery_id)
    return {"batchItemFailures": []}


def backoff(attempts: int) -> timedelta:
    """Wait after the `attempts`-th failed attempt: 30 s, 1 min, 2 min, … capped at 2 h."""
    return min(BASE_BACKOFF * (2 ** max(attempts - 1, 0)), MAX_BACKOFF)


def attempt(delivery_id: int, now: datetime | None = None) -> str:
    """One delivery attempt; returns the delivery's state afterwards ("delivered",
    "pending" (to be retried), "failed", or "skipped")."""
    from chalicelib.db import session_scope
    from chalicelib.http import OutboundError, request

    now = now or utcnow()
    with session_scope() as session:
        row = session.execute(
            select(WebhookDelivery, WebhookEndpoint, Notification)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .join(Notification, Notification.id == WebhookDelivery.notification_id)
            .where(WebhookDelivery.id == delivery_id)
        ).first()
        if row is None or row[0].state != "pending":
            return "skipped"
        delivery, endpoint, notification = row
        if not endpoint.enabled:
            # Disabled meanwhile: settled, so the sweep stops claiming it.
            delivery.state = "failed"
            delivery.last_error = "the endpoint is disabled"
            delivery.next_attempt_at = None
            return "failed"
        body, headers = request_for(delivery, endpoint, notification, now)
        url, seen_attempts = endpoint.url, delivery.attempts
    # No transaction is held while the receiver answers.
    status: int | None = None
    error: str | None = None
    try:
        response = request(
            "POST",
            url,
            data=body,
            headers=headers,
            timeout=TIMEOUT,
            retries=0,
            max_bytes=64 * 1024,
            allow_redirects=False,
        )
        status = response.status
        if not 200 <= status < 300:
            error = f"the endpoint answered {status}"
    except OutboundError as exc:
        error = exc.reason
    return _record(delivery_id, seen_attempts, status, error, now)


def _record(
    delivery_id: int, seen_attempts: int, status: int | None, error: str | None, now: datetime
) -> str:
    from chalicelib.config import get_settings
    from chalicelib.db import session_scope

    delay = None
    with session_scope() as session:
        query = select(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
        delivery = session.scalar(query)
        if delivery is None or delivery.state != "pending" or delivery.attempts != seen_attempts:
            return "skipped"  # deleted, or another attempt got there first
        endpoint = session.get(WebhookEndpoint, delivery.endpoint_id, with_for_update=True)
        delivery.attempts += 1
        delivery.last_status = status
        delivery.last_error = error
        if error is None:
            delivery.state = "delivered"
            delivery.next_attempt_at = None
            endpoint.consecutive_failures = 0
            return "delivered"
        endpoint.consecutive_failures += 1
        log.warning("webhooks: delivery %s to %s failed: %s", delivery.uuid, endpoint.uuid, error)
        if endpoint.consecutive_failures >= get_settings().webhook_disable_after:
            _disable(session, endpoint, error, now)
        if delivery.attempts >= MAX_ATTEMPTS or not endpoint.enabled:
            delivery.state = "failed"
            delivery.next_attempt_at = None
            return "failed"
        wait = backoff(delivery.attempts)
        delivery.next_attempt_at = now + wait
        if _queue_url() and wait.total_seconds() <= SQS_MAX_DELAY:
            # The message's delay is the back-off; the lease keeps the sweep off it.
            delay = int(wait.total_seconds())
            delivery.next_attempt_at = now + wait + LEASE
    if delay is not None:
        try:
            _enqueue(_queue_url(), [delivery_id], delay=delay)
        except Exception:  # the sweep picks it up after the lease
            log.exception("webhooks: could not queue the retry of %s", delivery_id)
    return "pending"


def _disable(session: Session, endpoint: WebhookEndpoint, error: str, now: datetime) -> None:
    from chalicelib.services import notifications

    endpoint.enabled = False
    endpoint.disabled_reason = (
        f"disabled after {endpoint.consecutive_failures} failed attempts in a row; last: {error}"
    )[:2000]
    log.warning("webhooks: endpoint %s disabled", endpoint.uuid)
    users: list[int] = []
    if endpoint.user_id is not None:
        users = [endpoint.user_id]
    elif endpoint.registry_id is not None and endpoint.workflow_id is not None:
        # A registry's endpoint for one workflow: tell the users that own the workflow.
        users = list(
            session.scalars(
                select(Permission.user_id).where(Permission.workflow_id == endpoint.workflow_id)
            )
        )
    registry_name = (
        session.scalar(select(Registry.name).where(Registry.id == endpoint.registry_id))
        if endpoint.registry_id is not None
        else None
    )
    notifications.notify_users(
        session,
        users,
        event=WEBHOOK_DISABLED,
        name=f"Webhook '{endpoint.uuid}' to {urlsplit(endpoint.url).hostname} disabled",
        data={
            "webhook": {
                "uuid": endpoint.uuid,
                "url": endpoint.url,
                "registry": registry_name,
                "reason": endpoint.disabled_reason,
            }
        },
        dedup_key=f"{WEBHOOK_DISABLED}:{endpoint.uuid}:{int(now.timestamp())}",
        now=now,
    )
