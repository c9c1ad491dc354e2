"""GitLab CI adapter against the GitLab emulator (documented pipeline JSON shapes)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from chalicelib import http
from chalicelib.testing import CIError, get_adapter
from chalicelib.testing import gitlab as G
from chalicelib.testing.gitlab import GitlabAdapter
from emulators.gitlab import GitlabEmulator

FAST = {"timeout": (2.0, 2.0), "retries": 0}
PROJECT = "group/sub/project"


def inst(resource: str = PROJECT, etag: str | None = None, **parameters) -> SimpleNamespace:
    return SimpleNamespace(resource=resource, etag=etag, parameters=parameters)


@pytest.fixture
def private_ok(monkeypatch):
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")


@pytest.fixture(scope="module")
def server():
    # One server per module, reset for each test: starting and stopping costs ~0.5 s.
    with GitlabEmulator() as e:
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
def adapter() -> GitlabAdapter:
    return GitlabAdapter(**FAST)


def at(minutes_ago: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes_ago)


# -- registration, URLs, resources ----------------------------------------------------------


def test_registered_as_gitlab():
    assert isinstance(get_adapter("gitlab"), GitlabAdapter)


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("https://gitlab.com", "https://gitlab.com/api/v4"),
        ("https://gitlab.com/", "https://gitlab.com/api/v4"),
        ("https://gitlab.com/api/v4", "https://gitlab.com/api/v4"),
        ("https://example.org/gitlab/", "https://example.org/gitlab/api/v4"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/api/v4"),
    ],
)
def test_api_base(url, base):
    assert G.api_base(url) == base


def test_api_base_rejects_non_http():
    with pytest.raises(CIError):
        G.api_base("gitlab.com")


@pytest.mark.parametrize(
    ("resource", "ref", "path"),
    [
        ("projects/278964", "278964", None),
        ("projects/278964/pipelines", "278964", None),
        ("projects/group%2Fsub%2Fproject", "group%2Fsub%2Fproject", PROJECT),
        ("projects/group%2fproject/pipelines", "group%2Fproject", "group/project"),
        ("group/project", "group%2Fproject", "group/project"),
        ("/group/sub/project/", "group%2Fsub%2Fproject", PROJECT),
        ("group/sub/project/pipelines", "group%2Fsub%2Fproject", PROJECT),
        ("group/sub/project/-/pipelines", "group%2Fsub%2Fproject", PROJECT),
        ("group/pipelines", "group%2Fpipelines", "group/pipelines"),  # a project "pipelines"
        ("group/pipelines/-/pipelines", "group%2Fpipelines", "group/pipelines"),
        ("projects/foo", "projects%2Ffoo", "projects/foo"),  # group "projects"
        ("https://gitlab.com/group/project", "group%2Fproject", "group/project"),
        ("https://gitlab.com/group/sub/project/-/pipelines", "group%2Fsub%2Fproject", PROJECT),
        ("my.group/my-project_2", "my.group%2Fmy-project_2", "my.group/my-project_2"),
    ],
)
def test_parse_resource(resource, ref, path):
    project = G.parse_resource(resource, "https://gitlab.com")
    assert (project.ref, project.path) == (ref, path)


def test_parse_resource_relative_url_root():
    project = G.parse_resource(
        "https://example.org/gitlab/a/b/-/pipelines", "https://example.org/gitlab"
    )
    assert project.path == "a/b"


@pytest.mark.parametrize(
    "resource",
    [
        "",
        "/",
        "project",
        "a//b",
        "a/../b",
        "a/b c",
        "-/pipelines",
        "a/-/pipelines",
        "https://evil.example/group/project",
        "projects/%2F",
    ],
)
def test_parse_resource_rejects(resource):
    with pytest.raises(CIError, match="GitLab CI"):
        G.parse_resource(resource, "https://gitlab.com")


def test_token_key_scheme():
    assert G.token_key("https://gitlab.com") == "ci/gitlab/gitlab.com/token"
    assert G.token_key("http://127.0.0.1:8080/") == "ci/gitlab/127.0.0.1_8080/token"


# -- status mapping --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("success", "passed"),
        ("failed", "failed"),
        ("canceled", "aborted"),
        ("skipped", "aborted"),
        ("running", "running"),
        ("canceling", "running"),
        ("created", "waiting"),
        ("waiting_for_resource", "waiting"),
        ("preparing", "waiting"),
        ("pending", "waiting"),
        ("scheduled", "waiting"),
        ("manual", "waiting"),
        ("something_new", "error"),
        (None, "error"),
    ],
)
def test_map_status(status, expected):
    assert G.map_status(status) == expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("success", "passed"),
        ("failed", "failed"),
        ("canceled", "aborted"),
        ("skipped", "aborted"),
        ("running", "running"),
        ("pending", "waiting"),
        ("manual", "waiting"),
        ("created", "waiting"),
    ],
)
def test_every_status_through_the_emulator(emu, adapter, status, expected):
    emu.set_builds([emu.make_pipeline(77, status)], project=PROJECT)
    [build] = adapter.fetch_builds(emu.url, inst(), 10).builds
    assert build.status == expected
    assert build.started_at is not None  # created_at at least: sorts as the newest
    if expected in {"running", "waiting"}:
        assert build.finished_at is None and build.duration is None
    else:
        assert build.finished_at is not None and build.duration is not None


# -- fetching --------------------------------------------------------------------------------


def test_list_shape_times_and_links(emu, adapter):
    created, updated = at(30), at(20)
    emu.set_builds(
        [
            emu.make_pipeline(12, "running", created_at=at(2), updated_at=at(1)),
            emu.make_pipeline(
                11,
                "success",
                created_at=created,
                updated_at=updated,
                sha="a91957a858320c0e17f3a0eca7cfacbff50ea29a",
            ),
        ],
        project=PROJECT,
    )
    result = adapter.fetch_builds(emu.url, inst(), 10)
    running, done = result.builds
    assert (running.build_id, done.build_id) == ("12", "11")
    assert running.status == "running" and running.finished_at is None
    # The list endpoint has no started_at/finished_at/duration: computed from its times.
    assert done.started_at == created
    assert done.finished_at == updated
    assert done.duration == 600.0
    assert done.revision == "a91957a858320c0e17f3a0eca7cfacbff50ea29a"
    assert done.url == f"{emu.url}/{PROJECT}/-/pipelines/11"
    assert done.links == {"origin": done.url}
    assert result.etag


def test_single_pipeline_shape_is_understood(emu):
    """The documented single-pipeline payload (started_at, finished_at, duration)."""
    created, started, finished = at(10), at(9), at(5)
    payload = emu.make_pipeline(
        46, "success", created_at=created, started_at=started, finished_at=finished, duration=123.65
    )
    payload["web_url"] = "https://example.com/foo/bar/pipelines/46"
    build = G.to_build(payload)
    assert build.started_at == started
    assert build.finished_at == finished
    assert build.duration == 123.65
    assert build.url == "https://example.com/foo/bar/pipelines/46"


def test_parse_time_formats():
    assert G.parse_time("2016-08-11T11:28:34.085Z") == datetime(
        2016, 8, 11, 11, 28, 34, 85000, tzinfo=UTC
    )
    assert G.parse_time("2016-08-11T13:28:34.085+02:00") == datetime(
        2016, 8, 11, 11, 28, 34, 85000, tzinfo=UTC
    )
    assert G.parse_time("yesterday") is None
    assert G.parse_time(None) is None


def test_one_request_per_refresh(emu, adapter):
    emu.set_builds([emu.make_pipeline(n, "success") for n in range(1, 16)], project=PROJECT)
    result = adapter.fetch_builds(emu.url, inst(), 10)
    assert [b.build_id for b in result.builds] == [str(n) for n in range(15, 5, -1)]
    assert emu.count() == 1
    [req] = emu.requests
    assert req.path == "/api/v4/projects/group%2Fsub%2Fproject/pipelines"
    assert req.query == {"per_page": ["10"], "order_by": ["id"], "sort": ["desc"]}
    assert "private-token" not in req.headers


@pytest.mark.parametrize(
    "form",
    [
        "projects/{id}",
        "projects/{id}/pipelines",
        "projects/group%2Fsub%2Fproject",
        "group/sub/project/pipelines",
        "group/sub/project/-/pipelines",
        "{url}/group/sub/project/-/pipelines",
    ],
)
def test_resource_forms_reach_the_project(emu, adapter, form):
    pid = emu.set_builds([emu.make_pipeline(5, "failed")], project=PROJECT, project_id=42)
    resource = form.format(id=pid, url=emu.url)
    [build] = adapter.fetch_builds(emu.url, inst(resource), 10).builds
    assert (build.build_id, build.status) == ("5", "failed")


def test_ref_parameter(emu, adapter):
    emu.set_builds(
        [emu.make_pipeline(2, "failed", ref="dev"), emu.make_pipeline(1, "success", ref="main")],
        project=PROJECT,
    )
    [build] = adapter.fetch_builds(emu.url, inst(ref="main"), 10).builds
    assert build.build_id == "1"
    assert emu.requests[-1].arg("ref") == "main"
    adapter.fetch_builds(emu.url, inst(branch="dev"), 10)
    assert emu.requests[-1].arg("ref") == "dev"


def test_token_header_when_configured(emu, adapter):
    from chalicelib.secrets import get_secrets

    emu.require_token("glpat-s3cret")
    with pytest.raises(CIError, match="HTTP 404, project not found"):
        adapter.fetch_builds(emu.url, inst(), 10)
    get_secrets().put(G.token_key(emu.url), "wrong")
    with pytest.raises(CIError, match=r"HTTP 401.*ci/gitlab/127\.0\.0\.1_"):
        adapter.fetch_builds(emu.url, inst(), 10)
    get_secrets().put(G.token_key(emu.url), "glpat-s3cret")
    assert len(adapter.fetch_builds(emu.url, inst(), 10).builds) == 1
    assert emu.requests[-1].headers["private-token"] == "glpat-s3cret"


def test_conditional_request(emu, adapter):
    first = adapter.fetch_builds(emu.url, inst(), 10)
    again = adapter.fetch_builds(emu.url, inst(etag=first.etag), 10)
    assert again.not_modified and again.builds == []
    assert emu.requests[-1].headers["if-none-match"] == first.etag


def test_malformed_entries_are_skipped(emu, adapter):
    emu.set_builds([emu.make_pipeline(2, "success")], project=PROJECT)
    emu.project_for_path(PROJECT)["pipelines"].append({"status": "success"})
    assert [b.build_id for b in adapter.fetch_builds(emu.url, inst(), 10).builds] == ["2"]


def test_empty_project(emu, adapter):
    emu.set_builds([], project=PROJECT)
    assert adapter.fetch_builds(emu.url, inst(), 10).builds == []


# -- faults → CIError -----------------------------------------------------------------------


def test_timeout(emu):
    emu.fault(r"/pipelines$", delay=1.0, status=200, body=[])
    adapter = GitlabAdapter(timeout=(1.0, 0.2), retries=0)
    with pytest.raises(CIError, match="timed out"):
        adapter.fetch_builds(emu.url, inst(), 10)


def test_refused_connection(private_ok, adapter):
    emu = GitlabEmulator().start()
    url = emu.url
    emu.stop()
    with pytest.raises(CIError, match="cannot connect"):
        adapter.fetch_builds(url, inst(), 10)


def test_dns_failure(private_ok, adapter, monkeypatch):
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(CIError, match="cannot resolve"):
        adapter.fetch_builds("https://gitlab.example.invalid", inst(), 10)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_error(emu, adapter, status):
    emu.fault(r"/pipelines$", status=status, body={"message": "500 Internal Server Error"})
    with pytest.raises(CIError, match=f"HTTP {status}, server error") as err:
        adapter.fetch_builds(emu.url, inst(), 10)
    assert "\n" not in str(err.value)


def test_truncated_body(emu, adapter):
    emu.fault(r"/pipelines$", status=200, body='[{"id": 1', truncate=True)
    with pytest.raises(CIError, match="broke while reading"):
        adapter.fetch_builds(emu.url, inst(), 10)


def test_truncated_json(emu, adapter):
    emu.fault(
        r"/pipelines$",
        status=200,
        body='[{"id": 1, "status": "succ',
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(CIError, match="malformed JSON"):
        adapter.fetch_builds(emu.url, inst(), 10)


@pytest.mark.parametrize("body", ["<html>502</html>", '{"message": "ok"}', '"x"'])
def test_malformed_json(emu, adapter, body):
    emu.fault(r"/pipelines$", status=200, body=body)
    with pytest.raises(CIError, match=r"malformed JSON|not a list"):
        adapter.fetch_builds(emu.url, inst(), 10)


def test_oversized_body(emu):
    emu.fault(r"/pipelines$", status=200, body="[" + " " * 200_000 + "]")
    adapter = GitlabAdapter(timeout=(2.0, 2.0), retries=0, max_bytes=64 * 1024)
    with pytest.raises(CIError, match="exceeds"):
        adapter.fetch_builds(emu.url, inst(), 10)


def test_rate_limited_with_retry_after(emu):
    emu.rate_limit(retry_after=120)
    adapter = GitlabAdapter()  # production settings: a long wait is not slept through
    with pytest.raises(CIError, match="rate limited") as err:
        adapter.fetch_builds(emu.url, inst(), 10)
    assert err.value.retry_after == pytest.approx(120)
    assert emu.count() == 1


def test_rate_limited_with_ratelimit_reset_only(emu, adapter):
    emu.rate_limit(retry_after=None, reset_in=300)
    with pytest.raises(CIError, match="rate limited") as err:
        adapter.fetch_builds(emu.url, inst(), 10)
    assert err.value.retry_after == pytest.approx(300, abs=2)


def test_loopback_blocked_without_allow_private(emu, adapter, monkeypatch, fresh_http):
    monkeypatch.delenv("ALLOW_PRIVATE_URLS", raising=False)
    with pytest.raises(CIError, match="private, loopback or reserved"):
        adapter.fetch_builds(emu.url, inst(), 10)
    assert emu.count() == 0


def test_redirect_to_private_address(emu, adapter, monkeypatch, fresh_http):
    """The emulator stands in for a public GitLab (127.0.0.1 counted as public) that
    redirects into the private network: the guard refuses to follow."""
    monkeypatch.delenv("ALLOW_PRIVATE_URLS", raising=False)
    real = http.address_allowed
    monkeypatch.setattr(http, "address_allowed", lambda ip: ip == "127.0.0.1" or real(ip))
    emu.fault(r"/pipelines$", status=301, headers={"Location": "http://10.0.0.1/api/v4/x"})
    with pytest.raises(CIError, match="private, loopback or reserved"):
        adapter.fetch_builds(emu.url, inst(), 10)
    assert emu.count() == 1


def test_unexpected_exception_becomes_cierror(emu, adapter, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(G.GitlabAdapter, "_fetch_builds", boom)
    with pytest.raises(CIError, match="unexpected error"):
        adapter.fetch_builds(emu.url, inst(), 10)


def test_parameter_store_failure_becomes_cierror(emu, adapter, monkeypatch):
    from chalicelib import secrets

    class Broken:
        def get(self, key):
            raise secrets.SecretError("SSM unreachable")

    monkeypatch.setattr(secrets, "get_secrets", lambda *a, **k: Broken())
    with pytest.raises(CIError, match="parameter store"):
        adapter.fetch_builds(emu.url, inst(), 10)


def test_invalid_resource_makes_no_request(emu, adapter):
    with pytest.raises(CIError, match="invalid"):
        adapter.fetch_builds(emu.url, inst("justone"), 10)
    assert emu.count() == 0


# -- through the refresh job --------------------------------------------------------------------


def test_refresh_job_stores_pipelines_and_errors(emu, session):
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
        [emu.make_pipeline(9, "pending"), emu.make_pipeline(8, "success")], project=PROJECT
    )
    service = TestingService(type="gitlab", url=emu.url)
    version = WorkflowVersion(workflow=Workflow(name="wf"), version="1")
    instance = TestInstance(
        suite=TestSuite(workflow_version=version, name="s"),
        resource=f"{PROJECT}/-/pipelines",
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
    assert [tuple(r) for r in rows] == [("8", "passed"), ("9", "waiting")]
    emu.rate_limit(retry_after=600)
    assert refresh_instance(session, instance.id) == "error"
    assert "rate limited" in instance.last_error
    assert instance.next_check_at - instance.last_checked_at >= timedelta(seconds=600)
