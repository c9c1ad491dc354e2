"""Inbound CI webhooks: a signed delivery names a repository, job or project; the test
instances it concerns are found with one SQL query and refreshed at once, so a new build
status shows within seconds instead of after the next poll.

A delivery is only ever a *trigger*: nothing in its payload is stored or trusted as a build
status. The refresh reads the CI itself (`chalicelib.jobs.refresh`), so a replayed or
over-matching delivery costs at most a refresh, and duplicate deliveries are harmless
(builds are upserted).

Authentication, before anything touches the database (a failed check changes nothing):

* GitHub (``POST /webhooks/github``): ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the
  raw body>`` with the parameter-store secret ``webhooks/github/secret``. Bodies are JSON or
  ``application/x-www-form-urlencoded`` with the JSON in ``payload=``; the signature is over
  the bytes as sent either way.
* Jenkins (``POST /webhooks/jenkins``, the Notification plugin's JSON): a shared token in the
  ``X-Webhook-Token`` header or the ``token`` query parameter, compared with
  ``webhooks/jenkins/<host>/token`` (``<host>`` of the payload's ``build.full_url``) when
  that key exists, else ``webhooks/jenkins/token``.
* GitLab (``POST /webhooks/gitlab``): ``X-Gitlab-Token`` compared with
  ``webhooks/gitlab/<host>/secret`` (``<host>`` of ``X-Gitlab-Instance``, else of the
  payload's ``project.web_url``) when that key exists, else ``webhooks/gitlab/secret``.

``<host>`` is the lower-cased host name, with ``_<port>`` for a non-default port
(``ci.example.org``, ``127.0.0.1_8080``). A host with a key of its own accepts only that key,
and a delivery authenticated for a host only matches instances of services on that host.
Every comparison is constant-time. No configured key: 503, never an unauthenticated accept.

Matching (service type first, then resource patterns, then an exact check of the few
candidates with the adapters' own parsers):

* GitHub ``workflow_run``: services of type ``github`` (whose API host is the payload's
  ``repository.url`` host), instances whose resource names ``repository.full_name`` and the
  workflow by file name (``workflow_run.path`` / ``workflow.path``, e.g.
  ``.github/workflows/ci.yml`` → ``ci.yml``) or id (``workflow_run.workflow_id``).
* GitHub ``workflow_job`` (no workflow file in the payload): instances of that repository
  that already hold a build of the job's run (``<run_id>_<attempt>``); GitHub sends
  ``workflow_run`` when a run starts, so subscribe to both.
* Jenkins: services of type ``jenkins`` on the host of ``build.full_url``, instances whose
  normalised job path equals the payload's ``url`` (``job/folder/job/pipeline``).
* GitLab ``Pipeline Hook``: services of type ``gitlab`` on the instance's host, instances
  whose project is ``project.path_with_namespace`` or ``projects/<project.id>``.

An instance restricted to a branch or ref (``parameters.branch`` / ``ref``) is skipped when
the delivery names another one; managed instances are never matched (as in the scheduler).

Refresh (`refresh_matches`): with ``LM_REFRESH_QUEUE_URL`` set, up to `INLINE_LIMIT`
matches are refreshed within the request (``refresh.run_refresh``: concurrent, per-host
limits) and more are queued to SQS in the refresh job's message format; without a queue up
to `NO_QUEUE_INLINE_LIMIT` are refreshed inline. Fetches not started within `INLINE_BUDGET`
seconds (GitHub and GitLab wait 10 s for an answer, API Gateway 29 s) are queued, or made due
for the next scheduled refresh, as are the instances of a rate-limited service.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from chalicelib.errors import BadRequestError, LifeMonitorError, UnauthorizedError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 2 * 1024 * 1024  # GitHub's workflow_run payloads are ~30 KB
INLINE_LIMIT = 10  # matches refreshed within the request when a queue is configured
NO_QUEUE_INLINE_LIMIT = 50  # ... and without one (the rest wait for the scheduler)
# Seconds during which inline fetches may start: GitHub and GitLab give up on a delivery
# after 10 s (the refresh still completes), API Gateway answers 504 at 29 s, and a fetch
# started last may take a CI read timeout more.
INLINE_BUDGET = 5.0
MAX_MATCHES = 1000

GITHUB_SECRET_KEY = "webhooks/github/secret"  # noqa: S105 - a key name, not a secret
JENKINS_TOKEN_KEY = "webhooks/jenkins/token"  # noqa: S105
JENKINS_HOST_TOKEN_KEY = "webhooks/jenkins/{host}/token"  # noqa: S105
GITLAB_SECRET_KEY = "webhooks/gitlab/secret"  # noqa: S105
GITLAB_HOST_SECRET_KEY = "webhooks/gitlab/{host}/secret"  # noqa: S105
TOKEN_HEADER = "x-webhook-token"  # noqa: S105 - a header name

JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class WebhookNotConfiguredError(LifeMonitorError):
    status = 503
    title = "Service Unavailable"


class WebhookAuthError(UnauthorizedError):
    title = "Unauthorized"


class PayloadTooLargeError(LifeMonitorError):
    status = 413
    title = "Payload Too Large"


@dataclass(frozen=True)
class Match:
    id: int
    uuid: str
    service_url: str
    blocked: bool = False  # the service is rate-limited: leave it to the scheduler


@dataclass
class Outcome:
    """What a delivery did; `as_dict()` is the response body."""

    provider: str
    event: str
    action: str | None = None
    delivery: str | None = None
    handled: bool = True  # False: an event we do not act on
    ping: bool = False
    matches: list[Match] = field(default_factory=list)
    refreshed: list[str] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "provider": self.provider,
            "event": self.event,
            "action": self.action,
            "delivery": self.delivery,
            "matched": len(self.matches),
            "refreshed": self.refreshed,
            "queued": self.queued,
            "deferred": self.deferred,
            "failed": self.failed,
        }
        if not self.handled:
            body["ignored"] = True
        body.update(self.extra)
        return body


# -- helpers ------------------------------------------------------------------------------


def host_key(url: str | None) -> str | None:
    """``https://CI.example.org:8443/x`` → ``ci.example.org_8443``; a default port is
    dropped; a bare host name is accepted. None when there is no host."""
    text = (url or "").strip()
    if not text:
        return None
    try:
        parts = urlsplit(text if "://" in text else f"https://{text}")
        host, port = (parts.hostname or "").lower(), parts.port
    except ValueError:  # a port that is not a number, a broken IPv6 literal
        return None
    if not host:
        return None
    if port and port != _DEFAULT_PORTS.get(parts.scheme):
        host += f"_{port}"
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", host)


def _lower_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (headers or {}).items()}


def _check_size(body: bytes) -> None:
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLargeError(
            f"the webhook body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}"
        )


def _like(text: str) -> str:
    return text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _json_object(raw: bytes | str) -> dict:
    from chalicelib import safejson

    try:
        payload = safejson.loads(raw)
    except safejson.JSONInputError as exc:
        extra = {"field": exc.field} if exc.field else {}
        raise BadRequestError(f"malformed JSON body: {exc.message}", **extra) from None
    if not isinstance(payload, dict):
        raise BadRequestError("the webhook payload must be a JSON object")
    return payload


def _obj(payload: dict, key: str) -> dict:
    value = payload.get(key)
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _read_secret(key: str) -> str | None:
    from chalicelib.secrets import SecretError, get_secrets

    try:
        value = get_secrets().get(key)
    except (SecretError, ValueError) as exc:
        log.error("webhooks: cannot read %s from the parameter store: %s", key, exc)
        raise WebhookNotConfiguredError(
            "webhook secret not configured: the parameter store cannot be read"
        ) from None
    return value.strip() if value and value.strip() else None


def _secret_for(provider: str, global_key: str, host_template: str | None, host: str | None) -> str:
    """The host's own key when it has one, else the global one; 503 when neither is set."""
    if host_template and host:
        value = _read_secret(host_template.format(host=host))
        if value:
            return value
    value = _read_secret(global_key)
    if value:
        return value
    keys = [host_template.format(host=host)] if host_template and host else []
    raise WebhookNotConfiguredError(
        f"webhook secret not configured: set {' or '.join([*keys, global_key])} in the "
        f"parameter store to accept {provider} webhooks"
    )


def _known_token(provider: str, global_key: str, host_template: str, given: str | None) -> None:
    """Before the body is parsed: the token must be one of the configured ones (the global
    key or any host's), so an unauthenticated caller never gets us to parse anything. The
    host's own key is checked again once the payload names the host."""
    from chalicelib.secrets import SecretError, get_secrets

    prefix, _, suffix = host_template.partition("{host}")
    try:
        candidates = [
            value.strip()
            for key, value in get_secrets().all().items()
            if value
            and value.strip()
            and (key == global_key or (key.startswith(prefix) and key.endswith(suffix)))
        ]
    except (SecretError, ValueError) as exc:
        log.error("webhooks: cannot read the parameter store: %s", exc)
        raise WebhookNotConfiguredError(
            "webhook secret not configured: the parameter store cannot be read"
        ) from None
    if not candidates:
        raise WebhookNotConfiguredError(
            f"webhook secret not configured: set {host_template.replace('{host}', '<host>')} "
            f"or {global_key} in the parameter store to accept {provider} webhooks"
        )
    # Every candidate is compared (constant time each): no early exit telling which matched.
    matched = [_same(c, given) for c in candidates]
    if not any(matched):
        log.warning("webhooks: %s delivery refused before parsing: bad or missing token", provider)
        raise WebhookAuthError(f"missing or invalid {provider} webhook token")


def _same(expected: str, given: str | None) -> bool:
    if not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8", "replace"))


def github_signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for `body`."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_github_signature(secret: str, body: bytes, header: str | None) -> bool:
    if not header:
        return False
    algorithm, _, digest = header.strip().partition("=")
    if algorithm.strip().lower() != "sha256" or not digest:
        return False
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(
        expected.encode("ascii"), digest.strip().lower().encode("ascii", "replace")
    )


def _wants_branch(parameters: Any, ref: str | None) -> bool:
    """False when the instance is restricted to another branch or ref than `ref`."""
    if not ref or not isinstance(parameters, dict):
        return True
    wanted = parameters.get("branch") or parameters.get("ref")
    return not isinstance(wanted, str) or not wanted.strip() or wanted.strip() == ref


# -- SQL matching -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    id: int
    uuid: str
    resource: str
    parameters: Any
    service_url: str
    blocked: bool


def _services(
    session: Session,
    service_type: str,
    host: str | None,
    base: Callable[[str], str] = lambda url: url,
) -> list[int]:
    """Ids of the services of a type (a handful of rows), on `host` when given."""
    from sqlalchemy import select

    from chalicelib.models import TestingService

    ids = []
    for sid, url in session.execute(
        select(TestingService.id, TestingService.url).where(TestingService.type == service_type)
    ):
        if host is not None:
            try:
                if host_key(base(url)) != host:
                    continue
            except Exception:  # noqa: S112 - an unusable service URL never matches
                continue
        ids.append(sid)
    return ids


def _candidates(
    session: Session, service_ids: list[int], patterns: Iterable[str]
) -> list[_Candidate]:
    """Unmanaged instances of these services whose lower-cased resource is LIKE one of the
    (already escaped, lower-case) patterns."""
    from sqlalchemy import func, or_, select

    from chalicelib.models import TestingService, TestInstance, utcnow

    patterns = sorted(set(patterns))
    if not service_ids or not patterns:
        return []
    resource = func.lower(TestInstance.resource)
    rows = session.execute(
        select(
            TestInstance.id,
            TestInstance.uuid,
            TestInstance.resource,
            TestInstance.parameters,
            TestingService.url,
            TestingService.blocked_until,
        )
        .join(TestingService, TestInstance.testing_service_id == TestingService.id)
        .where(TestInstance.testing_service_id.in_(service_ids))
        .where(TestInstance.managed.is_(False))
        .where(or_(*(resource.like(p, escape="\\") for p in patterns)))
        .order_by(TestInstance.id)
        .limit(MAX_MATCHES)
    ).all()
    now = utcnow()
    return [_Candidate(r[0], r[1], r[2], r[3], r[4], r[5] is not None and r[5] > now) for r in rows]


def _as_match(c: _Candidate) -> Match:
    return Match(id=c.id, uuid=c.uuid, service_url=c.service_url, blocked=c.blocked)


# -- GitHub -------------------------------------------------------------------------------


def _github_repo(payload: dict) -> tuple[str, str]:
    full_name = _str(_obj(payload, "repository").get("full_name"))
    owner, _, repo = (full_name or "").partition("/")
    if not (_NAME.match(owner) and _NAME.match(repo)):
        raise BadRequestError("the payload has no valid repository.full_name (owner/name)")
    return owner, repo


def _workflow_file(path: Any) -> str | None:
    """``.github/workflows/ci.yml@refs/heads/main`` → ``ci.yml``."""
    text = _str(path)
    if not text:
        return None
    name = text.split("@", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return name if _NAME.match(name) else None


def _github_candidates(
    session: Session, payload: dict, owner: str, repo: str, workflows: set[str] | None
) -> list[_Candidate]:
    from chalicelib.testing import CIError
    from chalicelib.testing.github import api_base, parse_resource

    host = host_key(_str(_obj(payload, "repository").get("url")))
    services = _services(session, "github", host, api_base)
    prefix = f"{_like(owner)}/{_like(repo)}/actions/workflows/"
    if workflows is None:
        patterns = [f"%{prefix}%"]
    else:
        patterns = [f"%{prefix}{_like(w)}{tail}" for w in workflows for tail in ("", "/")]
    found = []
    for c in _candidates(session, services, patterns):
        try:
            ref = parse_resource(c.resource)
        except CIError:
            continue
        if (ref.owner.lower(), ref.repo.lower()) != (owner.lower(), repo.lower()):
            continue
        if workflows is not None and ref.workflow.lower() not in workflows:
            continue
        found.append(c)
    return found


def match_github_run(session: Session, payload: dict) -> list[Match]:
    owner, repo = _github_repo(payload)
    run, workflow = _obj(payload, "workflow_run"), _obj(payload, "workflow")
    names = {_workflow_file(run.get("path")), _workflow_file(workflow.get("path"))}
    ids = {_int(run.get("workflow_id")), _int(workflow.get("id"))}
    workflows = {n.lower() for n in names if n} | {str(i) for i in ids if i is not None}
    if not workflows:
        raise BadRequestError("the workflow_run payload names no workflow (path or id)")
    branch = _str(run.get("head_branch"))
    return [
        _as_match(c)
        for c in _github_candidates(session, payload, owner, repo, workflows)
        if _wants_branch(c.parameters, branch)
    ]


def match_github_job(session: Session, payload: dict) -> list[Match]:
    from sqlalchemy import select

    from chalicelib.models import Build

    owner, repo = _github_repo(payload)
    job = _obj(payload, "workflow_job")
    run_id = _int(job.get("run_id"))
    if run_id is None:
        raise BadRequestError("the workflow_job payload has no run_id")
    attempt = max(1, min(_int(job.get("run_attempt")) or 1, 100))
    candidates = _github_candidates(session, payload, owner, repo, None)
    if not candidates:
        return []
    # The job's workflow is the one whose instances already know its run.
    build_ids = [f"{run_id}_{n}" for n in range(1, attempt + 1)]
    known = set(
        session.scalars(
            select(Build.instance_id)
            .where(Build.instance_id.in_([c.id for c in candidates]))
            .where(Build.build_id.in_(build_ids))
        )
    )
    branch = _str(job.get("head_branch"))
    return [
        _as_match(c) for c in candidates if c.id in known and _wants_branch(c.parameters, branch)
    ]


def handle_github(headers: Mapping[str, str] | None, body: bytes) -> Outcome:
    """Verify, parse and act on one GitHub delivery."""
    h = _lower_headers(headers)
    body = body or b""
    _check_size(body)
    secret = _secret_for("GitHub", GITHUB_SECRET_KEY, None, None)
    if not verify_github_signature(secret, body, h.get("x-hub-signature-256")):
        log.warning(
            "webhooks: GitHub delivery %s refused: bad or missing signature",
            h.get("x-github-delivery", "-")[:64],
        )
        raise WebhookAuthError("missing or invalid X-Hub-Signature-256 signature")
    event = (h.get("x-github-event") or "").strip()
    if not event:
        raise BadRequestError("missing X-GitHub-Event header")
    payload = _github_payload(body, h.get("content-type", JSON_TYPE))
    outcome = Outcome(
        "github",
        event,
        action=_str(payload.get("action")),
        delivery=(h.get("x-github-delivery") or "")[:128] or None,
    )
    if outcome.delivery and not _first_delivery("github", outcome.delivery):
        # A replay (by an attacker holding a signed body, or a redelivery): acted on already.
        log.info("webhooks: GitHub delivery %s is a repeat; ignored", outcome.delivery)
        outcome.handled = False
        outcome.extra = {"duplicate": True}
        return outcome
    if event == "ping":
        outcome.ping = True
        outcome.extra = {"zen": _str(payload.get("zen")), "hook_id": _int(payload.get("hook_id"))}
        return outcome
    matcher = {"workflow_run": match_github_run, "workflow_job": match_github_job}.get(event)
    if matcher is None:
        outcome.handled = False
        return outcome
    return _match_and_refresh(outcome, matcher, payload)


DELIVERY_MEMORY = 24 * 3600  # seconds a delivery id is remembered


def _first_delivery(provider: str, delivery_id: str) -> bool:
    """Record a delivery id; False when it was already recorded within DELIVERY_MEMORY.
    In the database, so a replay is recognised whichever container receives it; ids older
    than a day are deleted as new ones come (an indexed range delete)."""
    from datetime import timedelta

    from sqlalchemy import delete

    from chalicelib.db import session_scope
    from chalicelib.models import ReceivedDelivery, utcnow

    now = utcnow()
    with session_scope() as session:
        session.execute(
            delete(ReceivedDelivery).where(
                ReceivedDelivery.received_at < now - timedelta(seconds=DELIVERY_MEMORY)
            )
        )
        if session.get_bind().dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        result = session.execute(
            insert(ReceivedDelivery)
            .values(provider=provider, delivery_id=delivery_id, received_at=now)
            .on_conflict_do_nothing(index_elements=["provider", "delivery_id"])
        )
        return result.rowcount == 1


def _github_payload(body: bytes, content_type: str) -> dict:
    if content_type.split(";", 1)[0].strip().lower() == FORM_TYPE:
        try:
            fields = parse_qs(body.decode("utf-8"), strict_parsing=False)
        except UnicodeDecodeError:
            raise BadRequestError("the form body is not UTF-8") from None
        values = fields.get("payload")
        if not values:
            raise BadRequestError("the form body has no payload field")
        return _json_object(values[0])
    return _json_object(body)


# -- Jenkins ------------------------------------------------------------------------------


def _jenkins_job_path(payload: dict) -> str:
    from chalicelib.testing import CIError
    from chalicelib.testing.jenkins import parse_job_path

    job_url = _str(payload.get("url"))
    if job_url is None:
        build_url = _str(_obj(payload, "build").get("url"))
        if build_url:
            parts = build_url.strip("/").split("/")
            job_url = "/".join(parts[:-1] if parts[-1].isdigit() else parts)
    if not job_url:
        raise BadRequestError("the Jenkins payload has no job url (url or build.url)")
    try:
        return parse_job_path(job_url)
    except CIError as exc:
        raise BadRequestError(str(exc)) from None


def match_jenkins(session: Session, payload: dict, host: str | None) -> list[Match]:
    from chalicelib.testing import CIError
    from chalicelib.testing.jenkins import parse_job_path

    job_path = _jenkins_job_path(payload)
    last = job_path.rsplit("/", 1)[-1]
    names = {last, unquote(last), unquote(unquote(last))}
    patterns = [f"%{_like(n)}%" for n in names if n]
    wanted = _without_views(job_path)
    found = []
    for c in _candidates(session, _services(session, "jenkins", host), patterns):
        try:
            if _without_views(parse_job_path(c.resource, c.service_url)) == wanted:
                found.append(_as_match(c))
        except CIError:
            continue
    return found


def _without_views(job_path: str) -> str:
    """``job/a/view/all/job/b`` → ``job/a/job/b``, lower-cased: views are ways to list a
    job, not part of its identity (and Jenkins' notifications name jobs without them)."""
    parts = job_path.split("/")
    pairs = zip(parts[0::2], parts[1::2], strict=False)
    return "/".join(f"{kind}/{name}" for kind, name in pairs if kind == "job").lower()


def handle_jenkins(
    headers: Mapping[str, str] | None, query: Mapping[str, str] | None, body: bytes
) -> Outcome:
    """The Jenkins Notification plugin's JSON: ``{name, url, build: {full_url, number,
    phase, status, url, ...}}``."""
    h = _lower_headers(headers)
    body = body or b""
    _check_size(body)
    given = h.get(TOKEN_HEADER) or (query or {}).get("token")
    _known_token("Jenkins", JENKINS_TOKEN_KEY, JENKINS_HOST_TOKEN_KEY, given)
    payload = _json_object(body)
    build = _obj(payload, "build")
    host = host_key(_str(build.get("full_url")))
    token = _secret_for("Jenkins", JENKINS_TOKEN_KEY, JENKINS_HOST_TOKEN_KEY, host)
    if not _same(token, given):
        log.warning(
            "webhooks: Jenkins delivery for %s refused: bad or missing token",
            host or "an unknown host",
        )
        raise WebhookAuthError(
            "missing or invalid token (X-Webhook-Token header or token query parameter)"
        )
    phase = _str(build.get("phase"))
    outcome = Outcome("jenkins", "build", action=phase.upper() if phase else None)
    number = _int(build.get("number"))
    outcome.extra = {
        "job": _str(payload.get("name")),
        "build": number,
        "status": _str(build.get("status")),
    }
    return _match_and_refresh(outcome, lambda s, p: match_jenkins(s, p, host), payload)


# -- GitLab -------------------------------------------------------------------------------


def match_gitlab(session: Session, payload: dict, host: str | None) -> list[Match]:
    from chalicelib.testing import CIError
    from chalicelib.testing.gitlab import parse_resource

    project = _obj(payload, "project")
    project_id = _int(project.get("id"))
    if project_id is None:
        project_id = _int(payload.get("project_id"))
    path = _str(project.get("path_with_namespace"))
    if path is not None and not all(_NAME.match(s) for s in path.split("/")):
        raise BadRequestError("invalid project.path_with_namespace")
    if path is None and project_id is None:
        raise BadRequestError(
            "the payload names no project (project.path_with_namespace or project.id)"
        )
    patterns = []
    if path:
        patterns += [f"%{_like(path)}%", f"%{_like(quote(path, safe=''))}%"]
    if project_id is not None:
        patterns.append(f"%projects/{project_id}%")
    ref = _str(_obj(payload, "object_attributes").get("ref"))
    found = []
    for c in _candidates(session, _services(session, "gitlab", host), patterns):
        try:
            target = parse_resource(c.resource, c.service_url)
        except CIError:
            continue
        same = (
            target.path is not None and path is not None and target.path.lower() == path.lower()
        ) or (target.path is None and project_id is not None and target.ref == str(project_id))
        if same and _wants_branch(c.parameters, ref):
            found.append(_as_match(c))
    return found


def handle_gitlab(headers: Mapping[str, str] | None, body: bytes) -> Outcome:
    """A GitLab ``Pipeline Hook`` (other events are acknowledged and ignored)."""
    h = _lower_headers(headers)
    body = body or b""
    _check_size(body)
    _known_token("GitLab", GITLAB_SECRET_KEY, GITLAB_HOST_SECRET_KEY, h.get("x-gitlab-token"))
    payload = _json_object(body)
    host = host_key(h.get("x-gitlab-instance")) or host_key(
        _str(_obj(payload, "project").get("web_url"))
    )
    secret = _secret_for("GitLab", GITLAB_SECRET_KEY, GITLAB_HOST_SECRET_KEY, host)
    if not _same(secret, h.get("x-gitlab-token")):
        log.warning(
            "webhooks: GitLab delivery for %s refused: bad or missing token",
            host or "an unknown host",
        )
        raise WebhookAuthError("missing or invalid X-Gitlab-Token")
    event = _str(h.get("x-gitlab-event")) or _str(payload.get("object_kind")) or "unknown"
    attributes = _obj(payload, "object_attributes")
    outcome = Outcome(
        "gitlab",
        event,
        action=_str(attributes.get("status")),
        delivery=(h.get("x-gitlab-event-uuid") or "")[:128] or None,
    )
    if event != "Pipeline Hook" and payload.get("object_kind") != "pipeline":
        outcome.handled = False
        return outcome
    outcome.extra = {"pipeline": _int(attributes.get("id")), "ref": _str(attributes.get("ref"))}
    return _match_and_refresh(outcome, lambda s, p: match_gitlab(s, p, host), payload)


# -- refresh ------------------------------------------------------------------------------


def _match_and_refresh(
    outcome: Outcome, matcher: Callable[[Session, dict], list[Match]], payload: dict
) -> Outcome:
    from chalicelib.db import session_scope

    with session_scope() as session:
        outcome.matches = matcher(session, payload)
    report = refresh_matches(outcome.matches)
    outcome.refreshed = report["refreshed"]
    outcome.queued = report["queued"]
    outcome.deferred = report["deferred"]
    outcome.failed = report["failed"]
    log.info(
        "webhooks: %s %s (%s) delivery %s matched %d instance(s)",
        outcome.provider,
        outcome.event,
        outcome.action or "-",
        outcome.delivery or "-",
        len(outcome.matches),
        extra={
            "refreshed": len(outcome.refreshed),
            "queued": len(outcome.queued),
            "deferred": len(outcome.deferred),
            "failed": len(outcome.failed),
        },
    )
    return outcome


def refresh_matches(
    matches: list[Match], *, inline_limit: int | None = None, budget: float = INLINE_BUDGET
) -> dict[str, list[str]]:
    """Refresh the matched instances now (a few), or queue them (many, with a queue), or
    make them due for the scheduler (blocked services, or past the time budget)."""
    from chalicelib.config import get_settings

    report: dict[str, list[str]] = {"refreshed": [], "queued": [], "deferred": [], "failed": []}
    ready = [m for m in matches if not m.blocked]
    waiting = [m for m in matches if m.blocked]
    queue = get_settings().refresh_queue_url
    limit = (
        inline_limit
        if inline_limit is not None
        else (INLINE_LIMIT if queue else NO_QUEUE_INLINE_LIMIT)
    )
    later: list[Match] = []
    if queue and len(ready) > limit:
        later = ready
    elif ready:
        from chalicelib.jobs import refresh

        inline, later = ready[:limit], ready[limit:]
        # Concurrent, at most a few fetches per CI host, no database connection held while
        # a CI answers; fetches not started within the budget come back "deferred".
        results = refresh.run_refresh([m.id for m in inline], deadline=time.monotonic() + budget)
        outcomes = {r.instance_id: r.outcome for r in results}
        for match in inline:
            outcome = outcomes.get(match.id, refresh.MISSING)
            if outcome in (refresh.UPDATED, refresh.UNCHANGED):
                report["refreshed"].append(match.uuid)
            elif outcome == refresh.DEFERRED:
                later.append(match)
            elif outcome != refresh.MISSING:  # deleted since it matched: nothing to do
                report["failed"].append(match.uuid)
    if later and queue:
        try:
            _queue(queue, later)
            report["queued"] = [m.uuid for m in later]
            later = []
        except Exception:
            log.exception(
                "webhooks: could not queue %d refreshes; left to the scheduler", len(later)
            )
    waiting += later
    if waiting:
        make_due([m.id for m in waiting])
        report["deferred"] = [m.uuid for m in waiting]
    return report


def _queue(queue_url: str, matches: list[Match]) -> None:
    from chalicelib.jobs import refresh

    messages = refresh.build_messages((m.id, m.service_url) for m in matches)
    from chalicelib import queues

    sent = queues.send_messages(queue_url, messages)
    if sent < len(messages):
        raise RuntimeError(f"only {sent} of {len(messages)} refresh messages were queued")


def make_due(instance_ids: list[int]) -> None:
    """Bring the next check of these instances forward to now (never push it back)."""
    from sqlalchemy import or_, update

    from chalicelib.db import session_scope
    from chalicelib.models import TestInstance, utcnow

    if not instance_ids:
        return
    now = utcnow()
    with session_scope() as session:
        session.execute(
            update(TestInstance)
            .where(TestInstance.id.in_(instance_ids))
            .where(or_(TestInstance.next_check_at.is_(None), TestInstance.next_check_at > now))
            .values(next_check_at=now)
        )
