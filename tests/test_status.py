"""The aggregate test status rule (chalicelib/status.py, contract §2): the four-state fold,
which build of an instance counts (the first completed one among its newest ten; running,
waiting and aborted ones are skipped but still shown) and the `reason` text."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import pytest

from chalicelib import status as rule
from chalicelib.status import (
    ALL_FAILING,
    ALL_PASSING,
    NOT_AVAILABLE,
    SOME_PASSING,
    InstanceState,
    SuiteState,
    compute,
)


@dataclass(frozen=True)
class B:
    """A stored build as the rule sees it."""

    id: str
    status: str


def inst(
    name="i", latest=None, completed=None, error=None, resource="job/x/", url="https://ci.example"
) -> InstanceState:
    return InstanceState(
        name=name,
        resource=resource,
        service_url=url,
        latest_build=latest,
        last_completed_build=completed,
        last_error=error,
    )


def passed(n: str = "p") -> InstanceState:
    b = B(n, "passed")
    return inst(n, b, b)


def failed(n: str = "f", status: str = "failed") -> InstanceState:
    b = B(n, status)
    return inst(n, b, b)


# -- the fold ---------------------------------------------------------------------------------

TRANSITIONS = {
    (NOT_AVAILABLE, True): ALL_PASSING,
    (NOT_AVAILABLE, False): ALL_FAILING,
    (ALL_PASSING, True): ALL_PASSING,
    (ALL_PASSING, False): SOME_PASSING,
    (ALL_FAILING, True): SOME_PASSING,
    (ALL_FAILING, False): ALL_FAILING,
    (SOME_PASSING, True): SOME_PASSING,
    (SOME_PASSING, False): SOME_PASSING,
}


@pytest.mark.parametrize(("state", "passing"), list(TRANSITIONS))
def test_step(state, passing):
    assert rule.step(state, passing) == TRANSITIONS[(state, passing)]


@pytest.mark.parametrize("results", [r for n in range(5) for r in product([True, False], repeat=n)])
def test_fold_is_all_some_or_none(results):
    expected = (
        NOT_AVAILABLE
        if not results
        else ALL_PASSING
        if all(results)
        else ALL_FAILING
        if not any(results)
        else SOME_PASSING
    )
    assert rule.fold(results) == expected


def test_some_passing_is_absorbing():
    assert rule.fold([True, False, True, True]) == SOME_PASSING
    assert rule.fold([False, True, False, False]) == SOME_PASSING


def test_statuses_are_the_contract_enum():
    assert set(rule.AGGREGATE_STATUSES) == {
        "all_passing",
        "some_passing",
        "all_failing",
        "not_available",
    }
    assert set(rule.COMPLETED) == {"passed", "failed", "error"}


# -- compute over suites ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instances", "expected"),
    [
        ([passed()], ALL_PASSING),
        ([failed()], ALL_FAILING),
        ([failed("e", "error")], ALL_FAILING),  # error counts as failing
        ([passed(), failed()], SOME_PASSING),
        ([failed(), passed()], SOME_PASSING),
        ([passed("a"), passed("b")], ALL_PASSING),
        ([failed("a"), failed("b", "error")], ALL_FAILING),
    ],
)
def test_compute_one_suite(instances, expected):
    result = compute([SuiteState("s", instances)])
    assert result.aggregate_test_status == expected
    assert result.reason is None
    assert [b.id for b in result.latest_builds] == [i.last_completed_build.id for i in instances]


def test_compute_folds_across_suites():
    result = compute([SuiteState("a", [passed("1")]), SuiteState("b", [failed("2")])])
    assert result.aggregate_test_status == SOME_PASSING
    assert [b.id for b in result.latest_builds] == ["1", "2"]


@pytest.mark.parametrize("skipped", ["running", "waiting", "aborted"])
def test_only_a_skipped_build_is_shown_but_does_not_count(skipped):
    newest = B("n", skipped)
    result = compute([SuiteState("s", [inst("only", latest=newest, completed=None)])])
    assert result.aggregate_test_status == NOT_AVAILABLE
    assert result.latest_builds == [newest]
    assert result.reason is None  # no issue: the instance has builds


@pytest.mark.parametrize("skipped", ["running", "waiting", "aborted"])
def test_skipped_newest_build_gives_way_to_the_completed_one(skipped):
    newest, older = B("n", skipped), B("o", "failed")
    result = compute([SuiteState("s", [inst("i", latest=newest, completed=older), passed("p")])])
    assert result.aggregate_test_status == SOME_PASSING
    assert result.latest_builds == [older, passed("p").last_completed_build]


def test_skipped_instance_does_not_spoil_all_passing():
    result = compute([SuiteState("s", [passed("a"), inst("r", latest=B("r", "running"))])])
    assert result.aggregate_test_status == ALL_PASSING
    assert [b.id for b in result.latest_builds] == ["a", "r"]


# -- reasons -------------------------------------------------------------------------------


def test_no_suites():
    result = compute([])
    assert result.aggregate_test_status == NOT_AVAILABLE
    assert result.latest_builds == []
    assert result.reason == "No test suite configured for this workflow"


def test_suites_without_instances():
    result = compute([SuiteState("first", []), SuiteState("second", [])])
    assert result.reason == (
        "No test instances configured for suite first, "
        "No test instances configured for suite second"
    )


def test_instances_without_builds():
    result = compute([SuiteState("s", [inst("a"), inst("b")])])
    assert result.aggregate_test_status == NOT_AVAILABLE
    assert result.reason == "No build found for instance a, No build found for instance b"


def test_instance_whose_ci_failed_names_resource_and_service():
    result = compute(
        [
            SuiteState(
                "s",
                [inst("a", error="HTTP 503", resource="job/wf/", url="https://jenkins.example")],
            )
        ]
    )
    assert result.reason == (
        "HTTP 503: Unable to get resource 'job/wf/' from service 'https://jenkins.example'"
    )


def test_no_reason_once_something_counts():
    result = compute([SuiteState("empty", []), SuiteState("s", [inst("a"), passed("p")])])
    assert result.aggregate_test_status == ALL_PASSING
    assert result.reason is None
    assert result.issues == [
        "No test instances configured for suite empty",
        "No build found for instance a",
    ]


def test_mixed_issues_are_joined_in_order():
    result = compute(
        [SuiteState("empty", []), SuiteState("s", [inst("a"), inst("b", error="timed out")])]
    )
    assert result.reason == (
        "No test instances configured for suite empty, No build found for instance a, "
        "timed out: Unable to get resource 'job/x/' from service 'https://ci.example'"
    )


def test_results_do_not_leak_between_calls():
    """LifeMonitor kept `reason` errors in a class-level list (contract §12)."""
    compute([SuiteState("s", [inst("broken", error="boom")])])
    assert compute([SuiteState("s", [passed()])]).reason is None
    assert compute([]).issues == ["No test suite configured for this workflow"]


# -- which stored build counts: the refresh's denormalised pointers (store_builds) --------------


@pytest.fixture
def tx(database_url, monkeypatch):
    """A session inside a transaction that is rolled back: no tables to empty afterwards."""
    from sqlalchemy.orm import Session

    from chalicelib.db import get_engine

    monkeypatch.setenv("DATABASE_URL", database_url)
    conn = get_engine().connect()
    outer = conn.begin()
    session = Session(bind=conn, join_transaction_mode="create_savepoint")
    yield session
    session.close()
    outer.rollback()
    conn.close()


def _instance(session):
    from chalicelib.models import TestingService, TestInstance, TestSuite, Workflow, WorkflowVersion

    version = WorkflowVersion(workflow=Workflow(name="wf"), version="1")
    instance = TestInstance(
        suite=TestSuite(workflow_version=version, name="s"),
        resource="job/x/",
        name="x",
        testing_service=TestingService(type="jenkins", url="https://ci.example/j"),
    )
    session.add(instance)
    session.flush()
    return instance


def _state(session, instance) -> InstanceState:
    from chalicelib.models import Build

    return inst(
        "x",
        latest=session.get(Build, instance.latest_build_id) if instance.latest_build_id else None,
        completed=session.get(Build, instance.last_completed_build_id)
        if instance.last_completed_build_id
        else None,
    )


def _builds(statuses: list[str]):
    """Builds newest first: statuses[0] started 1 minute ago, the next 2 minutes ago..."""
    from tests.support.api_data import build

    return [build(f"b{n}", status, n + 1) for n, status in enumerate(statuses)]


@pytest.mark.parametrize(
    ("statuses", "counted", "shown", "aggregate"),
    [
        (["passed"], "b0", "b0", ALL_PASSING),
        (["running", "waiting", "aborted", "failed", "passed"], "b3", "b3", ALL_FAILING),
        (["aborted", "error"], "b1", "b1", ALL_FAILING),
        # Ten skipped builds hide an older completed one: only the newest ten are looked at.
        (["running"] * 10 + ["passed"], None, "b0", NOT_AVAILABLE),
        (["aborted"] * 9 + ["passed"], "b9", "b9", ALL_PASSING),
    ],
)
def test_first_completed_among_the_newest_ten(tx, statuses, counted, shown, aggregate):
    from chalicelib.jobs.refresh import store_builds
    from chalicelib.models import Build

    instance = _instance(tx)
    store_builds(tx, instance, _builds(statuses))
    tx.flush()
    completed = (
        tx.get(Build, instance.last_completed_build_id)
        if instance.last_completed_build_id
        else None
    )
    assert (completed.build_id if completed else None) == counted
    result = compute([SuiteState("s", [_state(tx, instance)])])
    assert result.aggregate_test_status == aggregate
    assert [b.build_id for b in result.latest_builds] == [shown]


def test_a_newer_build_arriving_moves_the_pointers(tx):
    from chalicelib.jobs.refresh import store_builds
    from tests.support.api_data import build

    instance = _instance(tx)
    store_builds(tx, instance, [build("old", "failed", 30)])
    assert compute([SuiteState("s", [_state(tx, instance)])]).aggregate_test_status == ALL_FAILING
    store_builds(tx, instance, [build("new", "running", 5)])
    result = compute([SuiteState("s", [_state(tx, instance)])])
    assert result.aggregate_test_status == ALL_FAILING
    assert [b.build_id for b in result.latest_builds] == ["old"]
    store_builds(tx, instance, [build("new", "passed", 5)])  # the same run finished
    result = compute([SuiteState("s", [_state(tx, instance)])])
    assert result.aggregate_test_status == ALL_PASSING
    assert [b.build_id for b in result.latest_builds] == ["new"]
