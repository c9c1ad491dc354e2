"""The GitHub Actions adapter against the GitHub emulator: run attempts as builds, filters,
conditional requests (a 304 costs no rate budget), rate limits, every failure as CIError."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib import http
from chalicelib.secrets import get_secrets
from chalicelib.testing import CIError, get_adapter
from chalicelib.testing import github as gh
from chalicelib.testing.github import (
    DEFAULT_API,
    GithubAdapter,
    InvalidResourceError,
    api_base,
    map_status,
    parse_created,
    parse_resource,
    token_key,
)
from emulators.github import GithubEmulator

RESOURCE = "repos/o/r/actions/workflows/ci.yml"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@dataclass
class Instance:
    resource: str = RESOURCE
    etag: str | None = None
    parameters: dict = field(default_factory=dict)


@dataclass
class KnownInstance(Instance):
    known_build_ids: frozenset = frozenset()


@pytest.fixture(autouse=True)
def isolated(monkeypatch):
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")  # the emulator listens on loopback
    gh.reset_state()
    yield
    gh.reset_state()


@pytest.fixture
def github():
    with GithubEmulator() as emulator:
        yield emulator


@pytest.fixture
def adapter() -> GithubAdapter:
    return GithubAdapter(timeout=(1.0, 2.0), retries=0)


@pytest.fixture
def token(github) -> str:
    value = "ghp_test_token_123"
    get_secrets().put(token_key(github.url), value)
    github.require_token(value)
    return value


def fetch(adapter, github, instance=None, limit=10):
    return adapter.fetch_builds(github.url, instance or Instance(), limit)


def ids(result) -> list[str]:
    return [b.build_id for b in result.builds]


# -- registration and pure helpers -------------------------------------------------------


def test_registers_itself():
    assert isinstance(get_adapter("github"), GithubAdapter)


@pytest.mark.parametrize(
    ("status", "conclusion", "expected"),
    [
        ("in_progress", None, "running"),
        ("queued", None, "waiting"),
        ("waiting", None, "waiting"),  # LifeMonitor: unknown → error (a bug)
        ("requested", None, "waiting"),
        ("pending", None, "waiting"),
        ("completed", "success", "passed"),
        ("completed", "cancelled", "aborted"),
        ("completed", "failure", "failed"),
        ("completed", "timed_out", "error"),
        ("completed", "skipped", "error"),
        ("completed", "neutral", "error"),
        ("completed", "action_required", "error"),
        ("completed", "stale", "error"),
        ("completed", None, "error"),
        ("mystery", None, "error"),
    ],
)
def test_map_status(status, conclusion, expected):
    assert map_status(status, conclusion) == expected


@pytest.mark.parametrize(
    ("resource", "parts"),
    [
        ("repos/o/r/actions/workflows/ci.yml", ("o", "r", "ci.yml")),
        ("/repos/o/r/actions/workflows/ci.yml/", ("o", "r", "ci.yml")),
        (
            "repos/crs4/life_monitor/actions/workflows/docs.yaml",
            ("crs4", "life_monitor", "docs.yaml"),
        ),
        ("repos/o/r/actions/workflows/1122712", ("o", "r", "1122712")),
        ("https://api.github.com/repos/o/r/actions/workflows/ci.yml", ("o", "r", "ci.yml")),
        ("https://github.com/o/r/actions/workflows/ci.yml", ("o", "r", "ci.yml")),
        ("https://ghe.example.org/api/v3/repos/o/r/actions/workflows/7", ("o", "r", "7")),
    ],
)
def test_parse_resource(resource, parts):
    ref = parse_resource(resource)
    assert (ref.owner, ref.repo, ref.workflow) == parts


@pytest.mark.parametrize(
    "resource",
    [
        "",
        "o/r",
        "repos/o/r",
        "repos/o/r/actions/workflows/",
        "repos/o/r/actions/runs/1",
        "repos/o/r/actions/workflows/ci.yml/runs",
        "repos/o/../actions/workflows/ci.yml",
        "repos/o/r/actions/workflows/a b.yml",
        "github/o/r",
    ],
)
def test_bad_resource_is_a_clear_error(resource):
    with pytest.raises(InvalidResourceError, match="Unexpected format of link to Github"):
        parse_resource(resource)


def test_bad_resource_from_fetch(adapter, github):
    with pytest.raises(CIError, match="Unexpected format") as info:
        fetch(adapter, github, Instance(resource="job/tests"))
    assert isinstance(info.value, InvalidResourceError)
    assert github.requests == []


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("", DEFAULT_API),
        ("https://github.com", DEFAULT_API),
        ("https://github.com/", DEFAULT_API),
        ("https://api.github.com/", DEFAULT_API),
        ("https://ghe.example.org/api/v3/", "https://ghe.example.org/api/v3"),
    ],
)
def test_api_base(url, base):
    assert api_base(url) == base


def test_token_key_scheme():
    assert token_key(DEFAULT_API) == "ci/github/api.github.com/token"
    assert token_key("http://127.0.0.1:8080") == "ci/github/127.0.0.1_8080/token"


@pytest.mark.parametrize(
    ("window", "inside", "outside"),
    [
        (
            ">=2024-01-01",
            ["2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z"],
            ["2023-12-31T23:59:59Z"],
        ),
        (">2024-01-01", ["2024-01-02T00:00:00Z"], ["2024-01-01T23:00:00Z"]),
        ("<2024-01-01T10:00:00Z", ["2024-01-01T09:59:59Z"], ["2024-01-01T10:00:00Z"]),
        ("<=2024-01-01", ["2024-01-01T23:59:59Z"], ["2024-01-02T00:00:00Z"]),
        (
            "2024-01-01..2024-01-31",
            ["2024-01-01T00:00:00Z", "2024-01-31T23:00:00Z"],
            ["2024-02-01T00:00:00Z"],
        ),
        ("2024-01-01T10:00:00Z..*", ["2024-01-01T10:00:00Z"], ["2024-01-01T09:00:00Z"]),
        ("2024-01-01", ["2024-01-01T12:00:00Z"], ["2024-01-02T00:00:00Z"]),
    ],
)
def test_parse_created(window, inside, outside):
    contains = parse_created(window)
    for text in inside:
        assert contains(datetime.fromisoformat(text)), text
    for text in outside:
        assert not contains(datetime.fromisoformat(text)), text


# -- builds from runs ----------------------------------------------------------------------


def test_every_status(adapter, github):
    specs = [
        ("in_progress", None),
        ("queued", None),
        ("waiting", None),
        ("requested", None),
        ("pending", None),
        ("completed", "success"),
        ("completed", "cancelled"),
        ("completed", "failure"),
        ("completed", "timed_out"),
        ("completed", "skipped"),
    ]
    github.set_runs(
        "o/r",
        "ci.yml",
        [{"id": 100 - i, "status": s, "conclusion": c} for i, (s, c) in enumerate(specs)],
    )
    result = fetch(adapter, github)
    assert [(b.build_id, b.status) for b in result.builds] == [
        ("100_1", "running"),
        ("99_1", "waiting"),
        ("98_1", "waiting"),
        ("97_1", "waiting"),
        ("96_1", "waiting"),
        ("95_1", "passed"),
        ("94_1", "aborted"),
        ("93_1", "failed"),
        ("92_1", "error"),
        ("91_1", "error"),
    ]
    assert len(github.requests) == 1
    assert result.etag and not result.not_modified


def test_times_links_and_revision(adapter, github):
    github.set_runs(
        "o/r",
        "ci.yml",
        [
            {"id": 2, "status": "in_progress", "created_at": T0, "sha": "b" * 40},
            {
                "id": 1,
                "created_at": T0 - timedelta(hours=1),
                "run_started_at": T0 - timedelta(minutes=50),
                "updated_at": T0 - timedelta(minutes=45),
            },
        ],
    )
    running, done = fetch(adapter, github).builds
    assert running.started_at == T0 and running.finished_at is None
    assert running.duration is None and running.revision == "b" * 40
    assert done.started_at == T0 - timedelta(minutes=50)  # run_started_at wins
    assert done.finished_at == T0 - timedelta(minutes=45)
    assert done.duration == 300.0
    assert done.url == "https://github.com/o/r/actions/runs/1/attempts/1"
    assert done.links == {
        "origin": "https://github.com/o/r/actions/runs/1/attempts/1",
        "instance": "https://github.com/o/r/actions/workflows/ci.yml",
        "api": f"{github.url}/repos/o/r/actions/runs/1/attempts/1",
    }


def test_workflow_by_id_and_full_url(adapter, github):
    wf = github.add_workflow("o/r", "ci.yml", id=4242)
    github.set_runs("o/r", "ci.yml", [{"id": 7}])
    assert wf.id == 4242
    for resource in (
        "repos/o/r/actions/workflows/4242",
        "https://api.github.com/repos/o/r/actions/workflows/ci.yml",
        "https://github.com/o/r/actions/workflows/ci.yml",
    ):
        assert ids(fetch(adapter, github, Instance(resource=resource))) == ["7_1"]


def test_recorded_runs(adapter, github, shared_fixtures):
    old = fetch(
        adapter, github, Instance(resource="repos/PyGithub/PyGithub/actions/workflows/check.yml")
    )
    assert ids(old) == ["109950033_1", "109168419_1", "108934155_1", "108817672_1"]
    assert [b.status for b in old.builds] == ["passed", "passed", "failed", "passed"]
    assert old.builds[0].started_at == datetime(2020, 5, 20, 2, 37, 57, tzinfo=UTC)
    assert old.builds[0].duration == 148.0
    rerun = fetch(
        adapter, github, Instance(resource="repos/EnricoMi/PyGithub/actions/workflows/codeql.yml")
    )
    assert [(b.build_id, b.status) for b in rerun.builds] == [
        ("26365060973_2", "passed"),
        ("26365060973_1", "failed"),
    ]
    assert rerun.builds[0].started_at == datetime(2026, 5, 29, 15, 42, 5, tzinfo=UTC)
    assert rerun.builds[0].duration == 102.0


# -- attempts ------------------------------------------------------------------------------


def test_attempts_are_expanded(adapter, github):
    github.set_runs(
        "o/r",
        "ci.yml",
        [
            {
                "id": 20,
                "attempt": 3,
                "created_at": T0,
                "attempts": [{"conclusion": "cancelled"}, {"conclusion": "failure"}],
            },
            {"id": 10, "created_at": T0 - timedelta(hours=2), "conclusion": "failure"},
        ],
    )
    result = fetch(adapter, github)
    assert [(b.build_id, b.status) for b in result.builds] == [
        ("20_3", "passed"),
        ("20_2", "failed"),
        ("20_1", "aborted"),
        ("10_1", "failed"),
    ]
    assert [r.path for r in github.attempt_requests()] == [
        "/repos/o/r/actions/runs/20/attempts/2",
        "/repos/o/r/actions/runs/20/attempts/1",
    ]
    assert result.etag is not None


def test_only_attempts_within_the_limit_are_fetched(adapter, github):
    github.set_runs(
        "o/r",
        "ci.yml",
        [
            {"id": 30, "attempt": 2, "created_at": T0},
            {"id": 20, "attempt": 4, "created_at": T0 - timedelta(days=1)},  # outside top 3
            {"id": 10, "created_at": T0 - timedelta(days=2)},
        ],
    )
    result = fetch(adapter, github, limit=3)
    assert ids(result) == ["30_2", "30_1", "20_4"]
    assert [r.path for r in github.attempt_requests()] == ["/repos/o/r/actions/runs/30/attempts/1"]
    assert github.runs_requests()[0].arg("per_page") == "3"


def test_finished_attempts_are_fetched_once(adapter, github):
    github.set_runs("o/r", "ci.yml", [{"id": 20, "attempt": 2, "created_at": T0}])
    first = fetch(adapter, github)
    github.set_runs(
        "o/r",
        "ci.yml",
        [  # a new run: the list changes, attempt 20_1 does not
            {"id": 21, "status": "queued", "created_at": T0 + timedelta(hours=1)},
            {"id": 20, "attempt": 2, "created_at": T0},
        ],
    )
    second = fetch(adapter, github, Instance(etag=first.etag))
    assert ids(second) == ["21_1", "20_2", "20_1"]
    assert len(github.attempt_requests()) == 1  # served from the container's cache


def test_known_attempts_are_skipped(adapter, github):
    github.set_runs("o/r", "ci.yml", [{"id": 20, "attempt": 3, "created_at": T0}])
    result = fetch(adapter, github, KnownInstance(known_build_ids=frozenset({"20_1"})))
    assert ids(result) == ["20_3", "20_2"]  # 20_1 is stored already: not fetched again
    assert [r.path for r in github.attempt_requests()] == ["/repos/o/r/actions/runs/20/attempts/2"]
    assert result.etag is not None


def test_attempts_stop_when_the_budget_runs_out(adapter, github, token):
    github.set_runs("o/r", "ci.yml", [{"id": 20, "attempt": 4, "created_at": T0}])
    github.set_rate_limit(remaining=2)  # the list costs 1, one attempt costs the last one
    result = fetch(adapter, github)
    assert ids(result) == ["20_4", "20_3"]
    assert len(github.attempt_requests()) == 1
    assert result.etag is None  # the next refresh must read the list again
    before = len(github.requests)
    with pytest.raises(CIError, match="rate limit") as info:
        fetch(adapter, github)  # the budget is spent: fail fast, without a request
    assert info.value.retry_after is not None and info.value.retry_after > 0
    assert len(github.requests) == before


def test_deleted_attempt_is_skipped(adapter, github):
    github.set_runs("o/r", "ci.yml", [{"id": 20, "attempt": 2, "created_at": T0}])
    github.fault(r"/attempts/1$", status=404, body={"message": "Not Found"})
    result = fetch(adapter, github)
    assert ids(result) == ["20_2"] and result.etag is not None


def test_failed_attempt_keeps_the_old_etag(adapter, github):
    github.set_runs("o/r", "ci.yml", [{"id": 20, "attempt": 2, "created_at": T0}])
    github.fault(r"/attempts/1$", status=500, body={"message": "boom"})
    result = fetch(adapter, github)
    assert ids(result) == ["20_2"] and result.etag is None


# -- filters -------------------------------------------------------------------------------


def test_branch_filter(adapter, github):
    github.set_runs(
        "o/r",
        "ci.yml",
        [{"id": 3, "branch": "main"}, {"id": 2, "branch": "dev"}, {"id": 1, "branch": "main"}],
    )
    result = fetch(adapter, github, Instance(parameters={"branch": "main"}))
    assert ids(result) == ["3_1", "1_1"]
    assert github.runs_requests()[-1].arg("branch") == "main"


def test_created_window(adapter, github):
    github.set_runs(
        "o/r",
        "ci.yml",
        [
            {"id": 3, "created_at": T0},
            {"id": 2, "created_at": T0 - timedelta(days=1)},
            {"id": 1, "created_at": T0 - timedelta(days=2)},
        ],
    )
    window = f"{(T0 - timedelta(days=1)).date()}..{(T0 - timedelta(days=1)).date()}"
    result = fetch(adapter, github, Instance(parameters={"created": window}))
    assert ids(result) == ["2_1"]
    assert github.runs_requests()[-1].arg("created") == window


def test_created_window_is_enforced_client_side(adapter, github):
    # Even if the server ignored the qualifier, runs outside the window are dropped.
    github.set_runs(
        "o/r",
        "ci.yml",
        [{"id": 2, "created_at": T0}, {"id": 1, "created_at": T0 - timedelta(days=9)}],
    )
    github.fault(
        r"/runs$",
        status=200,
        body={
            "total_count": 2,
            "workflow_runs": [
                {
                    "id": 2,
                    "status": "completed",
                    "conclusion": "success",
                    "created_at": "2024-05-01T12:00:00Z",
                    "updated_at": "2024-05-01T12:01:00Z",
                },
                {
                    "id": 1,
                    "status": "completed",
                    "conclusion": "success",
                    "created_at": "2024-04-22T12:00:00Z",
                    "updated_at": "2024-04-22T12:01:00Z",
                },
            ],
        },
    )
    result = fetch(adapter, github, Instance(parameters={"created": ">=2024-04-30"}))
    assert ids(result) == ["2_1"]


@pytest.mark.parametrize(
    "parameters",
    [
        {"created": "yesterday"},
        {"created": ">="},
        {"created": 5},
        {"branch": ""},
        {"branch": ["main"]},
    ],
)
def test_bad_parameters(adapter, github, parameters):
    with pytest.raises(CIError, match="parameter"):
        fetch(adapter, github, Instance(parameters=parameters))
    assert github.requests == []


# -- conditional requests and rate limits -------------------------------------------------


def test_unchanged_instance_costs_no_rate_budget(adapter, github, token):
    github.set_runs("o/r", "ci.yml", [{"id": 2}, {"id": 1, "attempt": 2}])
    first = fetch(adapter, github)
    assert first.etag and ids(first) == ["2_1", "1_2", "1_1"]
    used, requests = github.rate_used, len(github.requests)
    second = fetch(adapter, github, Instance(etag=first.etag))
    assert second.not_modified and second.builds == []
    assert second.etag == first.etag
    assert github.rate_used == used  # a 304 is free when authorised
    assert len(github.requests) == requests + 1  # one request, no attempt look-ups
    assert github.requests[-1].headers["if-none-match"] == first.etag
    assert github.requests[-1].headers["authorization"] == f"Bearer {token}"


def test_changed_instance_returns_the_new_etag(adapter, github):
    github.set_runs("o/r", "ci.yml", [{"id": 1}])
    first = fetch(adapter, github)
    github.set_runs("o/r", "ci.yml", [{"id": 2}, {"id": 1}])
    second = fetch(adapter, github, Instance(etag=first.etag))
    assert not second.not_modified and ids(second) == ["2_1", "1_1"]
    assert second.etag and second.etag != first.etag


def test_anonymous_requests_send_no_authorization(adapter, github):
    github.set_runs("o/r", "ci.yml", [{"id": 1}])
    fetch(adapter, github)
    assert "authorization" not in github.requests[-1].headers
    assert github.requests[-1].headers["accept"] == "application/vnd.github+json"


def test_rate_limit_exceeded(adapter, github, token):
    github.set_runs("o/r", "ci.yml", [{"id": 1}])
    github.rate_limited(True)
    github.set_rate_limit(reset_in=600)
    with pytest.raises(CIError, match="rate limit exceeded") as info:
        fetch(adapter, github)
    assert 590 <= info.value.retry_after <= 600
    # Later instances on the same token fail fast, without spending requests.
    github.rate_limited(False)
    before = len(github.requests)
    with pytest.raises(CIError, match="rate limit exhausted") as again:
        fetch(adapter, github, Instance(resource="repos/o/r/actions/workflows/other.yml"))
    assert again.value.retry_after > 0 and len(github.requests) == before


def test_budget_spent_by_the_last_request(adapter, github):
    github.set_runs("o/r", "ci.yml", [{"id": 1}])
    github.set_rate_limit(remaining=1, reset_in=300)
    assert ids(fetch(adapter, github)) == ["1_1"]  # X-RateLimit-Remaining: 0 now
    with pytest.raises(CIError) as info:
        fetch(adapter, github)
    assert 0 < info.value.retry_after <= 300
    assert len(github.requests) == 1


def test_secondary_rate_limit(adapter, github):
    github.secondary_rate_limit(retry_after=30)
    with pytest.raises(CIError, match="secondary rate limit") as info:
        fetch(adapter, github)
    assert info.value.retry_after == 30


def test_429_with_retry_after(adapter, github):
    github.fault(
        r"/runs$", status=429, body={"message": "Too Many Requests"}, headers={"Retry-After": "45"}
    )
    with pytest.raises(CIError, match="rate limit") as info:
        fetch(adapter, github)
    assert info.value.retry_after == 45


def test_forbidden_is_not_rate_limiting(adapter, github):
    github.fault(
        r"/runs$",
        status=403,
        body={"message": "Resource not accessible by integration"},
        headers={"X-RateLimit-Remaining": "4000"},
    )
    with pytest.raises(CIError, match="access denied") as info:
        fetch(adapter, github)
    assert info.value.retry_after is None
    github.clear_faults()
    github.set_runs("o/r", "ci.yml", [{"id": 1}])
    assert ids(fetch(adapter, github)) == ["1_1"]  # the budget was not marked spent


def test_bad_credentials(adapter, github):
    get_secrets().put(token_key(github.url), "wrong")
    github.require_token("right")
    with pytest.raises(CIError, match="bad credentials") as info:
        fetch(adapter, github)
    assert "wrong" not in str(info.value)


def test_unknown_workflow(adapter, github):
    with pytest.raises(CIError, match="not found"):
        fetch(adapter, github, Instance(resource="repos/o/r/actions/workflows/nope.yml"))


# -- failures -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 500, "body": {"message": "Server Error"}},
        {"status": 502, "body": "<html>Bad gateway</html>"},
        {"status": 200, "body": '{"total_count": 1, "workflow_runs": [{"id": 1'},
        {"status": 200, "body": "<html>not json</html>"},
        {"status": 200, "body": {"total_count": 0}},
        {"status": 200, "body": "[]"},
        {"status": 200, "body": {"workflow_runs": []}, "truncate": True},
        {"drop": True},
    ],
)
def test_faults_are_ci_errors(adapter, github, fault):
    github.set_runs("o/r", "ci.yml", [{"id": 1}])
    github.fault(r"/runs$", **fault)
    with pytest.raises(CIError) as info:
        fetch(adapter, github)
    assert "\n" not in str(info.value)


def test_malformed_runs_are_skipped(adapter, github):
    github.fault(
        r"/runs$",
        status=200,
        body={
            "workflow_runs": [
                {"id": 3, "status": "completed", "conclusion": "success", "created_at": "garbage"},
                {"id": "x"},
                None,
                {"id": True},
                {"id": 1, "status": "in_progress", "run_attempt": "two"},
            ]
        },
    )
    result = fetch(adapter, github)
    assert [(b.build_id, b.status) for b in result.builds] == [
        ("3_1", "passed"),
        ("1_1", "running"),
    ]


def test_timeout(github):
    github.fault(r"/runs$", delay=1.0)
    adapter = GithubAdapter(timeout=(0.5, 0.2), retries=0)
    with pytest.raises(CIError, match="timed out"):
        fetch(adapter, github)


def test_refused_connection(adapter):
    emulator = GithubEmulator(replay=False).start()
    url = emulator.url
    emulator.stop()
    with pytest.raises(CIError, match="cannot connect"):
        adapter.fetch_builds(url, Instance(), 10)


def test_oversized_body(github):
    github.set_runs("o/r", "ci.yml", [{"id": n} for n in range(5, 0, -1)])
    small = GithubAdapter(timeout=(1.0, 2.0), retries=0, max_bytes=2000)
    with pytest.raises(CIError, match="exceeds 2000 bytes"):
        fetch(small, github)


def test_redirect_to_a_private_address_is_blocked(adapter, github, monkeypatch):
    monkeypatch.delenv("ALLOW_PRIVATE_URLS")
    original = http.address_allowed
    monkeypatch.setattr(http, "address_allowed", lambda ip: ip == "127.0.0.1" or original(ip))
    github.fault(r"/runs$", status=302, headers={"Location": "http://10.0.0.7/runs"})
    with pytest.raises(CIError, match="private, loopback or reserved"):
        fetch(adapter, github)


def test_unexpected_exceptions_become_ci_errors(adapter, github, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(gh, "_plan", boom)
    github.set_runs("o/r", "ci.yml", [{"id": 1}])
    with pytest.raises(CIError, match="unexpected error"):
        fetch(adapter, github)


def test_rate_block_expires(monkeypatch):
    key = gh._budget_key("http://x", None)
    gh._block(key, 5)
    assert gh._blocked_for(key) is not None
    later = time.time() + 10
    monkeypatch.setattr(gh.time, "time", lambda: later)
    assert gh._blocked_for(key) is None


# -- through the refresh job ----------------------------------------------------------------


def test_refresh_job_idle_cycle_is_free(github, token, session):
    from sqlalchemy import select

    from chalicelib.jobs.refresh import refresh_instance
    from chalicelib.models import (
        Build,
        TestingService,
        TestInstance,
        TestSuite,
        Workflow,
        WorkflowVersion,
    )

    github.set_runs(
        "o/r", "ci.yml", [{"id": 2, "status": "queued"}, {"id": 1, "attempt": 2, "created_at": T0}]
    )
    service = TestingService(type="github", url=github.url)
    version = WorkflowVersion(workflow=Workflow(name="wf"), version="1")
    instance = TestInstance(
        suite=TestSuite(workflow_version=version, name="s"),
        resource=RESOURCE,
        testing_service=service,
    )
    session.add_all([service, version, instance])
    session.flush()
    assert refresh_instance(session, instance.id) == "updated"
    rows = session.execute(
        select(Build.build_id, Build.status)
        .where(Build.instance_id == instance.id)
        .order_by(Build.build_id)
    ).all()
    assert [tuple(r) for r in rows] == [("1_1", "failed"), ("1_2", "passed"), ("2_1", "waiting")]
    assert instance.etag
    used, requests = github.rate_used, len(github.requests)
    assert refresh_instance(session, instance.id) == "unchanged"
    assert github.rate_used == used and len(github.requests) == requests + 1
