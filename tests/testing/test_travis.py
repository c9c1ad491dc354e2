"""Travis CI adapter against the Travis emulator (fixtures replayed where present)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from chalicelib import http
from chalicelib.testing import CIError, get_adapter
from chalicelib.testing import travis as T
from chalicelib.testing.travis import TravisAdapter
from emulators.travis import TravisEmulator

FAST = {"timeout": (2.0, 2.0), "retries": 0}


def inst(resource: str, etag: str | None = None, **parameters) -> SimpleNamespace:
    return SimpleNamespace(resource=resource, etag=etag, parameters=parameters)


@pytest.fixture
def private_ok(monkeypatch):
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")


@pytest.fixture(scope="module")
def server():
    # One server per module, reset for each test: starting and stopping costs ~0.5 s.
    with TravisEmulator() as e:
        yield e


@pytest.fixture
def emu(server, private_ok):
    server.reset()
    return server


@pytest.fixture
def fresh_http():
    """No pooled connections before or after: the address guard runs at connect time."""
    http.reset()
    yield
    http.reset()


@pytest.fixture
def adapter() -> TravisAdapter:
    return TravisAdapter(**FAST)


def at(minutes_ago: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes_ago)


# -- registration, URLs, resources ----------------------------------------------------------


def test_registered_as_travis():
    assert isinstance(get_adapter("travis"), TravisAdapter)


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("https://travis-ci.com", "https://api.travis-ci.com"),
        ("https://travis-ci.com/", "https://api.travis-ci.com"),
        ("https://api.travis-ci.com", "https://api.travis-ci.com"),
        ("https://app.travis-ci.com/", "https://api.travis-ci.com"),
        ("https://travis-ci.org", "https://api.travis-ci.org"),
        ("https://api.travis-ci.org/", "https://api.travis-ci.org"),
        ("http://127.0.0.1:8123", "http://127.0.0.1:8123"),
        ("https://travis.example.com/api/", "https://travis.example.com/api"),
        ("https://travis-ci.com.evil.example", "https://travis-ci.com.evil.example"),
    ],
)
def test_api_base(url, base):
    assert T.api_base(url) == base


@pytest.mark.parametrize(
    ("url", "parameters", "site"),
    [
        ("https://api.travis-ci.com", {}, "https://app.travis-ci.com"),
        ("https://travis-ci.org/", {}, "https://travis-ci.org"),
        ("https://travis.example.com/api", {}, "https://travis.example.com"),
        (
            "https://travis.example.com/api",
            {"site_url": "https://ci.example.com/"},
            "https://ci.example.com",
        ),
    ],
)
def test_site_url(url, parameters, site):
    assert T.site_url(url, parameters) == site


def test_api_base_rejects_non_http():
    with pytest.raises(CIError):
        T.api_base("ftp://travis-ci.example")
    with pytest.raises(CIError):
        T.api_base("")


@pytest.mark.parametrize(
    ("resource", "ref", "slug"),
    [
        ("github/crs4/pydoop", "crs4%2Fpydoop", "crs4/pydoop"),
        ("repo/1002447", "1002447", None),
        ("repo/1002447/builds", "1002447", None),
        ("crs4/iwc", "crs4%2Fiwc", "crs4/iwc"),
        ("/crs4/iwc/", "crs4%2Fiwc", "crs4/iwc"),
        ("crs4/iwc/builds", "crs4%2Fiwc", "crs4/iwc"),
        ("github/crs4/iwc/builds", "crs4%2Fiwc", "crs4/iwc"),
        ("repo/crs4%2Fiwc", "crs4%2Fiwc", "crs4/iwc"),
        # LifeMonitor's `strip("/(builds)?")` turned these into "alice/util", "bob/d", "x/lib"…
        ("alice/utils", "alice%2Futils", "alice/utils"),
        ("github/bob/build", "bob%2Fbuild", "bob/build"),
        ("bob/dbs/builds", "bob%2Fdbs", "bob/dbs"),
        ("sub/lib", "sub%2Flib", "sub/lib"),
        ("bids/uibs", "bids%2Fuibs", "bids/uibs"),
        ("owner/builds", "owner%2Fbuilds", "owner/builds"),  # a repo called "builds"
        ("github/owner/builds", "owner%2Fbuilds", "owner/builds"),
        ("repo/foo", "repo%2Ffoo", "repo/foo"),  # owner "repo": not an id
        ("my.org/my-repo_2", "my.org%2Fmy-repo_2", "my.org/my-repo_2"),
    ],
)
def test_parse_resource(resource, ref, slug):
    repo = T.parse_resource(resource)
    assert (repo.ref, repo.slug) == (ref, slug)


@pytest.mark.parametrize(
    "resource",
    [
        "",
        "/",
        "single",
        "a//b",
        "a/b/c",
        "github/a/b/c",
        "repo/1/2",
        "a/b/builds/1",
        "../etc",
        "a/b c",
        "a/..",
        "github/a/b/builds/x",
    ],
)
def test_parse_resource_rejects(resource):
    with pytest.raises(CIError, match="Travis CI"):
        T.parse_resource(resource)


def test_token_key_scheme():
    assert T.token_key("https://api.travis-ci.com") == "ci/travis/api.travis-ci.com/token"
    assert T.token_key("http://127.0.0.1:8080/x") == "ci/travis/127.0.0.1_8080/token"


# -- status mapping -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "finished", "status"),
    [
        ("passed", "2021-05-03T10:52:50Z", "passed"),
        ("failed", "2021-05-03T10:52:50Z", "failed"),
        ("canceled", "2021-05-03T10:52:50Z", "aborted"),
        ("canceled", None, "aborted"),
        ("errored", "2021-05-03T10:52:50Z", "error"),
        ("something_new", "2021-05-03T10:52:50Z", "error"),
        ("started", None, "running"),
        ("started", "", "running"),
        ("passed", None, "running"),  # LifeMonitor's rule: no finish time → running
        ("created", None, "waiting"),
        ("received", None, "waiting"),
        ("queued", None, "waiting"),
        (None, None, "running"),
    ],
)
def test_map_status(state, finished, status):
    assert T.map_status(state, finished) == status


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("passed", "passed"),
        ("failed", "failed"),
        ("canceled", "aborted"),
        ("errored", "error"),
        ("created", "waiting"),
        ("received", "waiting"),
        ("started", "running"),
    ],
)
def test_every_state_through_the_emulator(emu, adapter, state, expected):
    emu.set_builds([emu.make_build(500, state)], slug="o/r")
    [build] = adapter.fetch_builds(emu.url, inst("o/r"), 10).builds
    assert build.status == expected
    if expected in {"running", "waiting"}:
        assert build.finished_at is None and build.duration is None


def test_running_build_with_null_finished_at(emu, adapter):
    started = at(3)
    emu.set_builds([emu.make_build(9, "started", started_at=started, finished_at=None)], slug="o/r")
    [build] = adapter.fetch_builds(emu.url, inst("github/o/r"), 10).builds
    assert build.status == "running"
    assert build.started_at == started
    assert build.finished_at is None
    assert build.duration is None


# -- fetching -------------------------------------------------------------------------------


def test_replays_recorded_builds(emu, adapter, shared_fixtures):
    assert emu.from_fixtures
    result = adapter.fetch_builds(emu.url, inst("github/kevinburke/travis"), 10)
    assert [b.build_id for b in result.builds] == ["366635873", "366632359"]
    first, second = result.builds
    assert (first.status, second.status) == ("failed", "passed")
    assert first.started_at == datetime(2018, 4, 14, 23, 3, 34, tzinfo=UTC)
    assert first.finished_at == datetime(2018, 4, 14, 23, 4, 10, tzinfo=UTC)
    assert first.duration == 36.0
    assert first.revision == "4208212faa90e5ce7cf7c41bcc17ce091ab56137"
    assert first.url == f"{emu.url}/kevinburke/travis/builds/366635873"
    assert first.links["origin"] == first.url
    assert first.links["instance"] == f"{emu.url}/kevinburke/travis/builds"
    assert first.links["api"] == f"{emu.url}/build/366635873"
    assert result.etag


def test_by_repo_id_uses_the_slug_from_the_answer(emu, adapter, shared_fixtures):
    result = adapter.fetch_builds(emu.url, inst("repo/31101896"), 10)
    [build] = result.builds
    assert build.build_id == "769307075"
    assert build.duration == 1597.0
    assert build.url == f"{emu.url}/crs4/iwc/builds/769307075"


def test_one_request_per_refresh(emu, adapter):
    emu.set_builds([emu.make_build(n, "passed") for n in range(1, 16)], slug="alice/utils")
    result = adapter.fetch_builds(emu.url, inst("alice/utils/builds"), 10)
    assert [b.build_id for b in result.builds] == [str(n) for n in range(15, 5, -1)]
    assert emu.count() == 1
    [req] = emu.requests
    assert req.path == "/repo/alice%2Futils/builds"
    assert req.arg("limit") == "10"
    assert req.arg("sort_by") == "number:desc"
    assert req.headers["travis-api-version"] == "3"
    assert "authorization" not in req.headers


@pytest.mark.parametrize("slug", ["x/lib", "x/bids", "x/dbs", "x/build", "x/guid", "x/bus"])
def test_slug_ending_in_stripped_characters(emu, adapter, slug):
    emu.set_builds([emu.make_build(7, "passed")], slug=slug)
    for resource in (slug, f"github/{slug}", f"{slug}/builds", f"/github/{slug}/builds/"):
        [build] = adapter.fetch_builds(emu.url, inst(resource), 10).builds
        assert build.url == f"{emu.url}/{slug}/builds/7"
    assert {r.path for r in emu.requests} == {f"/repo/{slug.replace('/', '%2F')}/builds"}


def test_branch_parameter(emu, adapter):
    emu.set_builds(
        [emu.make_build(2, "failed", branch="dev"), emu.make_build(1, "passed", branch="main")],
        slug="o/r",
    )
    [build] = adapter.fetch_builds(emu.url, inst("o/r", branch="main"), 10).builds
    assert build.build_id == "1"
    assert emu.requests[-1].arg("branch.name") == "main"


def test_token_header_when_configured(emu, adapter):
    from chalicelib.secrets import get_secrets

    emu.require_token("s3cret")
    emu.set_builds([emu.make_build(1, "passed")], slug="o/r")
    with pytest.raises(CIError, match=r"HTTP 403.*insufficient_access"):
        adapter.fetch_builds(emu.url, inst("o/r"), 10)
    get_secrets().put(T.token_key(emu.url), "s3cret")
    assert len(adapter.fetch_builds(emu.url, inst("o/r"), 10).builds) == 1
    assert emu.requests[-1].headers["authorization"] == "token s3cret"


def test_conditional_request(emu, adapter):
    emu.set_builds([emu.make_build(1, "passed")], slug="o/r")
    first = adapter.fetch_builds(emu.url, inst("o/r"), 10)
    again = adapter.fetch_builds(emu.url, inst("o/r", etag=first.etag), 10)
    assert again.not_modified and again.builds == []
    assert again.etag == first.etag
    assert emu.requests[-1].headers["if-none-match"] == first.etag


def test_unknown_repository(emu, adapter):
    with pytest.raises(CIError, match=r"HTTP 404.*not_found"):
        adapter.fetch_builds(emu.url, inst("nobody/nothing"), 10)


def test_malformed_entries_are_skipped(emu, adapter):
    good = emu.make_build(2, "passed")
    emu.set_builds([good], slug="o/r")
    emu.repos[emu.repo_for_slug("o/r")["id"]]["builds"].append({"number": "1", "state": "x"})
    assert [b.build_id for b in adapter.fetch_builds(emu.url, inst("o/r"), 10).builds] == ["2"]


def test_waiting_build_has_no_times(emu, adapter):
    emu.set_builds([emu.make_build(3, "created")], slug="o/r")
    [build] = adapter.fetch_builds(emu.url, inst("o/r"), 10).builds
    assert (build.status, build.started_at, build.finished_at) == ("waiting", None, None)


# -- faults → CIError -----------------------------------------------------------------------


def test_timeout(emu):
    emu.fault(r"/builds$", delay=1.0, status=200, body={"builds": []})
    adapter = TravisAdapter(timeout=(1.0, 0.2), retries=0)
    with pytest.raises(CIError, match="timed out"):
        adapter.fetch_builds(emu.url, inst("o/r"), 10)


def test_refused_connection(private_ok, adapter):
    emu = TravisEmulator().start()
    url = emu.url
    emu.stop()
    with pytest.raises(CIError, match="cannot connect"):
        adapter.fetch_builds(url, inst("o/r"), 10)


def test_dns_failure(private_ok, adapter, monkeypatch):
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(CIError, match="cannot resolve"):
        adapter.fetch_builds("https://travis.example.invalid", inst("o/r"), 10)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_error(emu, adapter, status):
    emu.fault(r"/builds$", status=status, body="<html>oops</html>")
    with pytest.raises(CIError, match=f"HTTP {status}, server error") as err:
        adapter.fetch_builds(emu.url, inst("o/r"), 10)
    assert "\n" not in str(err.value)


def test_truncated_body(emu, adapter):
    emu.fault(r"/builds$", status=200, body='{"builds": [', truncate=True)
    with pytest.raises(CIError, match="broke while reading"):
        adapter.fetch_builds(emu.url, inst("o/r"), 10)


def test_truncated_json(emu, adapter):
    emu.fault(
        r"/builds$",
        status=200,
        body='{"@type": "builds", "builds": [{"id": 1',
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(CIError, match="malformed JSON"):
        adapter.fetch_builds(emu.url, inst("o/r"), 10)


@pytest.mark.parametrize(
    "body", ["<html>maintenance</html>", '{"builds": {"a": 1}}', "[]", '"builds"']
)
def test_malformed_json(emu, adapter, body):
    emu.fault(r"/builds$", status=200, body=body)
    with pytest.raises(CIError, match=r"malformed JSON|no builds list"):
        adapter.fetch_builds(emu.url, inst("o/r"), 10)


def test_oversized_body(emu):
    emu.fault(r"/builds$", status=200, body="x" * 200_000)
    adapter = TravisAdapter(timeout=(2.0, 2.0), retries=0, max_bytes=64 * 1024)
    with pytest.raises(CIError, match="exceeds"):
        adapter.fetch_builds(emu.url, inst("o/r"), 10)


def test_rate_limited_with_retry_after(emu):
    emu.rate_limit(retry_after=120)
    adapter = TravisAdapter()  # production settings: a long wait is not slept through
    with pytest.raises(CIError, match="rate limited") as err:
        adapter.fetch_builds(emu.url, inst("o/r"), 10)
    assert err.value.retry_after == pytest.approx(120)
    assert emu.count() == 1


def test_short_rate_limit_is_retried(emu):
    emu.set_builds([emu.make_build(1, "passed")], slug="o/r")
    emu.rate_limit(retry_after=0, times=1)
    adapter = TravisAdapter(timeout=(2.0, 2.0), retries=1)
    assert len(adapter.fetch_builds(emu.url, inst("o/r"), 10).builds) == 1
    assert emu.count() == 2


def test_loopback_blocked_without_allow_private(emu, adapter, monkeypatch, fresh_http):
    monkeypatch.delenv("ALLOW_PRIVATE_URLS", raising=False)
    with pytest.raises(CIError, match="private, loopback or reserved"):
        adapter.fetch_builds(emu.url, inst("o/r"), 10)
    assert emu.count() == 0


def test_redirect_to_private_address(emu, adapter, monkeypatch, fresh_http):
    """The emulator stands in for a public Travis (127.0.0.1 counted as public) that
    redirects to the cloud metadata address: the guard refuses to follow."""
    monkeypatch.delenv("ALLOW_PRIVATE_URLS", raising=False)
    real = http.address_allowed
    monkeypatch.setattr(http, "address_allowed", lambda ip: ip == "127.0.0.1" or real(ip))
    emu.fault(
        r"/builds$", status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"}
    )
    with pytest.raises(CIError, match="private, loopback or reserved"):
        adapter.fetch_builds(emu.url, inst("o/r"), 10)
    assert emu.count() == 1


def test_unexpected_exception_becomes_cierror(emu, adapter, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(T, "to_build", boom)
    monkeypatch.setattr(T.TravisAdapter, "_fetch_builds", boom)
    with pytest.raises(CIError, match="unexpected error"):
        adapter.fetch_builds(emu.url, inst("o/r"), 10)


def test_invalid_resource_makes_no_request(emu, adapter):
    with pytest.raises(CIError, match="unsupported resource"):
        adapter.fetch_builds(emu.url, inst("a/b/c/d"), 10)
    assert emu.count() == 0


# -- logs -------------------------------------------------------------------------------------


def test_fetch_log(emu, adapter):
    emu.set_builds([emu.make_build(40, "failed", jobs=2)], slug="o/r")
    emu.set_log(401, "first job\n")
    emu.set_log(402, "second job\n")
    text = adapter.fetch_log(emu.url, inst("o/r"), "40", 131072)
    assert text == "first job\nsecond job\n"
    assert [r.path for r in emu.requests] == ["/build/40/jobs", "/job/401/log", "/job/402/log"]


def test_fetch_log_is_cut_at_max_bytes(emu, adapter):
    emu.set_builds([emu.make_build(40, "failed", jobs=2)], slug="o/r")
    emu.set_log(401, "é" * 100)
    text = adapter.fetch_log(emu.url, inst("o/r"), "40", 51)
    assert text == "é" * 25  # a cut multi-byte character is dropped, not mangled
    assert emu.count(r"/job/402/log") == 0


def test_fetch_recorded_log(emu, adapter, shared_fixtures):
    text = adapter.fetch_log(emu.url, inst("repo/31101896"), "769307075", 1 << 20)
    expected = (shared_fixtures / "travis" / "job-log.excerpt.769307076.txt").read_text()
    assert text == expected


def test_fetch_log_errors(emu, adapter):
    with pytest.raises(CIError, match="HTTP 404"):
        adapter.fetch_log(emu.url, inst("o/r"), "999", 1000)
    with pytest.raises(CIError, match="invalid build id"):
        adapter.fetch_log(emu.url, inst("o/r"), "../x", 1000)
    emu.set_builds([emu.make_build(40, "failed")], slug="o/r")
    emu.fault(r"/log$", status=200, body="{not json")
    with pytest.raises(CIError, match="malformed JSON"):
        adapter.fetch_log(emu.url, inst("o/r"), "40", 1000)


# -- through the refresh job --------------------------------------------------------------------


def test_refresh_job_stores_travis_builds(emu, session):
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

    emu.set_builds(
        [
            emu.make_build(3, "started", finished_at=None),
            emu.make_build(2, "failed"),
            emu.make_build(1, "passed"),
        ],
        slug="o/libs",
    )
    service = TestingService(type="travis", url=emu.url)
    version = WorkflowVersion(workflow=Workflow(name="wf"), version="1")
    instance = TestInstance(
        suite=TestSuite(workflow_version=version, name="s"),
        resource="github/o/libs",
        testing_service=service,
    )
    session.add_all([service, version, instance])
    session.flush()
    assert refresh_instance(session, instance.id) == "updated"
    rows = session.execute(
        select(Build.build_id, Build.status, Build.url)
        .where(Build.instance_id == instance.id)
        .order_by(Build.build_id)
    ).all()
    assert [(r.build_id, r.status) for r in rows] == [
        ("1", "passed"),
        ("2", "failed"),
        ("3", "running"),
    ]
    assert rows[0].url == f"{emu.url}/o/libs/builds/1"
    assert instance.last_error is None and instance.etag
