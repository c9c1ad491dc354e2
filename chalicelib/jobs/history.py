"""Build history statistics, computed in SQL over the durable `builds` rows.

For a group of instances — one instance, or every instance of a workflow version — and a
clock `now`:

* **last green**: the newest passed build (by start time) and when it ended;
* per window of 7, 30 and 90 days (builds *started* in the window):
  * **pass rate**: passed / completed builds (completed = passed, failed or error; running,
    waiting and aborted builds count for nothing, as in the status rule), None without any;
  * **mean time to recovery**: over the failure episodes of each instance (a failing
    completed build after a pass, or a first build that fails) that *recovered* within the
    window, the mean time from the episode's first failing build to the next passing build
    (each at its end time, else its start). Episodes are found over the whole history, so
    one that began before the window is measured from its real start;
* **failing since**: when the oldest still-open failure episode began (None when green);
* **duration trend**: the mean duration of the newest 10 completed builds against the 10
  before them, and the last N durations (oldest first).

Five statements per call whatever the number of instances or builds; each returns one row
per group (or N rows for the duration series): nothing loads every build.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from chalicelib.models import Build, TestInstance, TestSuite, utcnow
from chalicelib.models.base import UTCDateTime
from chalicelib.models.testing import COMPLETED_STATUSES

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

WINDOWS = (7, 30, 90)  # days
TREND_SIZE = 10  # builds per half of the duration comparison
DEFAULT_SERIES = 20
MAX_SERIES = 100
TREND_TOLERANCE = 0.10  # a change within ±10 % is "stable"
FAILING = ("failed", "error")


@dataclass(frozen=True)
class WindowStats:
    days: int
    since: datetime
    passed: int = 0
    completed: int = 0
    recoveries: int = 0
    mttr_seconds: float | None = None

    @property
    def pass_rate(self) -> float | None:
        return self.passed / self.completed if self.completed else None


@dataclass(frozen=True)
class BuildPoint:
    """A build as the history shows it: which one, where, what, when and how long."""

    build_id: str
    instance_id: int
    instance_uuid: str
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    duration: float | None

    @property
    def ended_at(self) -> datetime | None:
        return self.finished_at or self.started_at


@dataclass
class History:
    now: datetime
    windows: list[WindowStats]
    builds_total: int = 0
    last_build_at: datetime | None = None
    last_passed: BuildPoint | None = None
    failing_since: datetime | None = None
    recent_mean: float | None = None  # seconds, newest TREND_SIZE completed builds
    recent_count: int = 0
    previous_mean: float | None = None  # the TREND_SIZE before them
    previous_count: int = 0
    series: list[BuildPoint] = field(default_factory=list)  # oldest first

    @property
    def change_ratio(self) -> float | None:
        """recent / previous - 1: +0.25 means 25 % slower."""
        if self.recent_mean is None or not self.previous_mean:
            return None
        return self.recent_mean / self.previous_mean - 1.0

    @property
    def trend(self) -> str | None:
        change = self.change_ratio
        if change is None:
            return None
        if change > TREND_TOLERANCE:
            return "slower"
        if change < -TREND_TOLERANCE:
            return "faster"
        return "stable"


def empty(now: datetime) -> History:
    return History(now=now, windows=[WindowStats(d, now - timedelta(days=d)) for d in WINDOWS])


# --- public entry points -------------------------------------------------------------------


def for_instances(
    session: Session,
    instance_ids: list[int],
    now: datetime | None = None,
    series: int = DEFAULT_SERIES,
) -> dict[int, History]:
    """History of each instance, keyed by instance id."""
    from sqlalchemy import select

    if not instance_ids:
        return {}
    groups = (
        select(
            TestInstance.id.label("iid"),
            TestInstance.uuid.label("iuuid"),
            TestInstance.id.label("grp"),
        )
        .where(TestInstance.id.in_(list(instance_ids)))
        .subquery("groups")
    )
    return _compute(session, groups, list(instance_ids), now or utcnow(), series)


def for_versions(
    session: Session,
    version_ids: list[int],
    now: datetime | None = None,
    series: int = DEFAULT_SERIES,
) -> dict[int, History]:
    """History of each workflow version over all its instances, keyed by version id."""
    from sqlalchemy import select

    if not version_ids:
        return {}
    groups = (
        select(
            TestInstance.id.label("iid"),
            TestInstance.uuid.label("iuuid"),
            TestSuite.workflow_version_id.label("grp"),
        )
        .join(TestSuite, TestInstance.suite_id == TestSuite.id)
        .where(TestSuite.workflow_version_id.in_(list(version_ids)))
        .subquery("groups")
    )
    return _compute(session, groups, list(version_ids), now or utcnow(), series)


# --- the statements ------------------------------------------------------------------------


def _epoch(session: Session, column):
    """Seconds since the epoch of a timestamp column, in SQL."""
    from sqlalchemy import Float, cast, func

    if session.get_bind().dialect.name == "postgresql":
        return cast(func.extract("epoch", column), Float)
    # SQLite stores UTC text; julianday() reads it.
    return (func.julianday(column) - 2440587.5) * 86400.0


def _compute(
    session: Session, groups, keys: list[int], now: datetime, series: int
) -> dict[int, History]:
    series = max(1, min(int(series), MAX_SERIES))
    out = {key: empty(now) for key in keys}
    _counts(session, groups, now, out)
    _last_passed(session, groups, out)
    _recoveries(session, groups, now, out)
    _durations(session, groups, series, out)
    return out


def _counts(session: Session, groups, now: datetime, out: dict[int, History]) -> None:
    """Totals and, per window, passed and completed builds: one grouped aggregate."""
    from sqlalchemy import case, func, select

    b = Build.__table__
    completed = b.c.status.in_(COMPLETED_STATUSES)
    columns: list[Any] = [
        groups.c.grp,
        func.count(b.c.id).label("total"),
        func.max(b.c.started_at).label("last_build_at"),
    ]
    for days in WINDOWS:
        in_window = (b.c.started_at >= now - timedelta(days=days)) & completed
        columns += [
            func.sum(case((in_window & (b.c.status == "passed"), 1), else_=0)).label(f"p{days}"),
            func.sum(case((in_window, 1), else_=0)).label(f"c{days}"),
        ]
    query = (
        select(*columns)
        .select_from(groups.join(b, b.c.instance_id == groups.c.iid))
        .group_by(groups.c.grp)
    )
    for row in session.execute(query).mappings():
        history = out[row["grp"]]
        history.builds_total = int(row["total"] or 0)
        history.last_build_at = row["last_build_at"]
        history.windows = [
            WindowStats(w.days, w.since, int(row[f"p{w.days}"] or 0), int(row[f"c{w.days}"] or 0))
            for w in history.windows
        ]


def _ranked_builds(groups, *conditions):
    """The groups' builds matching `conditions`, numbered newest first within each group
    (`rn`), as a subquery."""
    from sqlalchemy import func, select

    b = Build.__table__
    rn = (
        func.row_number()
        .over(
            partition_by=groups.c.grp,
            order_by=(b.c.started_at.desc().nulls_last(), b.c.id.desc()),
        )
        .label("rn")
    )
    return (
        select(
            groups.c.grp,
            groups.c.iid,
            groups.c.iuuid,
            b.c.build_id,
            b.c.status,
            b.c.started_at,
            b.c.finished_at,
            b.c.duration,
            rn,
        )
        .select_from(groups.join(b, b.c.instance_id == groups.c.iid))
        .where(*conditions)
        .subquery("ranked")
    )


def _last_passed(session: Session, groups, out: dict[int, History]) -> None:
    """The newest passed build of each group: a window function keeps one row per group."""
    from sqlalchemy import select

    b = Build.__table__
    ranked = _ranked_builds(groups, b.c.status == "passed")
    for row in session.execute(select(ranked).where(ranked.c.rn == 1)).mappings():
        out[row["grp"]].last_passed = _point(row)


def _recoveries(session: Session, groups, now: datetime, out: dict[int, History]) -> None:
    """Mean time to recovery per window, and the start of open failure episodes.

    Per instance, over its completed builds in start order: keep the *edges* (a build
    whose pass/fail differs from the previous one's, or the first one), then each failing
    edge's next edge is its recovery."""
    from sqlalchemy import Boolean, case, func, select

    b = Build.__table__
    ok = b.c.status == "passed"
    ended = func.coalesce(b.c.finished_at, b.c.started_at, type_=UTCDateTime())
    order = (b.c.started_at, b.c.id)
    builds = (
        select(
            groups.c.grp,
            groups.c.iid,
            ok.label("ok"),
            ended.label("ended"),
            b.c.started_at,
            b.c.id,
            func.lag(ok, type_=Boolean())
            .over(partition_by=groups.c.iid, order_by=order)
            .label("previous_ok"),
        )
        .select_from(groups.join(b, b.c.instance_id == groups.c.iid))
        .where(b.c.status.in_(COMPLETED_STATUSES))
        .where(b.c.started_at.is_not(None))
        .subquery("completed_builds")
    )
    edges = (
        select(
            builds.c.grp,
            builds.c.ok,
            builds.c.ended,
            func.lead(builds.c.ended, type_=UTCDateTime())
            .over(partition_by=builds.c.iid, order_by=(builds.c.started_at, builds.c.id))
            .label("recovered"),
        )
        .where(builds.c.previous_ok.is_(None) | (builds.c.previous_ok != builds.c.ok))
        .subquery("edges")
    )
    failure = edges.c.ok.is_(False)
    seconds = _epoch(session, edges.c.recovered) - _epoch(session, edges.c.ended)
    columns: list[Any] = [
        edges.c.grp,
        func.min(case((failure & edges.c.recovered.is_(None), edges.c.ended))).label("open"),
    ]
    for days in WINDOWS:
        recovered = failure & (edges.c.recovered >= now - timedelta(days=days))
        columns += [
            func.sum(case((recovered, 1), else_=0)).label(f"n{days}"),
            func.sum(case((recovered, seconds), else_=0.0)).label(f"s{days}"),
        ]
    for row in session.execute(select(*columns).group_by(edges.c.grp)).mappings():
        history = out[row["grp"]]
        history.failing_since = row["open"]
        windows = []
        for w in history.windows:
            n = int(row[f"n{w.days}"] or 0)
            mean = max(0.0, float(row[f"s{w.days}"] or 0.0) / n) if n else None
            windows.append(
                WindowStats(w.days, w.since, w.passed, w.completed, recoveries=n, mttr_seconds=mean)
            )
        history.windows = windows


def _durations(session: Session, groups, series: int, out: dict[int, History]) -> None:
    """Mean durations of the newest TREND_SIZE completed builds and the TREND_SIZE before
    (grouped aggregate), and the newest `series` ones (at most `series` rows per group)."""
    from sqlalchemy import case, func, select

    b = Build.__table__
    ranked = _ranked_builds(groups, b.c.status.in_(COMPLETED_STATUSES), b.c.duration.is_not(None))
    recent = ranked.c.rn <= TREND_SIZE
    previous = (ranked.c.rn > TREND_SIZE) & (ranked.c.rn <= 2 * TREND_SIZE)
    means = select(
        ranked.c.grp,
        func.avg(case((recent, ranked.c.duration))).label("recent_mean"),
        func.sum(case((recent, 1), else_=0)).label("recent_count"),
        func.avg(case((previous, ranked.c.duration))).label("previous_mean"),
        func.sum(case((previous, 1), else_=0)).label("previous_count"),
    ).group_by(ranked.c.grp)
    for row in session.execute(means).mappings():
        history = out[row["grp"]]
        history.recent_mean = _float(row["recent_mean"])
        history.recent_count = int(row["recent_count"] or 0)
        history.previous_mean = _float(row["previous_mean"])
        history.previous_count = int(row["previous_count"] or 0)
    points = (
        select(ranked)
        .where(ranked.c.rn <= series)
        .order_by(ranked.c.grp, ranked.c.rn.desc())  # oldest first
    )
    for row in session.execute(points).mappings():
        out[row["grp"]].series.append(_point(row))


def _point(row) -> BuildPoint:
    return BuildPoint(
        build_id=row["build_id"],
        instance_id=row["iid"],
        instance_uuid=row["iuuid"],
        status=row["status"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        duration=_float(row["duration"]),
    )


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
