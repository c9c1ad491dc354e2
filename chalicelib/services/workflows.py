"""Reading and changing workflows, versions, suites, instances and builds (flows 3 and 1).

Reads come from the database only. Lists load every level in one query each (workflows,
versions, suites, instances, builds), so a page costs a fixed number of queries whatever
the number of workflows; statuses fold over the instances' denormalised build pointers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, exists, select
from sqlalchemy.orm import aliased, defer
from sqlalchemy.orm.attributes import set_committed_value

from chalicelib import status as status_rule
from chalicelib.auth.principals import Principal
from chalicelib.errors import BadRequestError, NotFoundError, NotImplementedYetError
from chalicelib.models import (
    Build,
    Permission,
    Registry,
    RegistryWorkflowVersion,
    Subscription,
    TestingService,
    TestInstance,
    TestSuite,
    Workflow,
    WorkflowVersion,
    utcnow,
)
from chalicelib.models.limits import check_length
from chalicelib.services import access
from chalicelib.services.status_upkeep import update_statuses

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

SUPPORTED_SERVICES = ("jenkins", "github", "travis", "gitlab")
MAX_BUILDS_LIMIT = 1000


@dataclass(slots=True)
class InstanceView:
    instance: TestInstance
    service: TestingService
    suite_uuid: str
    latest_build: Build | None = None
    last_completed_build: Build | None = None

    def state(self) -> status_rule.InstanceState:
        return status_rule.InstanceState(
            name=self.instance.name,
            resource=self.instance.resource,
            service_url=self.service.url,
            latest_build=self.latest_build,
            last_completed_build=self.last_completed_build,
            last_error=self.instance.last_error,
            stale_since=self.instance.stale_since,
            stale_after_days=self.instance.stale_after_days,
        )


@dataclass
class SuiteView:
    suite: TestSuite
    instances: list[InstanceView] = field(default_factory=list)

    def state(self) -> status_rule.SuiteState:
        return status_rule.SuiteState(self.suite.name, [i.state() for i in self.instances])

    def status(self) -> status_rule.StatusResult:
        return status_rule.compute([self.state()])


@dataclass(slots=True, eq=False)
class StoredStatus:
    """A version's stored status (status_upkeep): what lists show, read without its
    suites: the status, its reason, and the first of its latest builds with its instance."""

    aggregate_test_status: str
    reason: str | None
    build: Any = None  # BuildRow
    instance: InstanceView | None = None


@dataclass
class VersionView:
    version: WorkflowVersion
    is_latest: bool
    suites: list[SuiteView] = field(default_factory=list)
    registries: list[tuple[Registry, RegistryWorkflowVersion]] = field(default_factory=list)
    stored: StoredStatus | None = None

    def status(self) -> status_rule.StatusResult:
        return status_rule.compute([s.state() for s in self.suites])


# Row classes are slotted and not frozen: a frozen dataclass's __init__ makes one
# object.__setattr__ call per field, and a catalogue-wide list builds tens of thousands.
@dataclass(slots=True, eq=False)
class WorkflowRow:
    """Read-only workflow columns for lists."""

    id: int
    uuid: str
    name: str | None
    public: bool


@dataclass
class Page:
    """Optional keyset paging of lists, in workflow id order: at most `limit` workflows
    after the id `after`; `list_workflows` sets `next_after` when more follow."""

    limit: int
    after: int | None = None
    next_after: int | None = None


@dataclass
class WorkflowEntry:
    workflow: Workflow
    versions: list[VersionView]  # newest first
    subscriptions: list[Subscription] = field(default_factory=list)

    @property
    def latest(self) -> VersionView:
        return self.versions[0]


# --- loading -------------------------------------------------------------------------


def _in(session: Session, column, ids):
    """`column IN ids` as one bound array on Postgres (`= ANY(:ids)`): the statement and
    its plan stay the same size whatever the number of ids (and pg8000's 32,767-parameter
    limit never bites)."""
    ids = list(ids)
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy import Integer, any_, bindparam
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam(None, ids, type_=ARRAY(Integer)))
    return column.in_(ids)


def _ids_param(dialect: str, column):
    """`column IN :ids` with the ids bound at execution, so the statement can be built once
    and cached (building a wide SELECT costs more than running it)."""
    from sqlalchemy import Integer, any_, bindparam

    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam("ids", type_=ARRAY(Integer)))
    return column.in_(bindparam("ids", expanding=True))


_STATEMENTS: dict[tuple[str, str], Any] = {}


def _cached(session: Session, name: str, build):
    dialect = session.get_bind().dialect.name
    stmt = _STATEMENTS.get((name, dialect))
    if stmt is None:
        stmt = _STATEMENTS[(name, dialect)] = build(dialect)
    return stmt


def _plain_rows(
    session: Session, name: str, build, params: dict, *, document: bool = False
) -> Iterable[Sequence]:
    """The rows of a cached column statement. On Postgres each row comes back as one JSON
    array: pg8000 decodes every column of every row in Python, which was most of a
    catalogue-wide list's time, while one `json.loads` per row runs in C. Timestamps and
    floats are restored to what the columns' types give (aware UTC datetimes, floats).
    `document`: the whole result as one JSON array of rows (one `json.loads` in all, no
    per-row protocol work: for results of thousands of rows)."""
    if session.get_bind().dialect.name != "postgresql":
        return session.execute(_cached(session, name, build), params)
    key = name + (":json-document" if document else ":json")
    stmt, timestamps, floats = _cached(
        session, key, lambda d: _as_json_rows(build(d), document=document)
    )
    return _restore(session.execute(stmt, params), timestamps, floats, document)


def _restore(result, timestamps: list[int], floats: list[int], document: bool) -> list:
    if document:
        found = result.scalar()
        rows = found if found is not None else []
    else:
        rows = [row for (row,) in result]
    for row in rows:
        for i in timestamps:
            if row[i] is not None:
                row[i] = datetime.fromisoformat(row[i]).astimezone(UTC)
        for i in floats:
            if row[i] is not None:
                row[i] = float(row[i])
    return rows


def _as_json_rows(stmt, *, document: bool = False) -> tuple[Any, list[int], list[int]]:
    """`stmt` selecting one `json_build_array` of its columns instead (or, as a
    `document`, one `json_agg` of them in the statement's order), and the positions of its
    timestamp and float columns."""
    from sqlalchemy import Float, func

    from chalicelib.models.base import UTCDateTime

    columns = list(stmt.selected_columns)
    timestamps = [i for i, c in enumerate(columns) if isinstance(c.type, UTCDateTime)]
    floats = [i for i, c in enumerate(columns) if isinstance(c.type, Float)]
    row = func.json_build_array(*columns)
    if document:
        from sqlalchemy.dialects.postgresql import aggregate_order_by

        order = list(stmt._order_by_clauses)
        agg = func.json_agg(aggregate_order_by(row, *order) if order else row)
        return stmt.with_only_columns(agg).order_by(None), timestamps, floats
    return stmt.with_only_columns(row), timestamps, floats


def _query_rows(session: Session, stmt, *, document: bool = True) -> list:
    """The rows of a statement built per request (`_plain_rows` for uncached ones). A
    statement with a LIMIT must not be a `document`: the limit would apply to the
    aggregate's one row, not to the rows aggregated."""
    if session.get_bind().dialect.name != "postgresql":
        return list(session.execute(stmt))
    json_stmt, timestamps, floats = _as_json_rows(stmt, document=document)
    return _restore(session.execute(json_stmt), timestamps, floats, document)


def _versions_of(session: Session, workflow_ids: list[int]) -> dict[int, list[WorkflowVersion]]:
    out: dict[int, list[WorkflowVersion]] = defaultdict(list)
    if not workflow_ids:
        return out
    rows = session.scalars(
        _cached(
            session,
            "versions",
            lambda d: (
                select(WorkflowVersion)
                .options(defer(WorkflowVersion.crate_metadata))
                .where(_ids_param(d, WorkflowVersion.workflow_id))
                .order_by(
                    WorkflowVersion.workflow_id,
                    WorkflowVersion.created.desc(),
                    WorkflowVersion.id.desc(),
                )
            ),
        ),
        {"ids": list(workflow_ids)},
    )
    for v in rows:
        out[v.workflow_id].append(v)
    return out


def load_suites(session: Session, version_ids: list[int]) -> dict[int, list[SuiteView]]:
    """The versions' suites with their instances, services and builds: one query (suites
    without instances come with a row of NULLs)."""
    by_version: dict[int, list[SuiteView]] = defaultdict(list)
    if not version_ids:
        return by_version
    rows = _plain_rows(session, "suites+instances", _suites_statement, {"ids": list(version_ids)})
    views: dict[int, SuiteView] = {}
    ns = len(_SUITE_COLUMNS)
    services: dict[tuple, ServiceRow] = {}
    for row in rows:
        suite_id = row[0]
        view = views.get(suite_id)
        if view is None:
            view = views[suite_id] = SuiteView(SuiteRow(*row[:ns]))
            by_version[view.suite.workflow_version_id].append(view)
        if row[ns] is not None:  # an instance
            view.instances.append(_instance_view(row[ns:], view, services))
    return by_version


_SUITE_COLUMNS = (
    "id",
    "uuid",
    "workflow_version_id",
    "roc_suite",
    "name",
    "definition",
    "created",
    "modified",
    "status",
    "status_reason",
)


@dataclass(slots=True, eq=False)
class SuiteRow:
    """Read-only suite columns for lists and statuses."""

    id: int
    uuid: str
    workflow_version_id: int
    roc_suite: str | None
    name: str | None
    definition: dict | None
    created: Any
    modified: Any
    status: str
    status_reason: str | None


def _suites_statement(dialect: str):
    latest, completed = aliased(Build), aliased(Build)
    return (
        select(
            *[getattr(TestSuite, c) for c in _SUITE_COLUMNS], *_instance_columns(latest, completed)
        )
        .outerjoin(TestInstance, TestInstance.suite_id == TestSuite.id)
        .outerjoin(TestingService, TestInstance.testing_service_id == TestingService.id)
        .outerjoin(latest, latest.id == TestInstance.latest_build_id)
        .outerjoin(completed, completed.id == TestInstance.last_completed_build_id)
        .where(_ids_param(dialect, TestSuite.workflow_version_id))
        .order_by(TestSuite.id, TestInstance.id)
    )


_INSTANCE_COLUMNS = (
    "id",
    "uuid",
    "suite_id",
    "roc_instance",
    "name",
    "resource",
    "managed",
    "last_checked_at",
    "last_error",
    "created",
    "modified",
    "stale_after_days",
    "stale_since",
)
_SERVICE_COLUMNS = ("uuid", "type", "url")
_BUILD_COLUMNS = ("id", "build_id", "status", "started_at", "finished_at", "duration", "url")


@dataclass(slots=True, eq=False)
class InstanceRow:
    """Read-only instance columns for lists and statuses (no ORM identity-map cost)."""

    id: int
    uuid: str
    suite_id: int
    roc_instance: str | None
    name: str | None
    resource: str
    managed: bool
    last_checked_at: Any
    last_error: str | None
    created: Any
    modified: Any
    stale_after_days: int | None
    stale_since: Any


@dataclass(slots=True, eq=False)
class ServiceRow:
    uuid: str
    type: str
    url: str


@dataclass(slots=True, eq=False)
class BuildRow:
    id: int
    build_id: str
    status: str
    started_at: Any
    finished_at: Any
    duration: float | None
    url: str | None


def _instance_columns(latest, completed) -> list:
    return (
        [getattr(TestInstance, c) for c in _INSTANCE_COLUMNS]
        + [getattr(TestingService, c) for c in _SERVICE_COLUMNS]
        + [getattr(latest, c) for c in _BUILD_COLUMNS]
        + [getattr(completed, c) for c in _BUILD_COLUMNS]
    )


def _instance_view(row, suite: SuiteView, services: dict) -> InstanceView:
    """An InstanceView from the columns of `_instance_columns`."""
    ni, ns, nb = len(_INSTANCE_COLUMNS), len(_SERVICE_COLUMNS), len(_BUILD_COLUMNS)
    service_key = tuple(row[ni : ni + ns])
    service = services.get(service_key)
    if service is None:
        service = services[service_key] = ServiceRow(*service_key)
    lb = row[ni + ns : ni + ns + nb]
    cb = row[ni + ns + nb : ni + ns + 2 * nb]
    return InstanceView(
        InstanceRow(*row[:ni]),
        service,
        suite.suite.uuid,
        latest_build=BuildRow(*lb) if lb[0] is not None else None,
        last_completed_build=BuildRow(*cb) if cb[0] is not None else None,
    )


def _instances_statement(dialect: str):
    latest, completed = aliased(Build), aliased(Build)
    return (
        select(*_instance_columns(latest, completed))
        .join(TestingService, TestInstance.testing_service_id == TestingService.id)
        .outerjoin(latest, latest.id == TestInstance.latest_build_id)
        .outerjoin(completed, completed.id == TestInstance.last_completed_build_id)
        .where(_ids_param(dialect, TestInstance.suite_id))
        .order_by(TestInstance.id)
    )


def _load_instances(session: Session, views: dict[int, SuiteView]) -> None:
    """Instances with their service and both denormalised builds: one query, read as plain
    rows — a catalogue-wide list touches tens of thousands of them."""
    rows = _plain_rows(session, "instances", _instances_statement, {"ids": list(views)})
    services: dict[tuple, ServiceRow] = {}
    for row in rows:
        suite = views[row[2]]  # suite_id
        suite.instances.append(_instance_view(row, suite, services))


_VERSION_ROW_COLUMNS = (
    "id",
    "uuid",
    "workflow_id",
    "version",
    "name",
    "crate_origin",
    "based_on",
    "status",
    "status_reason",
    "status_build_id",
)


@dataclass(slots=True)
class VersionRow:
    """Read-only version columns for lists (no ORM identity-map cost per version)."""

    id: int
    uuid: str
    workflow_id: int
    version: str
    name: str | None
    crate_origin: str | None
    based_on: str | None
    status: str
    status_reason: str | None
    status_build_id: int | None
    workflow: Any = None  # the list's workflow row (links name its uuid)


@dataclass(slots=True, eq=False)
class RegistryRef:
    client_name: str | None


@dataclass(slots=True, eq=False)
class LinkRef:
    uri: str | None


def _version_list_statement(dialect: str, registries: bool, status: bool):
    """Versions of the listed workflows, newest first, each with (on demand) its
    registry links and the build its stored status shows, with that build's instance,
    service and suite: one row per version and link, primary-key lookups only."""
    from sqlalchemy import literal_column, null, true

    columns = [getattr(WorkflowVersion, c) for c in _VERSION_ROW_COLUMNS]
    if registries:
        columns += [RegistryWorkflowVersion.id, Registry.client_name, RegistryWorkflowVersion.uri]
    # A LATERAL lookup by primary key per version on Postgres: joined flat, the planner may
    # hash the whole builds table (10 ms at 160,000 builds, and builds only grow).
    lateral = status and dialect == "postgresql"
    if status:
        unused = {"created", "modified"}  # a nested instance shows neither
        shown_columns = (
            [getattr(Build, c).label(f"b_{c}") for c in _BUILD_COLUMNS]
            + [
                (null() if c in unused else getattr(TestInstance, c)).label(f"i_{c}")
                for c in _INSTANCE_COLUMNS
            ]
            + [getattr(TestingService, c).label(f"s_{c}") for c in _SERVICE_COLUMNS]
            + [TestSuite.uuid.label("suite_uuid")]
        )
    if lateral:
        shown = (
            select(*shown_columns)
            .join(TestInstance, TestInstance.id == Build.instance_id)
            .join(TestingService, TestingService.id == TestInstance.testing_service_id)
            .join(TestSuite, TestSuite.id == TestInstance.suite_id)
            .where(Build.id == WorkflowVersion.status_build_id)
            .limit(literal_column("1"))
            .lateral("shown")
        )
        columns += list(shown.c)
    elif status:
        columns += [c.element for c in shown_columns]
    stmt = select(*columns).where(_ids_param(dialect, WorkflowVersion.workflow_id))
    if registries:
        stmt = stmt.outerjoin(
            RegistryWorkflowVersion,
            RegistryWorkflowVersion.workflow_version_id == WorkflowVersion.id,
        ).outerjoin(Registry, RegistryWorkflowVersion.registry_id == Registry.id)
    if lateral:
        stmt = stmt.outerjoin(shown, true())
    elif status:
        stmt = (
            stmt.outerjoin(Build, Build.id == WorkflowVersion.status_build_id)
            .outerjoin(TestInstance, TestInstance.id == Build.instance_id)
            .outerjoin(TestingService, TestingService.id == TestInstance.testing_service_id)
            .outerjoin(TestSuite, TestSuite.id == TestInstance.suite_id)
        )
    order = [WorkflowVersion.workflow_id, WorkflowVersion.created.desc(), WorkflowVersion.id.desc()]
    if registries:
        order.append(RegistryWorkflowVersion.id)
    return stmt.order_by(*order)


def _version_views_of(
    session: Session, workflows: list, *, registries: bool, status: bool
) -> dict[int, list[VersionView]]:
    """Each workflow's version views, newest first, read as plain rows in one query."""
    out: dict[int, list[VersionView]] = defaultdict(list)
    if not workflows:
        return out
    by_id = {w.id: w for w in workflows}
    rows = _plain_rows(
        session,
        f"version-list:{int(registries)}{int(status)}",
        lambda d: _version_list_statement(d, registries, status),
        {"ids": list(by_id)},
        document=True,
    )
    nv = len(_VERSION_ROW_COLUMNS)
    nb, ni, ns = len(_BUILD_COLUMNS), len(_INSTANCE_COLUMNS), len(_SERVICE_COLUMNS)
    at = nv + (3 if registries else 0)
    names: dict[str | None, RegistryRef] = {}
    services: dict[tuple, ServiceRow] = {}
    current: VersionView | None = None
    for row in rows:
        if current is None or current.version.id != row[0]:
            version = VersionRow(*row[:nv], workflow=by_id[row[2]])
            versions = out[version.workflow_id]
            current = VersionView(version, not versions)
            versions.append(current)
            if status:
                build, instance = None, None
                if row[at] is not None:
                    build = BuildRow(*row[at : at + nb])
                    key = tuple(row[at + nb + ni : at + nb + ni + ns])
                    service = services.get(key)
                    if service is None:
                        service = services[key] = ServiceRow(*key)
                    instance = InstanceView(
                        InstanceRow(*row[at + nb : at + nb + ni]), service, row[at + nb + ni + ns]
                    )
                current.stored = StoredStatus(
                    version.status, version.status_reason, build, instance
                )
        if registries and row[nv] is not None:
            ref = names.get(row[nv + 1])
            if ref is None:
                ref = names[row[nv + 1]] = RegistryRef(row[nv + 1])
            current.registries.append((ref, LinkRef(row[nv + 2])))
    return out


def _registries_of(session: Session, version_ids: list[int]):
    out: dict[int, list] = defaultdict(list)
    if not version_ids:
        return out
    rows = session.execute(
        _cached(
            session,
            "registries",
            lambda d: (
                select(RegistryWorkflowVersion, Registry)
                .join(Registry, RegistryWorkflowVersion.registry_id == Registry.id)
                .where(_ids_param(d, RegistryWorkflowVersion.workflow_version_id))
            ),
        ),
        {"ids": list(version_ids)},
    ).all()
    for link, registry in rows:
        out[link.workflow_version_id].append((registry, link))
    return out


def list_workflows(
    session: Session,
    principal: Principal,
    *,
    mode: str = "visible",
    registry_id: int | None = None,
    user_id: int | None = None,
    with_status: bool = False,
    all_versions: bool = False,
    with_subscriptions: bool = False,
    page: Page | None = None,
) -> list[WorkflowEntry]:
    """mode: "visible" (GET /workflows), "user" (a user's own, plus subscribed ones when
    asked), "registry" (a registry's), "user_registry" (a user's on one registry).
    Every mode lists only what the caller may read, by the very clause single reads use
    (`access.readable_clause`): a registry listing a person's workflows sees neither the
    private ones that person submitted on their own nor their status reasons. Statuses are
    the stored ones (one row per version, never its suites); `page` limits the list to one
    page (the caller builds `links.next` from `page.next_after`)."""
    # Plain rows, not entities: a catalogue-wide list reads thousands of them.
    query = select(Workflow.id, Workflow.uuid, Workflow.name, Workflow.public).where(
        access.readable_clause(principal)
    )
    if mode in {"user", "user_registry"}:
        owned = exists().where(Permission.workflow_id == Workflow.id, Permission.user_id == user_id)
        if mode == "user" and with_subscriptions:
            # Subscribed workflows too — while the user may still read them.
            owned = owned | exists().where(
                Subscription.workflow_id == Workflow.id, Subscription.user_id == user_id
            )
        query = query.where(owned)
    if mode in {"registry", "user_registry"}:
        query = query.where(
            exists().where(
                RegistryWorkflowVersion.registry_id == registry_id,
                RegistryWorkflowVersion.workflow_version_id == WorkflowVersion.id,
                WorkflowVersion.workflow_id == Workflow.id,
            )
        )
    if page is not None:
        if page.after is not None:
            query = query.where(Workflow.id > page.after)
        query = query.limit(page.limit + 1)
    rows = _query_rows(session, query.order_by(Workflow.id), document=page is None)
    workflows = [WorkflowRow(*r) for r in rows]
    if page is not None and len(workflows) > page.limit:
        workflows = workflows[: page.limit]
        page.next_after = workflows[-1].id
    versions = _version_views_of(session, workflows, registries=all_versions, status=with_status)
    # A workflow is never left without versions; one that raced a deletion is skipped.
    entries = [WorkflowEntry(w, versions[w.id]) for w in workflows if versions.get(w.id)]
    if with_subscriptions and principal.user_id is not None and entries:
        subs = session.scalars(
            select(Subscription).where(
                Subscription.user_id == principal.user_id,
                _in(session, Subscription.workflow_id, [e.workflow.id for e in entries]),
            )
        )
        by_wf = defaultdict(list)
        for s in subs:
            by_wf[s.workflow_id].append(s)
        for e in entries:
            e.subscriptions = by_wf.get(e.workflow.id, [])
    return entries


def _workflow_statement(dialect: str):
    from sqlalchemy import bindparam

    return (
        select(Workflow, WorkflowVersion, RegistryWorkflowVersion, Registry)
        .join(WorkflowVersion, WorkflowVersion.workflow_id == Workflow.id)
        .outerjoin(
            RegistryWorkflowVersion,
            RegistryWorkflowVersion.workflow_version_id == WorkflowVersion.id,
        )
        .outerjoin(Registry, RegistryWorkflowVersion.registry_id == Registry.id)
        .options(defer(WorkflowVersion.crate_metadata))  # loaded only when asked for
        .where(Workflow.uuid == bindparam("uuid"))
        .order_by(
            WorkflowVersion.created.desc(), WorkflowVersion.id.desc(), RegistryWorkflowVersion.id
        )
    )


def _workflow_versions(
    session: Session, principal: Principal, wf_uuid: str
) -> tuple[Workflow, list[WorkflowVersion], dict[int, list]]:
    """The workflow (read access checked), its versions newest first and each version's
    registry links, in one query (a version has zero or one link, rarely more); the access
    check needs no more for public workflows."""
    rows = session.execute(
        _cached(session, "workflow+versions+registries", _workflow_statement), {"uuid": wf_uuid}
    ).all()
    if not rows:  # no such workflow (404, or 403), or one without versions
        return access.workflow_for_read(session, principal, wf_uuid), [], {}
    workflow = rows[0][0]
    access.check_read(session, principal, workflow)
    versions = list({v.id: v for _, v, _, _ in rows}.values())  # in the query's order
    regs: dict[int, list] = defaultdict(list)
    for _, v, link, registry in rows:
        if link is not None:
            regs[v.id].append((registry, link))
    return workflow, versions, regs


def get_version(
    session: Session,
    principal: Principal,
    wf_uuid: str,
    version: str | None = "latest",
    *,
    with_suites: bool = True,
) -> WorkflowEntry:
    """One workflow with the asked version first (the status and details endpoints)."""
    workflow, versions, regs = _workflow_versions(session, principal, wf_uuid)
    if not versions:
        raise NotFoundError(f"Workflow '{wf_uuid}' has no version")
    latest_id = versions[0].id
    chosen = versions[0]
    if version and version != "latest":
        chosen = next((v for v in versions if v.version == version), None)
        if chosen is None:
            raise NotFoundError(
                f"Workflow '{wf_uuid}' (ver.{version}) not found",
                resource_type="workflow_version",
                resource_identifier=f"{wf_uuid}:{version}",
            )
    ordered = [chosen] + [v for v in versions if v.id != chosen.id]
    views = [VersionView(v, v.id == latest_id) for v in ordered]
    if with_suites:
        views[0].suites = load_suites(session, [chosen.id]).get(chosen.id, [])
    for view in views:
        view.registries = regs.get(view.version.id, [])
    entry = WorkflowEntry(workflow, views)
    if principal.user_id is not None:
        entry.subscriptions = list(
            session.scalars(
                select(Subscription).where(
                    Subscription.user_id == principal.user_id,
                    Subscription.workflow_id == workflow.id,
                )
            )
        )
    return entry


def list_versions(session: Session, principal: Principal, wf_uuid: str) -> WorkflowEntry:
    workflow, versions, regs = _workflow_versions(session, principal, wf_uuid)
    return WorkflowEntry(
        workflow,
        [VersionView(v, i == 0, registries=regs.get(v.id, [])) for i, v in enumerate(versions)],
    )


# --- changes ---------------------------------------------------------------------------


def _text(body: dict, key: str, column: Any = None) -> str | None:
    """A non-empty string; `column` (a model attribute) bounds its length."""
    from chalicelib.models.limits import check_length

    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRequestError(f"'{key}' must be a non-empty string", field=key)
    return check_length(value.strip(), column, key) if column is not None else value.strip()


def _flag(body: dict, key: str) -> bool | None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise BadRequestError(f"'{key}' must be true or false", field=key)
    return value


def update_workflow(session: Session, principal: Principal, wf_uuid: str, body: Any) -> Workflow:
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    name, public = _text(body, "name", Workflow.name), _flag(body, "public")
    workflow = access.workflow_for_write(session, principal, wf_uuid)
    if name is not None:
        workflow.name = name
    if public is not None:
        workflow.public = public
    workflow.modified = utcnow()
    session.flush()
    return workflow


def delete_workflow(session: Session, principal: Principal, wf_uuid: str) -> list[str]:
    """Returns the stored crate locations to remove once the transaction committed."""
    workflow = access.workflow_for_write(session, principal, wf_uuid)
    versions = _versions_of(session, [workflow.id]).get(workflow.id, [])
    locations = [v.crate_location for v in versions if v.crate_location]
    forget_secrets(versions)
    session.delete(workflow)
    session.flush()
    return locations


def forget_secrets(versions: list[WorkflowVersion]) -> None:
    keys = [v.crate_authorization_key for v in versions if v.crate_authorization_key]
    if keys:
        from chalicelib.secrets import get_secrets

        store = get_secrets()
        for key in keys:
            store.delete(key)


def _version_for_write(session, principal, wf_uuid, version) -> WorkflowVersion:
    workflow = access.workflow_for_write(session, principal, wf_uuid)
    found = session.scalar(
        select(WorkflowVersion).where(
            WorkflowVersion.workflow_id == workflow.id, WorkflowVersion.version == version
        )
    )
    if found is None:
        raise NotFoundError(
            f"Workflow '{wf_uuid}' (ver.{version}) not found",
            resource_type="workflow_version",
            resource_identifier=f"{wf_uuid}:{version}",
        )
    # The checked workflow object itself: a lazy load later could find it deleted since.
    set_committed_value(found, "workflow", workflow)
    return found


def delete_version(session: Session, principal: Principal, wf_uuid: str, version: str) -> list[str]:
    """Deletes the whole workflow when it was its last version (as LifeMonitor)."""
    found = _version_for_write(session, principal, wf_uuid, version)
    workflow = found.workflow
    remaining = session.scalar(
        select(WorkflowVersion.id)
        .where(WorkflowVersion.workflow_id == workflow.id, WorkflowVersion.id != found.id)
        .limit(1)
    )
    locations = [found.crate_location] if found.crate_location else []
    forget_secrets([found])
    session.delete(workflow if remaining is None else found)
    session.flush()
    if remaining is not None:  # another version may now be the latest
        update_statuses(session, workflow_ids=[workflow.id])
    return locations


def update_version(
    session: Session, principal: Principal, wf_uuid: str, version: str, body: Any
) -> tuple[WorkflowVersion, bool]:
    """Name, visibility, version label and crate. Returns (version, crate replaced)."""
    from chalicelib.services.submission import Submission, replace_crate

    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    name, public = _text(body, "name", WorkflowVersion.name), _flag(body, "public")
    label = body.get("version")
    if label is not None:
        label = str(label).strip() if isinstance(label, str | int) else None
        if not label:
            raise BadRequestError("'version' must be a non-empty string", field="version")
        check_length(label, WorkflowVersion.version, "version")
    crate_given = bool(body.get("roc_link") or body.get("rocrate"))
    sub = (
        Submission.from_body({**body, "version": label or version}, allow_identifier=False)
        if crate_given
        else None
    )
    found = _version_for_write(session, principal, wf_uuid, version)
    if label is not None and label != found.version:
        clash = session.scalar(
            select(WorkflowVersion.id).where(
                WorkflowVersion.workflow_id == found.workflow_id, WorkflowVersion.version == label
            )
        )
        if clash is not None:
            from chalicelib.errors import WorkflowVersionConflictError

            raise WorkflowVersionConflictError(
                f"Workflow '{wf_uuid}' version '{label}' already exists"
            )
        found.version = label
    if name is not None:
        found.name = name
        found.workflow.name = name
    if public is not None:
        found.workflow.public = public
    replaced = replace_crate(session, principal, found, sub) if sub else False
    found.modified = utcnow()
    session.flush()
    return found, replaced


# --- suites, instances, builds ---------------------------------------------------------


def get_suite(
    session: Session, principal: Principal, suite_uuid: str, *, write: bool = False
) -> SuiteView:
    row = session.execute(
        select(TestSuite, Workflow)
        .join(WorkflowVersion, TestSuite.workflow_version_id == WorkflowVersion.id)
        .join(Workflow, WorkflowVersion.workflow_id == Workflow.id)
        .where(TestSuite.uuid == suite_uuid)
    ).first()
    if row is None:
        raise NotFoundError(
            f"Test suite '{suite_uuid}' not found",
            resource_type="test_suite",
            resource_identifier=suite_uuid,
        )
    suite, workflow = row
    access.check_read(session, principal, workflow)
    if write:
        access.require_write(session, principal, workflow)
    view = SuiteView(suite)
    _load_instances(session, {suite.id: view})
    return view


def update_suite(session: Session, principal: Principal, suite_uuid: str, body: Any) -> None:
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    name = _text(body, "name", TestSuite.name)
    view = get_suite(session, principal, suite_uuid, write=True)
    if name is not None:
        view.suite.name = name
    session.flush()
    update_statuses(session, suite_ids=[view.suite.id])  # the reason names the suite


def add_instance(
    session: Session, principal: Principal, suite_uuid: str, body: Any
) -> TestInstance:
    from chalicelib.services.submission import testing_service

    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    if body.get("managed") is True:
        raise NotImplementedYetError("Managed test instances are not supported")
    service = body.get("service")
    if not isinstance(service, dict):
        raise BadRequestError("'service' must be an object {type, url}", field="service")
    stype, url = service.get("type"), service.get("url")
    if stype not in SUPPORTED_SERVICES:
        raise BadRequestError(
            f"Testing service not supported: {stype!r}", supported=list(SUPPORTED_SERVICES)
        )
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise BadRequestError("'service.url' must be an http(s) URL", field="service.url")
    check_length(url.rstrip("/"), TestingService.url, "service.url")
    from chalicelib import http

    try:
        http.check_url(url)  # a host, no credentials: refused now rather than at each fetch
    except http.BlockedURLError as exc:
        raise BadRequestError(f"'service.url' refused: {exc.reason}", field="service.url") from None
    resource = _text(body, "resource", TestInstance.resource)
    if resource is None:
        raise BadRequestError("'resource' is required", field="resource")
    name = _text(body, "name", TestInstance.name)
    view = get_suite(session, principal, suite_uuid, write=True)
    instance = TestInstance(
        suite=view.suite,
        name=name,
        resource=resource,
        managed=False,
        testing_service=testing_service(session, stype, url.rstrip("/")),
        next_check_at=utcnow(),
    )
    session.add(instance)
    session.flush()
    update_statuses(session, suite_ids=[view.suite.id])
    return instance


def get_instance(
    session: Session, principal: Principal, instance_uuid: str, *, write: bool = False
) -> InstanceView:
    """The instance, its service, suite, workflow and builds in one query."""
    latest, completed = aliased(Build), aliased(Build)
    row = session.execute(
        select(TestInstance, TestingService, TestSuite.uuid, Workflow, latest, completed)
        .join(TestingService, TestInstance.testing_service_id == TestingService.id)
        .join(TestSuite, TestInstance.suite_id == TestSuite.id)
        .join(WorkflowVersion, TestSuite.workflow_version_id == WorkflowVersion.id)
        .join(Workflow, WorkflowVersion.workflow_id == Workflow.id)
        .outerjoin(latest, latest.id == TestInstance.latest_build_id)
        .outerjoin(completed, completed.id == TestInstance.last_completed_build_id)
        .where(TestInstance.uuid == instance_uuid)
    ).first()
    if row is None:
        raise NotFoundError(
            f"Test instance '{instance_uuid}' not found",
            resource_type="test_instance",
            resource_identifier=instance_uuid,
        )
    instance, service, suite_uuid, workflow, latest_build, completed_build = row
    access.check_read(session, principal, workflow)
    if write:
        access.require_write(session, principal, workflow)
    return InstanceView(instance, service, suite_uuid, latest_build, completed_build)


def update_instance(session: Session, principal: Principal, instance_uuid: str, body: Any) -> None:
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    name = _text(body, "name", TestInstance.name)
    stale_after_days = body.get("stale_after_days", ...)
    if (
        stale_after_days is not ...
        and stale_after_days is not None
        and (
            isinstance(stale_after_days, bool)
            or not isinstance(stale_after_days, int)
            or not 1 <= stale_after_days <= 3650
        )
    ):
        raise BadRequestError(
            "'stale_after_days' must be an integer from 1 to 3650, or null for the default",
            field="stale_after_days",
        )
    view = get_instance(session, principal, instance_uuid, write=True)
    if name is not None:
        view.instance.name = name
    if stale_after_days is not ...:
        # A new threshold is judged afresh by the next staleness check.
        view.instance.stale_after_days = stale_after_days
        view.instance.stale_since = None
    session.flush()
    update_statuses(session, instance_ids=[view.instance.id])  # the reason names it


def delete_instance(session: Session, principal: Principal, instance_uuid: str) -> None:
    view = get_instance(session, principal, instance_uuid, write=True)
    suite_id = view.instance.suite_id
    session.delete(view.instance)
    session.flush()
    update_statuses(session, suite_ids=[suite_id])


def latest_builds(
    session: Session, principal: Principal, instance_uuid: str, limit: int = 10
) -> tuple[InstanceView, list[Build]]:
    if limit < 1 or limit > MAX_BUILDS_LIMIT:
        raise BadRequestError(f"'limit' must be between 1 and {MAX_BUILDS_LIMIT}")
    view = get_instance(session, principal, instance_uuid)
    builds = list(
        session.scalars(
            select(Build)
            .where(Build.instance_id == view.instance.id)
            .order_by(Build.started_at.desc().nulls_last(), Build.id.desc())
            .limit(limit)
        )
    )
    return view, builds


def get_build(
    session: Session, principal: Principal, instance_uuid: str, build_id: str
) -> tuple[InstanceView, Build]:
    if not build_id or len(build_id) > 128:
        raise BadRequestError("Invalid build identifier")
    view = get_instance(session, principal, instance_uuid)
    build = session.scalar(
        select(Build).where(and_(Build.instance_id == view.instance.id, Build.build_id == build_id))
    )
    if build is None:
        raise NotFoundError(
            f"Build '{build_id}' of instance '{instance_uuid}' not found",
            resource_type="build",
            resource_identifier=build_id,
        )
    return view, build


def version_sizes(session: Session, version_ids: list[int]) -> dict[int, tuple[int, int]]:
    """Suites and test instances of each version, counted in one query (lists read stored
    statuses and load no suites; the dashboard still shows their number)."""
    from sqlalchemy import distinct, func

    if not version_ids:
        return {}
    rows = session.execute(
        select(
            TestSuite.workflow_version_id,
            func.count(distinct(TestSuite.id)),
            func.count(TestInstance.id),
        )
        .outerjoin(TestInstance, TestInstance.suite_id == TestSuite.id)
        .where(_in(session, TestSuite.workflow_version_id, version_ids))
        .group_by(TestSuite.workflow_version_id)
    )
    return {version_id: (suites, instances) for version_id, suites, instances in rows}
