"""Build history statistics (chalicelib/jobs/history.py): SQL results checked against a
plain-Python reference on hand-made and random build sequences, per instance and per
workflow version, in a fixed number of statements."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.jobs import history
from chalicelib.testing import BuildData

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
COMPLETED = {"passed", "failed", "error"}


@pytest.fixture
def db(database_url, monkeypatch):
    """The session database, emptied with DELETE afterwards (much faster than TRUNCATE on
    these few rows)."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    yield database_url
    _delete_all()


def _delete_all() -> None:
    from chalicelib.db import get_engine
    from chalicelib.models import Base

    with get_engine().begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


# --- data ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class B:
    """A build for the reference: id, status, start (hours before NOW), duration (s)."""

    build_id: str
    status: str
    hours_ago: float | None
    duration: float | None = 60.0

    @property
    def started(self) -> datetime | None:
        return None if self.hours_ago is None else NOW - timedelta(hours=self.hours_ago)

    @property
    def finished(self) -> datetime | None:
        if self.started is None or self.status in {"running", "waiting"}:
            return None
        return self.started + timedelta(seconds=self.duration or 0)

    def data(self) -> BuildData:
        return BuildData(
            build_id=self.build_id,
            status=self.status,
            started_at=self.started,
            finished_at=self.finished,
            duration=None if self.status in {"running", "waiting"} else self.duration,
        )


def make_version(instances: int) -> tuple[int, list[int]]:
    """A workflow version with one suite of `instances` instances: (version id, ids)."""
    from chalicelib.db import session_scope
    from chalicelib.models import TestingService, TestInstance, TestSuite, Workflow, WorkflowVersion

    with session_scope() as s:
        service = s.query(TestingService).filter_by(url="https://ci.example").one_or_none()
        service = service or TestingService(type="jenkins", url="https://ci.example")
        version = WorkflowVersion(workflow=Workflow(name="wf", public=True), version="1")
        suite = TestSuite(workflow_version=version, name="suite")
        rows = [
            TestInstance(suite=suite, resource=f"job/{i}", name=f"i{i}", testing_service=service)
            for i in range(instances)
        ]
        s.add_all(rows)
        s.flush()
        return version.id, [r.id for r in rows]


def store(instance_id: int, builds: list[B]) -> None:
    from chalicelib.db import session_scope
    from chalicelib.jobs.refresh import store_builds
    from chalicelib.models import TestInstance

    with session_scope() as s:
        store_builds(s, s.get(TestInstance, instance_id), [b.data() for b in builds])


# --- the reference -------------------------------------------------------------------------


def reference(per_instance: list[list[B]], series: int = 20) -> dict:
    """What the statistics must be, computed the obvious way in Python."""
    builds = [b for bs in per_instance for b in bs]
    completed = [b for b in builds if b.status in COMPLETED]
    out: dict = {"total": len(builds), "windows": {}}
    passed = [b for b in builds if b.status == "passed" and b.started is not None]
    last = max(passed, key=lambda b: b.started, default=None)
    out["last_passed"] = (last.build_id, last.finished) if last else None
    episodes, open_since = [], []
    for bs in per_instance:
        previous, began = None, None
        ordered = sorted(
            (b for b in bs if b.status in COMPLETED and b.started), key=lambda b: b.started
        )
        for b in ordered:
            ok = b.status == "passed"
            if not ok and previous in (None, True):
                began = b.finished
            if ok and previous is False:
                episodes.append((began, b.finished))
                began = None
            previous = ok
        if began is not None:
            open_since.append(began)
    out["failing_since"] = min(open_since, default=None)
    for days in history.WINDOWS:
        since = NOW - timedelta(days=days)
        window = [b for b in completed if b.started and b.started >= since]
        ok = sum(b.status == "passed" for b in window)
        recovered = [(end - start).total_seconds() for start, end in episodes if end >= since]
        out["windows"][days] = {
            "passed": ok,
            "completed": len(window),
            "rate": ok / len(window) if window else None,
            "recoveries": len(recovered),
            "mttr": sum(recovered) / len(recovered) if recovered else None,
        }
    timed = [b for b in completed if b.duration is not None]
    timed.sort(key=lambda b: (b.started is None, -(b.started or NOW).timestamp()))
    recent, previous = timed[:10], timed[10:20]
    out["recent"] = sum(b.duration for b in recent) / len(recent) if recent else None
    out["previous"] = sum(b.duration for b in previous) / len(previous) if previous else None
    out["counts"] = (len(recent), len(previous))
    out["series"] = [b.build_id for b in reversed(timed[:series])]
    return out


def check(got: history.History, want: dict) -> None:
    assert got.builds_total == want["total"]
    if want["last_passed"] is None:
        assert got.last_passed is None
    else:
        assert (got.last_passed.build_id, got.last_passed.ended_at) == want["last_passed"]
    assert got.failing_since == want["failing_since"]
    for w in got.windows:
        expected = want["windows"][w.days]
        assert (w.passed, w.completed, w.recoveries) == (
            expected["passed"],
            expected["completed"],
            expected["recoveries"],
        ), w.days
        assert w.pass_rate == pytest.approx(expected["rate"]), w.days
        assert w.mttr_seconds == pytest.approx(expected["mttr"], abs=1e-3), w.days
    assert got.recent_mean == pytest.approx(want["recent"])
    assert got.previous_mean == pytest.approx(want["previous"])
    assert (got.recent_count, got.previous_count) == want["counts"]
    assert [p.build_id for p in got.series] == want["series"]


# --- tests ---------------------------------------------------------------------------------

DAY = 24.0  # hours

HAND_MADE = [
    B("1", "passed", 100 * DAY, 50),  # beyond every window
    B("2", "failed", 95 * DAY, 40),  # an episode that starts before the 90-day window
    B("3", "error", 89 * DAY, 41),
    B("4", "passed", 88 * DAY, 52),  # ... and recovers inside it: 7 days
    B("5", "aborted", 40 * DAY, 5),  # skipped everywhere
    B("6", "failed", 20 * DAY, 70),
    B("7", "passed", 20 * DAY - 2, 71),  # 2 h (and a little) to recover
    B("8", "passed", 6 * DAY, 80),
    B("9", "failed", 3 * DAY, 90),
    B("10", "waiting", 2 * DAY, None),
    B("11", "passed", 1 * DAY, 100),  # recovery in the 7-day window
    B("12", "failed", 5.0, 110),  # still failing: open episode
    B("13", "running", 1.0, None),
]


def test_hand_made_instance(session):
    _, [iid] = make_version(1)
    store(iid, HAND_MADE)
    result = history.for_instances(session, [iid], now=NOW)[iid]
    want = reference([HAND_MADE])
    check(result, want)
    # Spelled out, so a wrong reference cannot hide a wrong answer.
    seven, thirty, ninety = result.windows
    assert (seven.passed, seven.completed) == (2, 4)  # 8, 9, 11, 12
    assert (thirty.passed, thirty.completed) == (3, 6)
    assert ninety.recoveries == 3 and thirty.recoveries == 2 and seven.recoveries == 1
    assert ninety.mttr_seconds == pytest.approx(
        (
            (timedelta(days=7) + timedelta(seconds=12)).total_seconds()  # 2 → 4
            + (timedelta(hours=2) + timedelta(seconds=1)).total_seconds()  # 6 → 7
            + (timedelta(days=2) + timedelta(seconds=10)).total_seconds()  # 9 → 11
        )
        / 3
    )
    assert result.last_passed.build_id == "11"
    assert result.failing_since == NOW - timedelta(hours=5) + timedelta(seconds=110)
    assert result.last_build_at == NOW - timedelta(hours=1)
    assert [p.build_id for p in result.series] == [
        "1",
        "2",
        "3",
        "4",
        "6",
        "7",
        "8",
        "9",
        "11",
        "12",
    ]
    assert result.recent_count == 10 and result.previous_count == 0
    assert result.previous_mean is None and result.trend is None


def test_no_builds_and_no_completed_builds(session):
    _, [empty, pending] = make_version(2)
    store(pending, [B("1", "running", 1, None), B("2", "aborted", 2, 3)])
    got = history.for_instances(session, [empty, pending], now=NOW)
    for h in got.values():
        assert h.last_passed is None and h.failing_since is None
        assert all(w.pass_rate is None and w.mttr_seconds is None for w in h.windows)
        assert all(w.completed == 0 and w.recoveries == 0 for w in h.windows)
        assert h.recent_mean is None and h.series == [] and h.trend is None
    assert got[empty].builds_total == 0 and got[empty].last_build_at is None
    assert got[pending].builds_total == 2


def test_duration_trend(session):
    _, [iid] = make_version(1)
    older = [B(f"o{i}", "passed", 100 - i, 100.0) for i in range(10)]
    newer = [B(f"n{i}", "failed" if i % 3 else "passed", 50 - i, 150.0) for i in range(10)]
    store(iid, older + newer + [B("odd", "passed", 200, None)])  # no duration: left out
    h = history.for_instances(session, [iid], now=NOW, series=5)[iid]
    assert (h.recent_mean, h.previous_mean) == (150.0, 100.0)
    assert h.change_ratio == pytest.approx(0.5) and h.trend == "slower"
    assert [p.build_id for p in h.series] == ["n5", "n6", "n7", "n8", "n9"]  # oldest first
    assert all(p.duration == 150.0 and p.instance_uuid for p in h.series)
    store(iid, [B(f"f{i}", "passed", 10 - i / 2, 95.0) for i in range(10)])
    h = history.for_instances(session, [iid], now=NOW)[iid]
    assert h.trend == "faster" and h.change_ratio == pytest.approx(95 / 150 - 1)


@pytest.mark.parametrize("seed", range(6))
def test_random_sequences_match_the_reference(session, seed):
    rng = random.Random(seed)  # noqa: S311 - reproducible test data
    version_id, ids = make_version(3)
    per_instance = []
    for n, iid in enumerate(ids):
        builds = []
        for i in range(rng.randint(0, 40)):
            status = rng.choice(["passed", "passed", "failed", "error", "aborted", "running"])
            hours = rng.uniform(0, 130 * DAY)
            builds.append(B(f"{n}-{i}", status, hours, rng.choice([None, rng.uniform(1, 900)])))
        store(iid, builds)
        per_instance.append(builds)
    by_instance = history.for_instances(session, ids, now=NOW, series=15)
    for iid, builds in zip(ids, per_instance, strict=True):
        check(by_instance[iid], reference([builds], series=15))
    # The version pools its instances: rates over all builds, episodes per instance.
    pooled = history.for_versions(session, [version_id], now=NOW, series=15)[version_id]
    check(pooled, reference(per_instance, series=15))


def test_a_fixed_number_of_statements(session):
    from sqlalchemy import event

    from chalicelib.db import get_engine

    counts = []
    for size in (1, 12):
        version_id, ids = make_version(size)
        for iid in ids:
            store(iid, [B(f"{iid}-{i}", ["passed", "failed"][i % 2], i + 1) for i in range(15)])
        statements = []

        def count(_conn, _cursor, statement, *_args, statements=statements):
            statements.append(statement)

        event.listen(get_engine(), "before_cursor_execute", count)
        try:
            history.for_instances(session, ids, now=NOW)
            history.for_versions(session, [version_id], now=NOW)
        finally:
            event.remove(get_engine(), "before_cursor_execute", count)
        counts.append(len(statements))
    assert counts[0] == counts[1] == 10  # five statements per call


def test_versions_are_kept_apart(session):
    first, [a] = make_version(1)
    second, [b] = make_version(1)
    store(a, [B("1", "passed", 1)])
    store(b, [B("1", "failed", 2)])
    got = history.for_versions(session, [first, second], now=NOW)
    assert got[first].windows[0].pass_rate == 1.0
    assert got[second].windows[0].pass_rate == 0.0
    assert got[second].failing_since == NOW - timedelta(hours=2) + timedelta(seconds=60)
    assert history.for_versions(session, []) == {} == history.for_instances(session, [])
