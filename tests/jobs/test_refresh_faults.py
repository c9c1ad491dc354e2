"""The refresh against misbehaving CIs (the emulators on loopback) and its concurrency.

Every fault — timeouts, refused connections, DNS failures, 5xx, 429/403 rate limits,
malformed, truncated or huge bodies, redirects to private addresses — must leave the
failing instance with its error recorded (`last_error`; the status `reason` while it has no
builds) and a later, growing next check, while every other instance of the batch is
refreshed; the instance recovers once the CI does. Then: a whole CI down, the per-host cap
on requests in flight, keep-alive, deadlines and the worker's partial batch response.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from emulators.github import GithubEmulator
from emulators.gitlab import GitlabEmulator
from emulators.jenkins import JenkinsEmulator
from emulators.travis import TravisEmulator

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
MAX_BYTES = 64 * 1024  # the adapters' body limit in these tests
KINDS = ("jenkins", "travis", "github", "gitlab")


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers():
    with (
        JenkinsEmulator(replay=False) as jenkins,
        TravisEmulator() as travis,
        GithubEmulator(replay=False) as github,
        GitlabEmulator() as gitlab,
    ):
        yield {"jenkins": jenkins, "travis": travis, "github": github, "gitlab": gitlab}


@pytest.fixture
def ci(servers, monkeypatch, db):
    """The emulators, cleared, reachable (ALLOW_PRIVATE_URLS) and read by adapters with
    short timeouts, no retries and a small body limit."""
    from chalicelib import testing
    from chalicelib.testing import github as github_adapter
    from chalicelib.testing.github import GithubAdapter
    from chalicelib.testing.gitlab import GitlabAdapter
    from chalicelib.testing.jenkins import JenkinsAdapter
    from chalicelib.testing.travis import TravisAdapter

    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")
    for emulator in servers.values():
        emulator.clear_faults()
        with emulator._lock:
            emulator.requests.clear()
        emulator.latency = 0.0
    servers["github"].rate_limited(False)
    servers["github"].set_rate_limit(limit=5000, remaining=5000)
    github_adapter.reset_state()
    classes = {
        "jenkins": JenkinsAdapter,
        "travis": TravisAdapter,
        "github": GithubAdapter,
        "gitlab": GitlabAdapter,
    }
    for kind, cls in classes.items():
        testing.register(
            kind,
            lambda cls=cls: cls(
                timeout=(0.5, 0.6), retries=0, max_retry_wait=0.1, max_bytes=MAX_BYTES
            ),
        )
    yield CI(servers)
    for kind, cls in classes.items():
        testing.register(kind, cls)
    github_adapter.reset_state()


@dataclass
class CI:
    """The four emulated CIs, programmed with one build sequence per project."""

    servers: dict
    made: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, kind: str):
        return self.servers[kind]

    def resource(self, kind: str, name: str) -> str:
        return {
            "jenkins": f"job/{name}",
            "travis": f"o/{name}",
            "github": f"repos/o/{name}/actions/workflows/ci.yml",
            "gitlab": f"g/{name}",
        }[kind]

    def program(self, kind: str, name: str, statuses: list[str]) -> None:
        """Builds of project `name`, newest first, as `passed`/`failed`/`running`."""
        emulator = self.servers[kind]
        if kind == "jenkins":
            spec = {
                "passed": {"result": "SUCCESS"},
                "failed": {"result": "FAILURE"},
                "running": {"building": True},
            }
            emulator.set_builds(f"job/{name}", [spec[s] for s in statuses])
        elif kind == "travis":
            state = {"passed": "passed", "failed": "failed", "running": "started"}
            base = 1000 * (len(self.made) + 1)
            builds = [
                emulator.make_build(base + len(statuses) - i, state[s])
                for i, s in enumerate(statuses)
            ]
            emulator.set_builds(builds, slug=f"o/{name}")
        elif kind == "github":
            spec = {
                "passed": {"conclusion": "success"},
                "failed": {"conclusion": "failure"},
                "running": {"status": "in_progress"},
            }
            emulator.set_runs(f"o/{name}", "ci.yml", [spec[s] for s in statuses])
        else:
            status = {"passed": "success", "failed": "failed", "running": "running"}
            base = 1000 * (len(self.made) + 1)
            pipelines = [
                emulator.make_pipeline(base + len(statuses) - i, status[s])
                for i, s in enumerate(statuses)
            ]
            emulator.set_builds(pipelines, project=f"g/{name}")
        self.made[f"{kind}:{name}"] = len(statuses)

    def count(self, kind: str, name: str) -> int:
        """Requests the CI received for project `name`."""
        return sum(name in r.path for r in self.servers[kind].requests)


def add_instance(kind: str, url: str, resource: str, name: str | None = None) -> tuple[int, str]:
    """A public workflow with one suite and one instance; returns (instance id, wf uuid)."""
    from chalicelib.db import session_scope
    from chalicelib.models import (
        TestingService,
        TestInstance,
        TestSuite,
        Workflow,
        WorkflowVersion,
    )

    with session_scope() as s:
        service = s.query(TestingService).filter_by(url=url).one_or_none()
        service = service or TestingService(type=kind, url=url)
        workflow = Workflow(name=name or resource, public=True)
        suite = TestSuite(workflow_version=WorkflowVersion(workflow=workflow, version="1"))
        instance = TestInstance(
            suite=suite, resource=resource, name=name or resource, testing_service=service
        )
        s.add(instance)
        s.flush()
        return instance.id, workflow.uuid


def row(instance_id: int):
    from chalicelib.db import session_scope
    from chalicelib.models import TestInstance

    with session_scope() as s:
        return s.get(TestInstance, instance_id)


def build_ids(instance_id: int) -> set[str]:
    from chalicelib.db import session_scope
    from chalicelib.models import Build

    with session_scope() as s:
        return {b for (b,) in s.query(Build.build_id).filter_by(instance_id=instance_id)}


def blocked_until(url: str) -> datetime | None:
    from chalicelib.db import session_scope
    from chalicelib.models import TestingService

    with session_scope() as s:
        return s.query(TestingService.blocked_until).filter_by(url=url).scalar()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def refresh(ids: list[int], now: datetime) -> dict[int, str]:
    from chalicelib.jobs.refresh import run_refresh

    return {r.instance_id: r.outcome for r in run_refresh(ids, now=now)}


# --- one faulty instance among healthy ones ------------------------------------------------


@dataclass(frozen=True)
class Case:
    kind: str  # the CI of the failing instance
    make: Callable  # (CI, monkeypatch) -> None: install the fault on project "faulty"
    expect: str  # in `last_error`
    url: Callable | None = None  # (CI) -> service URL for "faulty" (default the emulator's)
    retry_after: float | None = None  # the CI asked us to wait this long
    shared_budget: bool = False  # the fault spends the whole CI's budget (GitHub's per token)


def _path_fault(kind: str, **kwargs) -> Callable:
    return lambda ci, _mp: ci[kind].fault(r"faulty", **kwargs)


def _private_redirect(ci, monkeypatch) -> None:
    """Private addresses refused again (the emulators' loopback alone stays allowed), and a
    redirect to the cloud metadata address."""
    from chalicelib import http

    allowed = http.address_allowed
    monkeypatch.setattr(http, "_private_allowed", lambda: False)
    monkeypatch.setattr(http, "address_allowed", lambda ip: ip == "127.0.0.1" or allowed(ip))
    http.reset()
    location = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    ci["jenkins"].fault(r"faulty", status=302, headers={"Location": location})


RESET = str(int(time.time()) + 3600)
CASES = {
    "timeout": Case("jenkins", _path_fault("jenkins", delay=1.2), "timed out"),
    "refused": Case(
        "jenkins",
        lambda ci, mp: None,
        "cannot connect",
        url=lambda ci: f"http://127.0.0.1:{closed_port()}",
    ),
    "dns": Case(
        "jenkins",
        lambda ci, mp: None,
        "cannot resolve",
        url=lambda ci: "http://ci.does-not-exist.invalid",
    ),
    "dropped connection": Case("jenkins", _path_fault("jenkins", drop=True), "Jenkins"),
    "500": Case("jenkins", _path_fault("jenkins", status=500, body="<h1>oops</h1>"), "500"),
    "502": Case("travis", _path_fault("travis", status=502, body="Bad Gateway"), "502"),
    "503 retry-after": Case(
        "jenkins",
        _path_fault("jenkins", status=503, headers={"Retry-After": "1800"}),
        "503",
        retry_after=1800,
    ),
    "jenkins 429": Case(
        "jenkins",
        _path_fault("jenkins", status=429, headers={"Retry-After": "900"}),
        "429",
        retry_after=900,
    ),
    "travis 429": Case(
        "travis",
        lambda ci, mp: ci["travis"].rate_limit(retry_after=1200, pattern="faulty"),
        "rate",
        retry_after=1200,
    ),
    "gitlab 429": Case(
        "gitlab",
        lambda ci, mp: ci["gitlab"].rate_limit(retry_after=700, pattern="faulty"),
        "rate",
        retry_after=700,
    ),
    "github 403 rate limit": Case(
        "github",
        _path_fault(
            "github",
            status=403,
            body={"message": "API rate limit exceeded for 127.0.0.1."},
            headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": RESET},
        ),
        "rate limit",
        retry_after=3000,
        shared_budget=True,
    ),
    "github secondary limit": Case(
        "github",
        _path_fault(
            "github",
            status=403,
            headers={"Retry-After": "600"},
            body={"message": "You have exceeded a secondary rate limit."},
        ),
        "rate limit",
        retry_after=600,
        shared_budget=True,
    ),
    "403 denied": Case("gitlab", _path_fault("gitlab", status=403, body="Forbidden"), "403"),
    "malformed json": Case(
        "jenkins", _path_fault("jenkins", status=200, body="{not json"), "malformed JSON"
    ),
    "html instead of json": Case(
        "github", _path_fault("github", status=200, body="<html>login</html>"), "JSON"
    ),
    "truncated json": Case(
        "travis",
        _path_fault("travis", status=200, body={"builds": []}, truncate=True),
        "broke while reading",
    ),
    "huge body": Case(
        "gitlab",
        _path_fault("gitlab", status=200, body="[" + " " * (2 * MAX_BYTES) + "]"),
        "exceeds",
    ),
    "redirect loop": Case(
        "jenkins",
        _path_fault("jenkins", status=302, headers={"Location": "/job/faulty/x"}),
        "too many redirects",
    ),
    "redirect to a private address": Case("jenkins", _private_redirect, "private"),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_a_fault_degrades_one_instance_only(ci, client, case):
    from chalicelib import http
    from chalicelib.jobs.refresh import INTERVAL, MAX_BACKOFF
    from chalicelib.testing import github as github_adapter

    healthy = {}
    for kind in KINDS:
        ci.program(kind, "healthy", ["running", "passed", "failed"])
        healthy[kind] = add_instance(kind, ci[kind].url, ci.resource(kind, "healthy"))[0]
    ci.program(case.kind, "faulty", ["passed"])
    faulty_url = case.url(ci) if case.url else ci[case.kind].url
    faulty, wf = add_instance(case.kind, faulty_url, ci.resource(case.kind, "faulty"), "faulty")
    ids = [faulty, *healthy.values()]
    spared = [i for k, i in healthy.items() if not (case.shared_budget and k == case.kind)]
    patch = pytest.MonkeyPatch()
    try:
        case.make(ci, patch)
        outcomes = refresh(ids, T0)
        assert outcomes[faulty] == "error"
        assert all(outcomes[i] == "updated" for i in spared), outcomes
        first = row(faulty)
        assert case.expect in first.last_error
        assert first.consecutive_errors == 1 and first.lease_until is None
        assert first.last_checked_at == T0
        assert build_ids(faulty) == set()
        if case.retry_after:  # no sooner than asked, and the scheduler skips the host
            wait = timedelta(seconds=case.retry_after)
            assert T0 + wait <= first.next_check_at <= T0 + MAX_BACKOFF * 1.2
            assert blocked_until(faulty_url) >= T0 + wait
        else:
            assert T0 + INTERVAL <= first.next_check_at <= T0 + INTERVAL * 1.2
            assert blocked_until(faulty_url) is None
        for i in spared:
            assert len(build_ids(i)) == 3 and row(i).last_error is None
        # The status explains why there is nothing to show.
        status = client.http.get(f"/workflows/{wf}/status").json_body
        assert status["aggregate_test_status"] == "not_available"
        assert first.last_error in status["reason"]
        assert faulty_url in status["reason"]

        # Still failing: the next check moves further away.
        t1 = first.next_check_at
        assert refresh(ids, t1)[faulty] == "error"
        second = row(faulty)
        assert second.consecutive_errors == 2
        if case.retry_after:
            assert second.next_check_at >= t1 + timedelta(seconds=case.retry_after)
        else:
            assert second.next_check_at - t1 > first.next_check_at - T0
    finally:
        patch.undo()

    # The CI is back: the instance recovers, its error is gone.
    for emulator in ci.servers.values():
        emulator.clear_faults()
    http.reset()
    github_adapter.reset_state()
    if case.url is not None:
        _point_service_at(faulty_url, ci[case.kind].url)
    assert refresh(ids, second.next_check_at)[faulty] == "updated"
    recovered = row(faulty)
    assert recovered.last_error is None and recovered.consecutive_errors == 0
    assert len(build_ids(faulty)) == 1
    status = client.http.get(f"/workflows/{wf}/status").json_body
    assert status["aggregate_test_status"] == "all_passing"


def _point_service_at(old: str, new: str) -> None:
    from chalicelib.db import session_scope
    from chalicelib.models import TestingService

    with session_scope() as s:
        s.query(TestingService).filter_by(url=old).update({"url": new + "/"})


# --- a whole CI down -----------------------------------------------------------------------


def test_an_outage_of_one_ci_leaves_the_others_current(ci, client):
    from chalicelib.jobs import refresh as job

    workflows = {}
    for kind in KINDS:
        for n in range(3):
            ci.program(kind, f"p{n}", ["failed", "passed"][n % 2 :])
            workflows[(kind, n)] = add_instance(kind, ci[kind].url, ci.resource(kind, f"p{n}"))
    ci["jenkins"].fault(r"^/", status=503)  # every Jenkins request
    summary = job.dispatch_due(now=T0)
    assert summary["outcomes"] == {"error": 3, "updated": 9}
    for (kind, n), (iid, wf) in workflows.items():
        status = client.http.get(f"/workflows/{wf}/status").json_body
        if kind == "jenkins":
            assert status["aggregate_test_status"] == "not_available"
            assert "503" in status["reason"] and row(iid).next_check_at > T0
        else:
            expected = "all_failing" if n % 2 == 0 else "all_passing"
            assert status["aggregate_test_status"] == expected, (kind, n)
            assert row(iid).last_error is None
    # Only the failing instances are due again soon; none of them before its back-off.
    assert job.dispatch_due(now=T0 + timedelta(minutes=4))["claimed"] == 0


# --- concurrency ---------------------------------------------------------------------------


class InFlight:
    """Counts requests in flight on emulators (per emulator and in total), and the client
    connections they arrived on."""

    def __init__(self, *emulators) -> None:
        self.lock = threading.Lock()
        self.now: dict[int, int] = {}
        self.peak: dict[int, int] = {}
        self.total = self.total_peak = 0
        self.connections: dict[int, set] = {}
        for emulator in emulators:
            self._wrap(emulator)

    def _wrap(self, emulator) -> None:
        key = id(emulator)
        self.now[key] = self.peak[key] = 0
        self.connections[key] = set()
        original = emulator._dispatch

        def dispatch(handler):
            with self.lock:
                self.now[key] += 1
                self.total += 1
                self.peak[key] = max(self.peak[key], self.now[key])
                self.total_peak = max(self.total_peak, self.total)
                self.connections[key].add(handler.client_address)
            try:
                original(handler)
            finally:
                with self.lock:
                    self.now[key] -= 1
                    self.total -= 1

        emulator._dispatch = dispatch

    def unwrap(self, *emulators) -> None:
        for emulator in emulators:
            del emulator._dispatch


def test_requests_in_flight_are_capped_per_host(ci, monkeypatch):
    from chalicelib import http

    monkeypatch.setenv("LM_REFRESH_CONCURRENCY", "8")
    monkeypatch.setenv("LM_REFRESH_PER_HOST", "3")
    jenkins, travis = ci["jenkins"], ci["travis"]
    jenkins.latency = travis.latency = 0.15
    ids = []
    for n in range(9):
        ci.program("jenkins", f"c{n}", ["passed"])
        ci.program("travis", f"c{n}", ["failed"])
        ids.append(add_instance("jenkins", jenkins.url, f"job/c{n}")[0])
        ids.append(add_instance("travis", travis.url, f"o/c{n}")[0])
    http.reset()  # fresh connections, to count them
    meter = InFlight(jenkins, travis)
    try:
        started = time.monotonic()
        outcomes = refresh(ids, T0)
        elapsed = time.monotonic() - started
    finally:
        meter.unwrap(jenkins, travis)
    assert set(outcomes.values()) == {"updated"}
    assert meter.peak[id(jenkins)] == 3 and meter.peak[id(travis)] == 3
    assert meter.total_peak == 6  # both hosts at once: the pool is shared
    assert elapsed < 9 * 2 * 0.15  # far from one at a time
    # One pooled session: each host's requests reuse its few keep-alive connections.
    assert len(meter.connections[id(jenkins)]) <= 3 < len(jenkins.requests)
    assert len(meter.connections[id(travis)]) <= 3 < len(travis.requests)


def test_concurrency_one_is_sequential(ci, monkeypatch):
    monkeypatch.setenv("LM_REFRESH_CONCURRENCY", "1")
    ci["jenkins"].latency = 0.05
    ids = []
    for n in range(4):
        ci.program("jenkins", f"s{n}", ["passed"])
        ids.append(add_instance("jenkins", ci["jenkins"].url, f"job/s{n}")[0])
    meter = InFlight(ci["jenkins"])
    try:
        assert set(refresh(ids, T0).values()) == {"updated"}
    finally:
        meter.unwrap(ci["jenkins"])
    assert meter.total_peak == 1


def test_settings_are_validated(monkeypatch):
    from chalicelib.config import ConfigError
    from chalicelib.jobs import refresh as job

    assert (job.refresh_concurrency(), job.refresh_per_host()) == (8, 4)
    assert job.local_refresh_interval() == 60
    monkeypatch.setenv("LM_REFRESH_CONCURRENCY", "16")
    monkeypatch.setenv("LM_REFRESH_PER_HOST", "2")
    monkeypatch.setenv("LM_LOCAL_REFRESH_INTERVAL", "0")
    assert (job.refresh_concurrency(), job.refresh_per_host()) == (16, 2)
    assert job.local_refresh_interval() == 0
    for name, value in (("LM_REFRESH_CONCURRENCY", "0"), ("LM_REFRESH_PER_HOST", "many")):
        with monkeypatch.context() as m:  # one bad value at a time
            m.setenv(name, value)
            with pytest.raises(ConfigError, match=name):
                job.refresh_concurrency() if "CONC" in name else job.refresh_per_host()


def test_past_the_deadline_nothing_more_is_started(ci):
    from chalicelib.db import session_scope
    from chalicelib.jobs import refresh as job

    ci.program("jenkins", "late", ["passed"])
    [iid, _] = add_instance("jenkins", ci["jenkins"].url, "job/late")
    with session_scope() as s:
        assert [i for i, _ in job.claim_due(s, T0)] == [iid]
    results = job.run_refresh([iid], now=T0, deadline=time.monotonic() - 1)
    assert [r.outcome for r in results] == ["deferred"]
    assert ci.count("jenkins", "late") == 0
    assert row(iid).lease_until == T0 + job.LEASE  # claimed again once the lease runs out


def test_worker_reports_messages_with_failed_instances(ci, monkeypatch):
    """CI errors are recorded (the message is done); an unexpected failure makes the
    message fail, so SQS retries it and finally dead-letters it. An instance named by two
    deliveries is refreshed once."""
    from chalicelib import testing
    from chalicelib.jobs import refresh as job

    ci.program("jenkins", "w1", ["passed"])
    good = add_instance("jenkins", ci["jenkins"].url, "job/w1")[0]
    broken = add_instance("jenkins", ci["jenkins"].url, "job/missing")[0]  # CI says 404

    class Buggy:
        def fetch_builds(self, service_url, instance, limit):
            raise ZeroDivisionError("adapter bug")

    testing.register("buggy", Buggy)
    try:
        bug = add_instance("buggy", "https://buggy.example", "x")[0]
        body = lambda *ids: json.dumps({"v": 1, "instances": list(ids)})  # noqa: E731
        records = [
            {"messageId": "a", "body": body(good, broken)},
            {"messageId": "b", "body": body(good, bug)},
            {"messageId": "c", "body": body(good)},
        ]
        assert job.handle_sqs_records(records) == {"batchItemFailures": [{"itemIdentifier": "b"}]}
    finally:
        testing.unregister("buggy")
    assert ci.count("jenkins", "w1") == 1
    assert "not found" in row(broken).last_error
    failed = row(bug)
    assert failed.last_error == "internal error while refreshing (ZeroDivisionError)"
    assert failed.next_check_at is not None and failed.lease_until is None
