"""E-mail: verifying a user's address, and mailing their notifications through Amazon SES
(boto3), or to the log in the embedded default (``LM_EMAIL_BACKEND=log``).

Fixed from LifeMonitor (contract §8): only *verified* addresses get mail. A verification
code is mailed to the address; its SHA-256 is kept with the address it was sent to, so a
code verifies that address only (changing the e-mail voids it). Notifications are sent by
the `email` schedule in batches; a failed send is retried with back-off, up to
`MAX_ATTEMPTS`, and the reason is kept on the recipient row. A user's
`notifications_enabled` switch turns e-mail off (the in-app list stays).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
import secrets as pysecrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from chalicelib.errors import BadRequestError, ConflictError, NotFoundError
from chalicelib.models import Notification, User, UserNotification, utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

BATCH = 50  # mails per run and per SES throttle window
MAX_ATTEMPTS = 5
CODE_TTL = timedelta(days=2)
RESEND_AFTER = timedelta(seconds=60)  # a user cannot flood an inbox with codes


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str
    html: str


# --- sending --------------------------------------------------------------------------------


def _settings():
    from chalicelib.config import get_settings

    return get_settings()


def send(mail: Mail) -> None:
    """Send one mail (plain-text and HTML parts) through the configured backend; raises on
    failure."""
    settings = _settings()
    if settings.email_backend == "log":
        log.info(
            "mail (not sent: LM_EMAIL_BACKEND=log) to %s: %s\n%s", mail.to, mail.subject, mail.text
        )
        return
    import boto3

    sender = settings.email_sender
    if not sender:  # deployed stages may keep it in the parameter store instead
        from chalicelib.secrets import get_secrets

        sender = get_secrets().get("email/sender")
    if not sender:
        raise RuntimeError(
            "no SES sender address: set LM_EMAIL_SENDER or the parameter email/sender"
        )
    boto3.client("ses").send_email(
        Source=sender,
        Destination={"ToAddresses": [mail.to]},
        Message={
            "Subject": {"Data": mail.subject, "Charset": "UTF-8"},
            "Body": {
                "Text": {"Data": mail.text, "Charset": "UTF-8"},
                "Html": {"Data": mail.html, "Charset": "UTF-8"},
            },
        },
    )


def _page(title: str, paragraphs: list[str], link: tuple[str, str] | None = None) -> str:
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    if link:
        body += f'<p><a href="{html.escape(link[1], quote=True)}">{html.escape(link[0])}</a></p>'
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head><body>{body}"
        "<p><small>LifeMonitor</small></p></body></html>"
    )


# --- verification ---------------------------------------------------------------------------


def _hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def verification_mail(address: str, link: str) -> Mail:
    text = (
        "Please confirm that LifeMonitor may send notifications to this address by opening:\n"
        f"{link}\n\nThe link is valid for two days. If you did not ask for it, ignore this mail."
    )
    return Mail(
        to=address,
        subject="LifeMonitor: confirm your e-mail address",
        text=text,
        html=_page(
            "Confirm your e-mail address",
            [
                "Please confirm that LifeMonitor may send notifications to this address.",
                "The link is valid for two days. If you did not ask for it, ignore this mail.",
            ],
            ("Confirm my address", link),
        ),
    )


def send_verification(session: Session, user_id: int, now: datetime | None = None) -> str:
    """Mail a verification link to the user's address; returns the address."""
    now = now or utcnow()
    user = session.get(User, user_id, with_for_update=session.get_bind().dialect.name != "sqlite")
    if user is None:
        raise NotFoundError("No such user")
    if not user.email:
        raise BadRequestError("Set an e-mail address on your profile first", field="email")
    if user.email_verified:
        raise ConflictError(f"The address {user.email} is already verified")
    if (
        user.email_verification_sent_at is not None
        and user.email_verification_address == user.email
        and now - user.email_verification_sent_at < RESEND_AFTER
    ):
        raise ConflictError("A verification mail was sent less than a minute ago")
    code = pysecrets.token_urlsafe(32)
    user.email_verification_hash = _hash(code)
    user.email_verification_address = user.email
    user.email_verification_sent_at = now
    session.flush()
    link = _settings().url_for(f"/account/validate_email?code={code}")
    send(verification_mail(user.email, link))
    return user.email


def validate(session: Session, code: str, now: datetime | None = None) -> User:
    """Verify the address a code was mailed to; the code is used up."""
    now = now or utcnow()
    if not code or len(code) > 128:
        raise BadRequestError("The verification link is not valid", field="code")
    user = session.scalar(select(User).where(User.email_verification_hash == _hash(code)))
    if (
        user is None
        or not hmac.compare_digest(user.email_verification_hash or "", _hash(code))
        or user.email_verification_address != user.email
        or user.email_verification_sent_at is None
        or now - user.email_verification_sent_at > CODE_TTL
    ):
        raise BadRequestError(
            "The verification link is not valid or has expired: ask for a new one", field="code"
        )
    user.email_verified = True
    user.email_verification_hash = None
    session.flush()
    return user


# --- notifications --------------------------------------------------------------------------

_SUBJECTS = {
    "BUILD_FAILED": "is failing",
    "BUILD_RECOVERED": "has recovered",
    "STALE": "is stale",
}


def notification_mail(address: str, notification: Notification) -> Mail:
    """LifeMonitor's subject: `Workflow "<name> (<version>)": test instance <name> is
    failing|has recovered`, with a link to the status."""
    data: dict[str, Any] = notification.data or {}
    build = data.get("build") or {}
    workflow = build.get("workflow") or data.get("workflow") or {}
    instance = build.get("instance") or data.get("instance") or {}
    what = _SUBJECTS.get(notification.event)
    if what and workflow:
        subject = (
            f'Workflow "{workflow.get("name")} ({workflow.get("version")})": '
            f"test instance {instance.get('name') or instance.get('uuid')} {what}"
        )
    else:
        subject = f"LifeMonitor: {notification.name}"
    lines = [notification.name]
    if build:
        lines.append(f"Build {build.get('build_id')}: {build.get('status')}")
    link = None
    if workflow.get("uuid"):
        link = _settings().url_for(f"/workflows/{workflow['uuid']}/status")
        lines.append(f"Status: {link}")
    origin = (build.get("links") or {}).get("origin")
    if origin:
        lines.append(f"Build page: {origin}")
    lines.append("You get this mail because you subscribed to this workflow on LifeMonitor.")
    return Mail(
        to=address,
        subject=subject[:200],
        text="\n".join(lines),
        html=_page(
            subject,
            [html.escape(x) for x in lines[:-1]] + [html.escape(lines[-1])],
            ("Open the status", link) if link else None,
        ),
    )


def send_pending(now: datetime | None = None, batch: int = BATCH) -> dict[str, int]:
    """The `email` schedule: mail up to `batch` due notifications to verified addresses of
    users with e-mail on; others are settled without mail (reason kept)."""
    from chalicelib.db import session_scope

    now = now or utcnow()
    counts = {"sent": 0, "failed": 0, "skipped": 0}
    with session_scope() as session:
        query = (
            select(UserNotification, Notification, User)
            .join(Notification, Notification.id == UserNotification.notification_id)
            .join(User, User.id == UserNotification.user_id)
            .where(
                UserNotification.emailed_at.is_(None),
                UserNotification.email_next_attempt_at.is_not(None),
                UserNotification.email_next_attempt_at <= now,
            )
            .order_by(UserNotification.email_next_attempt_at)
            .limit(batch)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(of=UserNotification, skip_locked=True)
        for row, notification, user in session.execute(query).all():
            reason = None
            if not user.notifications_enabled:
                reason = "e-mail notifications are off"
            elif not user.email:
                reason = "no e-mail address"
            elif not user.email_verified:
                reason = "the e-mail address is not verified"
            if reason:
                # Settled: nothing to retry (a later notification is judged afresh).
                row.email_next_attempt_at = None
                row.email_error = reason
                counts["skipped"] += 1
                continue
            try:
                send(notification_mail(user.email, notification))
            except Exception as exc:
                row.email_attempts += 1
                row.email_error = f"{type(exc).__name__}: {exc}"[:500]
                if row.email_attempts >= MAX_ATTEMPTS:
                    row.email_next_attempt_at = None
                else:
                    row.email_next_attempt_at = now + timedelta(
                        minutes=2 ** (row.email_attempts - 1)
                    )
                counts["failed"] += 1
                log.warning("mail to user %s failed: %s", user.id, row.email_error)
                continue
            row.emailed_at = now
            row.email_next_attempt_at = None
            row.email_error = None
            counts["sent"] += 1
    return counts
