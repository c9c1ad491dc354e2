"""Workflow registration, synchronous or as a job (`async: true`, contract §1.3).

Every workflow POST runs `register()`. With `async: true`, `start()` does at once what is
cheap and answers the caller's mistakes (auth is the route's; body shape and lengths, the
registry and the submitter, base64: the same functions as the synchronous path), stashes
the uploaded crate in the crate store and an `authorization` value in the parameter store
(neither goes into the table or the queue), writes a `waiting` job and queues
``{"kind": "register", "job": <id>}`` on the refresh queue. The refresh worker hands such
messages to `handle_message()`; with no queue configured (`make run`, tests) the job runs
inline through that same function before the API answers its 302.

A job runs at most once: the run claims it with ``UPDATE … WHERE status = 'waiting'``. A
run that died (Lambda timeout, out of memory) leaves it `registration started`; the SQS
redelivery that follows (the queue's visibility timeout is well past `STALE_AFTER`)
records the error instead of leaving it so forever.
"""

from __future__ import annotations

import base64
import logging
import uuid as uuidlib
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from chalicelib.auth.principals import Principal
from chalicelib.errors import LifeMonitorError, NotFoundError, ServiceUnavailableError
from chalicelib.models import RegistrationJob, utcnow
from chalicelib.models.jobs import COMPLETED, ERROR, STARTED, WAITING
from chalicelib.services import submission

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from chalicelib.models import WorkflowVersion

log = logging.getLogger(__name__)

#: The workflow POST routes (their registration differs in registry, submitter and sources).
USER = "user"  # POST /users/current/workflows
REGISTRY = "registry"  # POST /registries/current/workflows
REGISTRY_USER = "registry_user"  # POST /users/{user_id}/workflows
USER_REGISTRY = "user_registry"  # POST /registries/{registry_uuid}/workflows
ROUTES = (USER, REGISTRY, REGISTRY_USER, USER_REGISTRY)

JOB_TYPE = "register_workflow"  # LifeMonitor's job type
MESSAGE_KIND = "register"
# Longer than the worker's 120 s timeout, shorter than the queue's 720 s visibility timeout:
# when a redelivered message finds its job started longer ago, that run is dead.
STALE_AFTER = timedelta(minutes=5)
#: A job still waiting this long never will run: its queue message was dead-lettered (after
#: the queue's 5 receives of 12 minutes each) or lost. Housekeeping records it as an error.
ABANDONED_AFTER = timedelta(hours=6)
JOB_RETENTION = timedelta(days=30)
INTERNAL = "An internal error occurred; it has been logged"
# Kept out of the table: the crate (stashed in the crate store) and the secret (stashed in
# the parameter store).
_STASHED = ("rocrate", "authorization")


# --- the registration itself ---------------------------------------------------------------


def _context(session: Session, principal: Principal, route: str, params: dict[str, Any]) -> dict:
    """What a route adds to the body: its registry, its submitter, the sources it takes."""
    from chalicelib.services import registries, users

    if route == USER:
        return {"allow_identifier": False}
    if route == REGISTRY:
        return {"registry": registries.get_by_uuid(session, principal.registry_uuid)}
    if route == REGISTRY_USER:
        user = users.registry_user(session, principal, params["user_id"])
        return {
            "registry": registries.get_by_uuid(session, principal.registry_uuid),
            "submitter": user,
        }
    if route == USER_REGISTRY:
        return {
            "registry": registries.get_by_uuid(session, params["registry_uuid"]),
            "allow_crate": False,
        }
    raise ValueError(f"unknown registration route {route!r}")


def register(
    session: Session, principal: Principal, route: str, params: dict[str, Any], body: Any
) -> WorkflowVersion:
    """The registration of a workflow POST; the caller commits. Synchronous requests and
    jobs both come here."""
    return submission.register(
        session, principal, body, **_context(session, principal, route, params)
    )


def registered_body(version: WorkflowVersion) -> dict[str, Any]:
    """The 201 body of every workflow POST (LifeMonitor's actual shape, contract §1.3),
    and a completed job's `result`."""
    return {
        "uuid": version.workflow.uuid,
        "wf_version": version.version,
        "name": version.workflow.name,
        "meta": {"created": _epoch(version.created), "modified": _epoch(version.modified)},
    }


def _epoch(value) -> float | None:
    return value.timestamp() if value is not None else None


# --- principals, kept as JSON ---------------------------------------------------------------


def principal_json(principal: Principal) -> dict[str, Any]:
    """Who asked, without the credential: enough to act as them later."""
    return {
        "method": principal.method,
        "user_id": principal.user_id,
        "username": principal.username,
        "registry_id": principal.registry_id,
        "registry_uuid": principal.registry_uuid,
        "client_id": principal.client_id,
        "scopes": sorted(principal.scopes),
    }


def principal_from_json(data: dict[str, Any]) -> Principal:
    return Principal(
        method=data.get("method", "anonymous"),
        user_id=data.get("user_id"),
        username=data.get("username"),
        registry_id=data.get("registry_id"),
        registry_uuid=data.get("registry_uuid"),
        client_id=data.get("client_id"),
        scopes=frozenset(data.get("scopes") or ()),
    )


# --- the request side ------------------------------------------------------------------------


def wants_async(body: Any) -> bool:
    """True when the body asks for an asynchronous registration (`"async": true`)."""
    if not isinstance(body, dict) or body.get("async") is None:
        return False
    value = body["async"]
    if not isinstance(value, bool):
        from chalicelib.errors import BadRequestError

        raise BadRequestError("'async' must be true or false", field="async")
    return value


def job_view(job: RegistrationJob) -> dict[str, Any]:
    """LifeMonitor's job status document."""
    view: dict[str, Any] = {
        "job_id": job.uuid,
        "type": JOB_TYPE,
        "status": job.status,
        "created": _epoch(job.created),
        "modified": _epoch(job.modified),
    }
    if job.status == COMPLETED:
        view["result"] = job.result
    elif job.status == ERROR:
        view["error"] = job.error
    return view


def start(
    principal: Principal,
    route: str,
    params: dict[str, Any],
    body: dict[str, Any],
    *,
    request_url: str | None = None,
) -> dict[str, Any]:
    """Check the request, stash what cannot be kept in the table, write the job and queue
    it (or run it here when there is no queue). Returns the job's status document."""
    from chalicelib import storage
    from chalicelib.config import get_settings
    from chalicelib.db import session_scope
    from chalicelib.secrets import get_secrets

    if route not in ROUTES:
        raise ValueError(f"unknown registration route {route!r}")
    with session_scope() as s:
        prepared = submission.prepare(s, principal, body, **_context(s, principal, route, params))
    sub = prepared.sub
    job_uuid = str(uuidlib.uuid4())
    crate = submission.decode_rocrate(sub.rocrate) if sub.rocrate else None  # 400 now
    location = key = None
    try:
        if crate is not None:
            location = storage.put_job_crate(job_uuid, crate)
        if sub.authorization:
            key = f"jobs/{job_uuid}/authorization"
            get_secrets().put(key, sub.authorization)
        with session_scope() as s:
            job = RegistrationJob(
                uuid=job_uuid,
                status=WAITING,
                principal=principal_json(principal),
                route=route,
                params=dict(params),
                # Known keys only: the table keeps what the registration reads, no more.
                body={
                    k: v
                    for k, v in body.items()
                    if k in submission.KNOWN_KEYS and k not in _STASHED
                },
                request_url=request_url,
                crate_location=location,
                authorization_key=key,
            )
            s.add(job)
            s.flush()
            view = job_view(job)
    except BaseException:
        _discard(location, key)
        raise
    queue = get_settings().refresh_queue_url
    if not queue:
        handle_message(job_uuid)
        return status_of(job_uuid)
    from chalicelib import queues

    try:
        sent = queues.send_messages(queue, [{"kind": MESSAGE_KIND, "job": job_uuid}])
    except Exception:
        log.exception("registration job %s: cannot queue it", job_uuid)
        sent = 0
    if sent != 1:
        problem = ServiceUnavailableError("the registration could not be queued; try again")
        _finish(job_uuid, ERROR, error=problem.problem(request_url))
        _discard(location, key)
        raise problem
    return view


def status_of(job_uuid: str) -> dict[str, Any]:
    from chalicelib.db import session_scope

    with session_scope() as s:
        return job_view(s.scalar(select(RegistrationJob).where(RegistrationJob.uuid == job_uuid)))


def get_status(session: Session, principal: Principal, job_id: str) -> dict[str, Any]:
    """`GET /jobs/status/<job_id>`: the job, for the principal that created it (the same
    user, or the same registry); 404 for anybody else, so that ids tell nothing."""
    missing = NotFoundError(
        f"Job '{job_id}' not found", resource_type="job", resource_identifier=job_id
    )
    if not _is_uuid(job_id):
        raise missing
    job = session.scalar(select(RegistrationJob).where(RegistrationJob.uuid == job_id))
    if job is None or not may_read(principal, job.principal):
        raise missing
    return job_view(job)


def may_read(principal: Principal, owner: dict[str, Any]) -> bool:
    if principal.is_anonymous:
        return False
    if owner.get("user_id") is not None and principal.user_id == owner["user_id"]:
        return True
    return owner.get("registry_id") is not None and principal.registry_id == owner["registry_id"]


def _is_uuid(value: Any) -> bool:
    try:
        return isinstance(value, str) and str(uuidlib.UUID(value)) == value.lower()
    except ValueError:
        return False


def cleanup(session: Session, now=None) -> int:
    """Delete finished jobs older than `JOB_RETENTION` (the housekeeping schedule): a
    client polls for minutes, not months. Returns how many went."""
    from sqlalchemy import delete

    cutoff = (now or utcnow()) - JOB_RETENTION
    return session.execute(
        delete(RegistrationJob).where(
            RegistrationJob.status.in_((COMPLETED, ERROR)), RegistrationJob.modified < cutoff
        )
    ).rowcount


def expire_abandoned(now=None) -> int:
    """Jobs still waiting after `ABANDONED_AFTER` (the housekeeping schedule) become errors
    and their stashed crate and secret are removed; how many. Row locks skip a job a
    worker is claiming at that moment."""
    from chalicelib.db import session_scope

    now = now or utcnow()
    with session_scope() as s:
        jobs = list(
            s.scalars(
                select(RegistrationJob)
                .where(
                    RegistrationJob.status == WAITING,
                    RegistrationJob.modified < now - ABANDONED_AFTER,
                )
                .with_for_update(skip_locked=True)
            )
        )
        stashes = [(j.crate_location, j.authorization_key) for j in jobs]
        for job in jobs:
            job.status = ERROR
            job.error = LifeMonitorError(
                "the registration never started (its queued message was lost); submit again"
            ).problem(job.request_url)
            job.crate_location = job.authorization_key = None
            job.modified = now
    for location, key in stashes:  # after the commit: a leftover is harmless
        _discard(location, key)
    if jobs:
        log.error("registration jobs never started, recorded as errors: %d", len(jobs))
    return len(jobs)


# --- the worker side ---------------------------------------------------------------------------


def parse_message(message: Any) -> str | None:
    """The job id of a registration message; None for any other message (a refresh batch).
    Raises ValueError for a registration message that is not ours."""
    if not isinstance(message, dict) or message.get("kind") != MESSAGE_KIND:
        return None
    job = message.get("job")
    if not _is_uuid(job):
        raise ValueError(f"not a job id: {str(job)[:80]!r}")
    return job


def handle_message(job_uuid: str) -> bool:
    """Run a queued job. False when it is being run elsewhere right now: the message is to
    come back later (then the job has finished, or that run is dead and this records it)."""
    from chalicelib.db import session_scope

    now = utcnow()
    with session_scope() as s:
        claimed = s.execute(
            update(RegistrationJob)
            .where(RegistrationJob.uuid == job_uuid, RegistrationJob.status == WAITING)
            .values(status=STARTED, modified=now)
        ).rowcount
        if not claimed:
            row = s.execute(
                select(RegistrationJob.status, RegistrationJob.modified).where(
                    RegistrationJob.uuid == job_uuid
                )
            ).first()
    if claimed:
        _run(job_uuid)
        return True
    if row is None:
        log.warning("registration job %s: no such job, message dropped", job_uuid)
        return True
    if row.status != STARTED:
        log.info("registration job %s: already %s, redelivery ignored", job_uuid, row.status)
        return True
    if now - row.modified < STALE_AFTER:
        return False
    _record_dead_run(job_uuid, now)
    return True


def _record_dead_run(job_uuid: str, now) -> None:
    from chalicelib.db import session_scope

    with session_scope() as s:
        job = s.scalar(
            select(RegistrationJob)
            .where(
                RegistrationJob.uuid == job_uuid,
                RegistrationJob.status == STARTED,
                RegistrationJob.modified < now - STALE_AFTER,
            )
            .with_for_update()
        )
        if job is None:
            return
        location, key = job.crate_location, job.authorization_key
        job.status = ERROR
        job.error = LifeMonitorError(
            "the registration stopped before it finished (worker timeout or crash)"
        ).problem(job.request_url)
        job.crate_location = job.authorization_key = None
    log.error("registration job %s: its run died; recorded as an error", job_uuid)
    _discard(location, key)


def _run(job_uuid: str) -> None:
    """Run a claimed job: register as its principal, keep the 201 body or the problem."""
    from chalicelib import storage
    from chalicelib.db import session_scope
    from chalicelib.secrets import get_secrets

    with session_scope() as s:
        job = s.scalar(select(RegistrationJob).where(RegistrationJob.uuid == job_uuid))
        principal = principal_from_json(job.principal)
        route, params, body = job.route, dict(job.params), dict(job.body)
        request_url, location, key = job.request_url, job.crate_location, job.authorization_key
    try:
        if location:
            data = storage.get_crate(location)
            if data is None:
                raise LifeMonitorError("the uploaded crate is no longer stored")
            body["rocrate"] = base64.b64encode(data).decode("ascii")
        if key:
            body["authorization"] = _stashed_secret(get_secrets(), key)
        with session_scope() as s:
            _check_still_entitled(s, principal)
            result = registered_body(register(s, principal, route, params, body))
        _finish(job_uuid, COMPLETED, result=result)
    except LifeMonitorError as exc:
        _finish(job_uuid, ERROR, error=exc.problem(request_url))
    except Exception:
        # Recorded, not raised: a retry would find the job started and do nothing anyway.
        log.exception("registration job %s failed", job_uuid)
        _finish(job_uuid, ERROR, error=LifeMonitorError(INTERNAL).problem(request_url))
    finally:
        _discard(location, key)


def _check_still_entitled(session: Session, principal: Principal) -> None:
    """The job acts for whoever asked, later: refuse (403) if that account, registry or
    OAuth client has been deleted or revoked since (a revoked client's tokens are gone too,
    so the request would be refused now)."""
    from chalicelib.errors import ForbiddenError
    from chalicelib.models import OAuth2Client, Registry, User

    if principal.user_id is not None and session.get(User, principal.user_id) is None:
        raise ForbiddenError("the account that asked for this registration has been deleted")
    if principal.registry_id is not None and session.get(Registry, principal.registry_id) is None:
        raise ForbiddenError("the registry that asked for this registration has been deleted")
    if (
        principal.client_id
        and session.scalar(
            select(OAuth2Client.id).where(OAuth2Client.client_id == principal.client_id)
        )
        is None
    ):
        raise ForbiddenError("the OAuth client that asked for this registration was revoked")


def _stashed_secret(store, key: str) -> str:
    value = store.get(key)
    if value is None and hasattr(store, "invalidate"):
        # The SSM listing is cached per container: the API's Lambda wrote this one just now.
        store.invalidate()
        value = store.get(key)
    if value is None:
        raise LifeMonitorError("the stashed 'authorization' value is gone")
    return value


def _finish(
    job_uuid: str,
    status: str,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> None:
    from chalicelib.db import session_scope

    values: dict[str, Any] = {
        "status": status,
        "crate_location": None,
        "authorization_key": None,
        "modified": utcnow(),
    }
    # Only what there is: a JSON column given None would hold JSON `null`, not SQL NULL.
    if result is not None:
        values["result"] = result
    if error is not None:
        values["error"] = error
    with session_scope() as s:
        s.execute(update(RegistrationJob).where(RegistrationJob.uuid == job_uuid).values(values))


def _discard(location: str | None, key: str | None) -> None:
    """Remove a job's stashed crate and secret; a leftover is logged, never raised."""
    from chalicelib import storage
    from chalicelib.secrets import get_secrets

    if location:
        storage.remove_crates([location])
    if key:
        try:
            get_secrets().delete(key)
        except Exception:
            log.exception("could not delete parameter %s", key)
