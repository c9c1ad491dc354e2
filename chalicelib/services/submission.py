"""Submitting a workflow version (architecture flow 1, contract §1.3 and §5).

fetch the crate (registry download, `roc_link` through the guarded client, or base64)
→ parse it → one transaction writes workflow, version, suites, instances, registry link,
the submitter's permission and subscription → the bytes go to the crate store.
Nothing is written when any step fails.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import uuid as uuidlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import select

from chalicelib.auth.principals import Principal
from chalicelib.errors import (
    BadRequestError,
    PayloadTooLargeError,
    UnprocessableError,
    WorkflowVersionConflictError,
)
from chalicelib.models import (
    Permission,
    Registry,
    RegistryWorkflowVersion,
    TestingService,
    TestInstance,
    TestSuite,
    User,
    Workflow,
    WorkflowVersion,
    utcnow,
)
from chalicelib.services.status_upkeep import update_statuses

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from chalicelib.crates import CrateInfo

log = logging.getLogger(__name__)

MAX_CRATE_BYTES = 100 * 1024 * 1024
_GITHUB_REPO = re.compile(r"^https://github\.com/([\w.\-]+)/([\w.\-]+?)(?:\.git)?/?$")
UPLOADED = "local file uploaded"
MAX_SECRET_CHARS = 4096  # an SSM standard parameter's size: where `authorization` is kept


#: The body keys a workflow POST reads (contract §1.3); others are logged and ignored.
KNOWN_KEYS = frozenset(
    {
        "version",
        "uuid",
        "name",
        "public",
        "identifier",
        "roc_link",
        "authorization",
        "rocrate",
        "registry",
        "submitter_id",
        "user_id",
        "async",
    }
)


@dataclass
class Submission:
    """A parsed request body (contract §1.3)."""

    version: str | None = None
    uuid: str | None = None
    name: str | None = None
    public: bool = False
    identifier: str | None = None  # RegistryWorkflowVersion
    roc_link: str | None = None  # RoCrateLinkWorkflowVersion
    authorization: str | None = None
    rocrate: str | None = None  # RoCrateWorkflowVersion (base64)
    registry: str | None = None  # a registry name/uuid on user endpoints (LM extension)
    submitter_id: str | None = None  # registry clients: the submitter's person id there
    user_id: int | None = None  # registry clients: the submitter's id here

    @classmethod
    def from_body(
        cls, body: Any, *, allow_identifier: bool = True, allow_crate: bool = True
    ) -> Submission:
        if not isinstance(body, dict):
            raise BadRequestError("the request body must be a JSON object")
        known = KNOWN_KEYS

        def text(key: str) -> str | None:
            value = body.get(key)
            if value is None:
                return None
            if (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and key in {"version", "identifier"}
            ):
                return str(value)  # WorkflowHub sends numbers for ids and versions
            if not isinstance(value, str):
                raise BadRequestError(f"'{key}' must be a string", field=key)
            return value.strip() or None

        public = body.get("public", False)
        if not isinstance(public, bool):
            raise BadRequestError("'public' must be true or false", field="public")
        submitter = body.get("submitter_id")
        if submitter is not None and (
            isinstance(submitter, bool)
            or not isinstance(submitter, int | str)
            or not str(submitter).strip()
        ):
            raise BadRequestError(
                "'submitter_id' must be a person id of the registry", field="submitter_id"
            )
        user_id = body.get("user_id")
        if user_id is not None and (
            isinstance(user_id, bool)
            or not isinstance(user_id, int | str)
            or not str(user_id).isdigit()
        ):
            raise BadRequestError("'user_id' must be a user id", field="user_id")
        sub = cls(
            version=text("version"),
            uuid=text("uuid"),
            name=text("name"),
            public=public,
            identifier=text("identifier"),
            roc_link=text("roc_link"),
            authorization=text("authorization"),
            rocrate=text("rocrate"),
            registry=text("registry"),
            submitter_id=str(submitter).strip() if submitter is not None else None,
            user_id=int(user_id) if user_id is not None else None,
        )
        sources = [s for s in ("identifier", "roc_link", "rocrate") if getattr(sub, s)]
        allowed = ([("identifier")] if allow_identifier else []) + (
            ["roc_link", "rocrate"] if allow_crate else []
        )
        if not sources:
            raise BadRequestError(
                "Missing input: one of " + ", ".join(f"'{s}'" for s in allowed) + " is required",
                **{"missing input": " or ".join(allowed)},
            )
        if len(sources) > 1:
            raise BadRequestError(f"give only one of {', '.join(sources)}")
        if sources[0] not in allowed:
            raise BadRequestError(f"'{sources[0]}' is not accepted by this endpoint")
        if sub.uuid is not None:
            try:
                sub.uuid = str(uuidlib.UUID(sub.uuid))
            except ValueError:
                raise BadRequestError(f"'uuid' is not a UUID: {sub.uuid!r}", field="uuid") from None
        _check_lengths(sub)
        if sub.version is None and not sub.identifier:
            raise BadRequestError("'version' is required", field="version")
        if unknown := sorted(set(body) - known):
            log.info("submission: ignoring unknown keys %s", unknown)
        return sub


def _check_lengths(sub: Submission) -> None:
    """Every value that will be stored fits its column (limits from the models)."""
    from chalicelib.models.limits import check_length

    check_length(sub.version, WorkflowVersion.version, "version")
    check_length(sub.name, Workflow.name, "name")
    check_length(sub.identifier, RegistryWorkflowVersion.identifier, "identifier")
    check_length(sub.roc_link, WorkflowVersion.crate_origin, "roc_link")
    if sub.authorization is not None and len(sub.authorization) > MAX_SECRET_CHARS:
        raise BadRequestError(
            f"'authorization' is longer than {MAX_SECRET_CHARS} characters", field="authorization"
        )
    if sub.roc_link:
        _check_link(sub.roc_link)


def _check_link(link: str) -> None:
    """http(s), a host, no credentials in the URL: refused at once, not when fetched."""
    from chalicelib import http

    try:
        http.check_url(link)
    except http.BlockedURLError as exc:
        raise BadRequestError(f"'roc_link' refused: {exc.reason}", field="roc_link") from None


@dataclass
class FetchedCrate:
    data: bytes
    origin: str
    workflow_uuid: str | None = None  # adopted from the registry
    name: str | None = None
    version: str | None = None
    registry: Registry | None = None
    registry_identifier: str | None = None
    registry_link: str | None = None


def fetch_crate(session: Session, sub: Submission, registry: Registry | None) -> FetchedCrate:
    """Get the crate bytes; no database writes. Raises 400/404/422/503 with the reason."""
    if sub.identifier:
        if registry is None:
            raise BadRequestError("'identifier' needs a registry")
        return _from_registry(registry, sub)
    if sub.roc_link:
        return _from_link(sub.roc_link, sub.authorization, sub.version)
    return FetchedCrate(data=decode_rocrate(sub.rocrate), origin=UPLOADED)


def decode_rocrate(text: str | None) -> bytes:
    """The bytes of a base64 `rocrate` (400 if it is not base64 or empty)."""
    try:
        # Line-wrapped base64 (the `base64` tool, encodebytes) is fine, as in LifeMonitor.
        data = base64.b64decode("".join((text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError("'rocrate' is not valid base64") from None
    if not data:
        raise BadRequestError("'rocrate' is empty")
    return data


def _from_registry(registry: Registry, sub: Submission) -> FetchedCrate:
    from chalicelib.registries import seek

    client = seek.client_for(registry)
    data = client.get_workflow(sub.identifier)
    version = sub.version or seek.latest_version(data)
    if version is None:
        raise UnprocessableError(f"workflow {sub.identifier} on {registry.name} has no version")
    crate = client.download_crate(sub.identifier, version)
    return FetchedCrate(
        data=crate,
        origin=client.workflow_url(sub.identifier, version),
        workflow_uuid=seek.workflow_uuid(data),
        name=seek.workflow_title(data),
        version=version,
        registry=registry,
        registry_identifier=str(sub.identifier),
        registry_link=client.workflow_url(sub.identifier, version),
    )


def _from_link(link: str, authorization: str | None, version: str | None) -> FetchedCrate:
    from chalicelib import http

    parts = urlsplit(link)
    if parts.scheme not in {"http", "https"}:
        raise BadRequestError("'roc_link' must be an http(s) URL", field="roc_link")
    url = link
    repo = _GITHUB_REPO.match(link)
    if repo and version:
        # A GitHub repository: its archive at the branch or tag named like the version.
        url = f"https://github.com/{repo.group(1)}/{repo.group(2)}/archive/{version}.zip"
    headers = {"Authorization": authorization} if authorization else None
    try:
        response = http.get(url, headers=headers, max_bytes=MAX_CRATE_BYTES)
    except http.BlockedURLError as exc:
        raise BadRequestError(f"'roc_link' refused: {exc.reason}", field="roc_link") from None
    except http.OutboundError as exc:
        # 400, as LifeMonitor's spec and WorkflowHub expect for a crate that cannot be had.
        raise BadRequestError(
            f"cannot download 'roc_link': {exc.reason}", field="roc_link"
        ) from None
    if response.status in (401, 403):
        raise BadRequestError(
            f"'roc_link' answered {response.status}: not authorized", field="roc_link"
        )
    if response.status == 404:
        raise BadRequestError("'roc_link' answered 404: RO-Crate not found", field="roc_link")
    if not response.ok:
        raise BadRequestError(f"'roc_link' answered {response.status}", field="roc_link")
    return FetchedCrate(data=response.content, origin=http.redact(link))


def submit(
    session: Session,
    principal: Principal,
    sub: Submission,
    *,
    registry: Registry | None = None,
    submitter: User | None = None,
) -> WorkflowVersion:
    """Register a workflow version. The caller commits (one transaction); on any error
    nothing is written. Returns the new version."""
    from chalicelib import crates, storage

    fetched = fetch_crate(session, sub, registry)
    info: CrateInfo = crates.read_crate(fetched.data)
    version_label = sub.version or fetched.version
    name = sub.name or fetched.name or info.workflow_name
    if not name:
        raise BadRequestError("Missing attribute 'name'", field="name")
    from chalicelib.models.limits import check_length

    # From the registry or the crate rather than the body: still one column's worth.
    check_length(version_label, WorkflowVersion.version, "version", error=UnprocessableError)
    check_length(name, Workflow.name, "name", error=UnprocessableError)

    wf_uuid = fetched.workflow_uuid or sub.uuid
    workflow, created = _workflow_for_submission(session, wf_uuid, name, sub.public)
    if not created:
        from chalicelib.services.access import require_write

        # Ownership first: a conflict must not reveal someone else's private versions.
        require_write(session, principal, workflow)
        if (
            session.scalar(
                select(WorkflowVersion.id).where(
                    WorkflowVersion.workflow_id == workflow.id,
                    WorkflowVersion.version == version_label,
                )
            )
            is not None
        ):
            raise WorkflowVersionConflictError(
                f"Workflow '{workflow.uuid}' version '{version_label}' is already registered",
                resource_type="workflow_version",
                resource_identifier=workflow.uuid,
            )
        if sub.name:
            workflow.name = sub.name
        workflow.public = sub.public or workflow.public

    version = WorkflowVersion(
        workflow=workflow,
        version=version_label,
        name=name,
        submitter=submitter,
        crate_metadata=info.metadata,
        crate_origin=fetched.origin,
        crate_sha256=info.sha256,
        authors=info.authors,
        based_on=info.based_on,
    )
    session.add(version)
    session.flush()
    add_suites(session, version, info)
    if fetched.registry is not None:
        session.add(
            RegistryWorkflowVersion(
                workflow_registry=fetched.registry,
                workflow_version=version,
                identifier=fetched.registry_identifier,
                uri=fetched.registry_link,
            )
        )
    elif registry is not None and principal.registry_id == registry.id:
        # A registry client submitting by link or upload still "submitted" it.
        session.add(
            RegistryWorkflowVersion(
                workflow_registry=registry,
                workflow_version=version,
                identifier=workflow.uuid,
                uri=None,
            )
        )
    if submitter is not None:
        _grant_owner(session, submitter, workflow)
    if sub.authorization and sub.roc_link:
        from chalicelib.secrets import get_secrets

        key = f"workflows/{version.uuid}/authorization"
        get_secrets().put(key, sub.authorization)
        version.crate_authorization_key = key
    version.crate_location = storage.put_crate(workflow.uuid, version.uuid, fetched.data)
    session.flush()
    update_statuses(session, version_ids=[version.id], workflow_ids=[workflow.id])
    return version


def _workflow_for_submission(
    session: Session, wf_uuid: str | None, name: str, public: bool
) -> tuple[Workflow, bool]:
    """The workflow to add a version to, and whether this submission created it.

    Insert-or-nothing on the uuid, then the row locked: of concurrent submissions naming
    one new uuid, one creates it and the others wait for its commit and then see it (and
    its owner) like any existing workflow; their versions are serialised on the row, so a
    duplicate version is a clean 409, never a unique violation."""
    if wf_uuid is None:
        workflow = Workflow(name=name, public=public)
        session.add(workflow)
        session.flush()
        return workflow, True
    now = utcnow()
    inserted = session.execute(
        _insert(session, Workflow)
        .values(uuid=wf_uuid, name=name, public=public, created=now, modified=now)
        .on_conflict_do_nothing(index_elements=["uuid"])
    ).rowcount
    query = select(Workflow).where(Workflow.uuid == wf_uuid)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=Workflow)
    workflow = session.scalar(query.execution_options(populate_existing=True))
    if workflow is None:  # deleted between the two statements
        raise WorkflowVersionConflictError(f"Workflow '{wf_uuid}' was deleted concurrently")
    return workflow, inserted == 1


def _insert(session: Session, model):
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(model)


def check_crate_size(info: CrateInfo) -> None:
    """The configured bounds on what one crate may declare (413, nothing written)."""
    from chalicelib.config import get_settings

    settings = get_settings()
    suites = len(info.suites)
    instances = sum(len(spec.instances) for spec in info.suites)
    if suites > settings.max_suites_per_crate:
        raise PayloadTooLargeError(
            f"the crate declares {suites} test suites; at most "
            f"{settings.max_suites_per_crate} are accepted",
            field="suites",
            limit=settings.max_suites_per_crate,
        )
    if instances > settings.max_instances_per_crate:
        raise PayloadTooLargeError(
            f"the crate declares {instances} test instances; at most "
            f"{settings.max_instances_per_crate} are accepted",
            field="instances",
            limit=settings.max_instances_per_crate,
        )


def add_suites(session: Session, version: WorkflowVersion, info: CrateInfo) -> None:
    """The version's suites and instances in a fixed number of statements (bulk inserts:
    linear in the crate's size), services resolved once per distinct URL."""
    from sqlalchemy import insert

    check_crate_size(info)
    if not info.suites:
        return
    now = utcnow()
    services: dict[tuple[str, str], int] = {}
    for spec in info.suites:
        for inst in spec.instances:
            key = (inst.service_type, inst.service_url)
            if key not in services:
                services[key] = testing_service(session, *key).id
    suite_ids = session.scalars(
        insert(TestSuite).returning(TestSuite.id, sort_by_parameter_order=True),
        [
            {
                "uuid": str(uuidlib.uuid4()),
                "workflow_version_id": version.id,
                "roc_suite": spec.roc_suite,
                "name": spec.name,
                "definition": spec.definition,
                "created": now,
                "modified": now,
            }
            for spec in info.suites
        ],
    ).all()
    rows = [
        {
            "uuid": str(uuidlib.uuid4()),
            "suite_id": suite_id,
            "roc_instance": inst.roc_instance,
            "name": inst.name,
            "resource": inst.resource,
            "managed": False,
            "testing_service_id": services[(inst.service_type, inst.service_url)],
            "parameters": {},
            "consecutive_errors": 0,
            "next_check_at": now,  # due at once: the next refresh fetches its builds
            "created": now,
            "modified": now,
        }
        for suite_id, spec in zip(suite_ids, info.suites, strict=True)
        for inst in spec.instances
    ]
    if rows:
        session.execute(insert(TestInstance), rows)


def testing_service(session: Session, service_type: str, url: str) -> TestingService:
    """Get or create the service of this type at `url` (a service is its type and URL), safe
    under concurrent submissions. A well-known host (api.github.com, travis-ci, gitlab.com)
    only ever has its own type: claiming another is this crate's error, nobody else's."""
    from chalicelib.models.testing import well_known_type

    fixed = well_known_type(url)
    if fixed is not None and fixed != service_type:
        raise UnprocessableError(
            f"testing service {url} is a {fixed!r} service, not {service_type!r}",
            field="url",
            service_type=fixed,
        )
    identity = (TestingService.type == service_type, TestingService.url == url)
    service = session.scalar(select(TestingService).where(*identity))
    if service is not None:
        return service
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    now = utcnow()
    # Insert-or-nothing: two submissions naming a new CI at once both succeed.
    session.execute(
        insert(TestingService)
        .values(
            uuid=str(uuidlib.uuid4()),
            type=service_type,
            url=url,
            created=now,
            modified=now,
        )
        .on_conflict_do_nothing(index_elements=["type", "url"])
    )
    return session.scalar(select(TestingService).where(*identity))


def _grant_owner(session: Session, user: User, workflow: Workflow) -> None:
    if session.scalar(
        select(Permission.id).where(
            Permission.user_id == user.id, Permission.workflow_id == workflow.id
        )
    ):
        return
    session.add(Permission(user_id=user.id, workflow_id=workflow.id, roles=["owner"]))
    # The submitter is subscribed to their workflow (as in LifeMonitor).
    from chalicelib.services.subscriptions import ensure_subscribed

    session.flush()  # the workflow's id
    ensure_subscribed(session, user.id, workflow.id)


def replace_crate(
    session: Session, principal: Principal, version: WorkflowVersion, sub: Submission
) -> bool:
    """PUT of a version with a new crate source: re-read it; when the crate changed,
    rebuild its suites (builds of removed instances go with them). True if replaced."""
    from chalicelib import crates, storage

    if not (sub.roc_link or sub.rocrate):
        return False
    fetched = fetch_crate(session, sub, None)
    info = crates.read_crate(fetched.data)
    if info.sha256 == version.crate_sha256:
        return False
    for suite in list(
        session.scalars(select(TestSuite).where(TestSuite.workflow_version_id == version.id))
    ):
        session.delete(suite)
    session.flush()
    version.crate_metadata = info.metadata
    version.crate_sha256 = info.sha256
    version.crate_origin = fetched.origin
    version.authors = info.authors
    version.based_on = info.based_on
    add_suites(session, version, info)
    if sub.authorization and sub.roc_link:
        from chalicelib.secrets import get_secrets

        key = f"workflows/{version.uuid}/authorization"
        get_secrets().put(key, sub.authorization)
        version.crate_authorization_key = key
    version.crate_location = storage.put_crate(version.workflow.uuid, version.uuid, fetched.data)
    session.flush()
    update_statuses(session, version_ids=[version.id], workflow_ids=[version.workflow_id])
    return True


def _registry_linked_user(session: Session, principal: Principal, user_id: int) -> User:
    """A registry names as submitter only a user who signed in with an account of that
    registry (an identity on it). Nobody and somebody else's user get the same answer, so
    ids cannot be enumerated."""
    from chalicelib.models import Identity

    submitter = session.scalar(
        select(User)
        .join(Identity, Identity.user_id == User.id)
        .where(User.id == user_id, Identity.registry_id == principal.registry_id)
        .limit(1)
    )
    if submitter is None:
        raise BadRequestError(
            f"no user with id {user_id} is linked to this registry", field="user_id"
        )
    return submitter


@dataclass
class Prepared:
    """A parsed body and who it is submitted for: everything checked before any fetch."""

    sub: Submission
    registry: Registry | None
    submitter: User | None


def prepare(
    session: Session,
    principal: Principal,
    body: Any,
    *,
    registry: Registry | None = None,
    submitter: User | None = None,
    allow_identifier: bool = True,
    allow_crate: bool = True,
) -> Prepared:
    """Parse the body and resolve the registry and the submitter (400/401/404): the checks
    an asynchronous registration answers at once, before it queues the rest."""
    sub = Submission.from_body(body, allow_identifier=allow_identifier, allow_crate=allow_crate)
    if sub.registry and registry is None:
        from chalicelib.services.registries import find_registry

        registry = find_registry(session, sub.registry)
    if submitter is None and principal.is_registry:
        # Registry clients may name the submitter: `submitter_id` is the person on the
        # registry (via their identity), `user_id` our own id (LifeMonitor's semantics).
        if sub.submitter_id is not None:
            from chalicelib.services.users import registry_user

            submitter = registry_user(session, principal, sub.submitter_id)
        elif sub.user_id is not None:
            submitter = _registry_linked_user(session, principal, sub.user_id)
    if submitter is None and principal.user_id is not None:
        submitter = session.get(User, principal.user_id)
    return Prepared(sub=sub, registry=registry, submitter=submitter)


def register(
    session: Session,
    principal: Principal,
    body: Any,
    *,
    registry: Registry | None = None,
    submitter: User | None = None,
    allow_identifier: bool = True,
    allow_crate: bool = True,
) -> WorkflowVersion:
    """A workflow POST: parse the body, resolve who submits, submit."""
    p = prepare(
        session,
        principal,
        body,
        registry=registry,
        submitter=submitter,
        allow_identifier=allow_identifier,
        allow_crate=allow_crate,
    )
    return submit(session, principal, p.sub, registry=p.registry, submitter=p.submitter)
