"""The Jenkins adapter against the Jenkins emulator: one request per refresh, any job path,
status/time mapping, credentials from the parameter store, every failure as CIError."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib import http
from chalicelib.secrets import get_secrets
from chalicelib.testing import CIError, get_adapter
from chalicelib.testing.jenkins import (
    JenkinsAdapter,
    credential_keys,
    map_status,
    parse_job_path,
    to_build,
    tree_query,
)
from chalicelib.testing.times import (
    from_epoch_ms,
    ms_to_seconds,
    parse_iso,
    parse_iso_or_none,
    seconds_between,
)
from emulators.jenkins import JenkinsEmulator


@dataclass
class Instance:
    resource: str
    etag: str | None = None
    parameters: dict = field(default_factory=dict)


@pytest.fixture(autouse=True)
def private_ok(monkeypatch):
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")  # the emulator listens on loopback


@pytest.fixture
def jenkins():
    with JenkinsEmulator() as emulator:
        yield emulator


@pytest.fixture
def adapter() -> JenkinsAdapter:
    return JenkinsAdapter(timeout=(1.0, 2.0), retries=0)


def fetch(adapter, jenkins, resource, limit=10):
    return adapter.fetch_builds(jenkins.url, Instance(resource), limit)


# -- registration and pure helpers -------------------------------------------------------


def test_registers_itself():
    assert isinstance(get_adapter("jenkins"), JenkinsAdapter)


@pytest.mark.parametrize(
    ("building", "result", "status"),
    [
        (True, None, "running"),
        (True, "SUCCESS", "running"),  # `building` wins over a provisional result
        (False, "SUCCESS", "passed"),
        (False, "ABORTED", "aborted"),
        (False, "FAILURE", "failed"),
        (False, "UNSTABLE", "error"),
        (False, "NOT_BUILT", "error"),
        (False, None, "error"),
        (None, "surprise", "error"),
    ],
)
def test_map_status(building, result, status):
    assert map_status(building, result) == status


@pytest.mark.parametrize(
    ("resource", "path"),
    [
        ("job/tests", "job/tests"),
        ("job/tests/", "job/tests"),
        ("/job/a/job/b/", "job/a/job/b"),
        ("a/b", "job/a/job/b"),  # bare names are jobs in folders
        ("tests", "job/tests"),
        ("job/mb/job/feature%252Fx", "job/mb/job/feature%252Fx"),  # as in the browser URL
        ("job/Test Workflow", "job/Test%20Workflow"),
        ("view/all/job/a", "view/all/job/a"),
        ("http://ci.example.org/jenkins/job/a/job/b/", "job/a/job/b"),
    ],
)
def test_parse_job_path(resource, path):
    assert parse_job_path(resource, "http://ci.example.org/jenkins") == path


@pytest.mark.parametrize(
    "resource",
    [
        "",
        "/",
        "job",
        "job/a/b",
        "job//x",
        "job/a/view/v",
        "job/..",
        "job/a/api/json",
        "http://elsewhere.example.org/job/a",
    ],
)
def test_parse_job_path_rejects(resource):
    with pytest.raises(CIError, match="Jenkins"):
        parse_job_path(resource, "http://ci.example.org/jenkins")


def test_tree_query_asks_for_everything_at_once():
    tree = tree_query(10)
    assert tree.startswith("builds[") and tree.endswith("]{0,10}")
    for name in ("number", "building", "result", "timestamp", "duration", "lastBuiltRevision"):
        assert name in tree
    assert tree_query(500).startswith("allBuilds[")


def test_credential_key_scheme():
    assert credential_keys("https://Jenkins.Example.org/") == (
        "ci/jenkins/jenkins.example.org/user",
        "ci/jenkins/jenkins.example.org/token",
    )
    assert credential_keys("http://127.0.0.1:8080/jenkins") == (
        "ci/jenkins/127.0.0.1_8080/user",
        "ci/jenkins/127.0.0.1_8080/token",
    )


def test_revision_from_recorded_change_set(shared_fixtures):
    body = json.loads(
        (shared_fixtures / "jenkins/jenkins-rest/build-info-git-commit.json").read_text()
    )
    build = to_build(body, "http://ci.example.org/job/fish/")
    assert build.revision == "d27afa0805201322d846d7defc29b82c88d9b5ce"
    assert build.build_id == "10" and build.status == "passed"
    assert build.duration == pytest.approx(60.75)


def test_time_helpers():
    assert parse_iso("2022-12-24T07:29:12Z") == datetime(2022, 12, 24, 7, 29, 12, tzinfo=UTC)
    assert parse_iso("2020-04-26T18:51:02.000+10:00") == datetime(2020, 4, 26, 8, 51, 2, tzinfo=UTC)
    assert parse_iso("2024-01-01") == datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_iso("2024-01-01T10:00:00") == datetime(2024, 1, 1, 10, tzinfo=UTC)  # naive
    assert parse_iso(None) is None and parse_iso(" ") is None
    with pytest.raises(ValueError):
        parse_iso("yesterday")
    assert parse_iso_or_none("yesterday") is None and parse_iso_or_none(5) is None
    assert from_epoch_ms(1559281453240) == datetime(2019, 5, 31, 5, 44, 13, 240000, tzinfo=UTC)
    assert from_epoch_ms(0) is None and from_epoch_ms(None) is None
    assert from_epoch_ms(True) is None and from_epoch_ms("1") is None
    assert from_epoch_ms(1e300) is None
    assert ms_to_seconds(324447) == pytest.approx(324.447) and ms_to_seconds(-1) is None
    start = datetime(2024, 1, 1, tzinfo=UTC)
    assert seconds_between(start, start + timedelta(minutes=2)) == 120.0
    assert seconds_between(start, start - timedelta(seconds=1)) is None
    assert seconds_between(None, start) is None


# -- against the emulator ----------------------------------------------------------------


def test_every_status_in_one_request(adapter, jenkins):
    jenkins.set_builds(
        "job/all",
        [
            {"building": True},
            {"result": "SUCCESS"},
            {"result": "FAILURE"},
            {"result": "ABORTED"},
            {"result": "UNSTABLE"},
            {"result": "NOT_BUILT"},
            {"result": None},
        ],
    )
    jenkins.reset_requests()
    result = fetch(adapter, jenkins, "job/all")
    assert [(b.build_id, b.status) for b in result.builds] == [
        ("7", "running"),
        ("6", "passed"),
        ("5", "failed"),
        ("4", "aborted"),
        ("3", "error"),
        ("2", "error"),
        ("1", "error"),
    ]
    assert len(jenkins.requests) == 1
    assert result.etag is None and not result.not_modified


def test_exactly_one_request_per_refresh_and_limit(adapter, jenkins):
    jenkins.set_builds("job/many", [{"result": "SUCCESS"}] * 30)
    jenkins.reset_requests()
    for _ in range(3):
        result = fetch(adapter, jenkins, "job/many", limit=10)
        assert [b.build_id for b in result.builds] == [str(n) for n in range(30, 20, -1)]
    assert len(jenkins.requests) == 3
    assert all(r.path == "/job/many/api/json" for r in jenkins.requests)
    assert jenkins.requests[0].arg("tree") == tree_query(10)


def test_times_are_utc_and_seconds(adapter, jenkins):
    start = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
    jenkins.set_builds(
        "job/t",
        [
            {"building": True, "timestamp": start},
            {
                "result": "SUCCESS",
                "timestamp": 1_700_000_000_123,
                "duration": 90_500,
                "sha": "a" * 40,
            },
        ],
    )
    running, done = fetch(adapter, jenkins, "job/t").builds
    assert running.started_at == start
    assert running.finished_at is None and running.duration is None
    assert done.started_at == datetime.fromtimestamp(1_700_000_000.123, tz=UTC)
    assert done.started_at.tzinfo is not None
    assert done.duration == pytest.approx(90.5)
    assert (done.finished_at - done.started_at).total_seconds() == pytest.approx(90.5)
    assert done.revision == "a" * 40


def test_links_use_the_service_url(adapter, jenkins):
    jenkins.set_builds("job/a/job/b", [{"result": "SUCCESS", "number": 12}])
    (build,) = fetch(adapter, jenkins, "job/a/job/b").builds
    page = f"{jenkins.url}/job/a/job/b/12/"
    assert build.url == page
    assert build.links == {
        "origin": page,
        "console": f"{page}console",
        "instance": f"{jenkins.url}/job/a/job/b/",
    }


@pytest.mark.parametrize(
    "resource",
    [
        "job/org/job/team/job/pipeline",
        "org/team/pipeline",
        "/job/org/job/team/job/pipeline/",
    ],
)
def test_nested_folders(adapter, jenkins, resource):
    jenkins.set_builds("job/org/job/team/job/pipeline", [{"result": "FAILURE"}])
    jenkins.set_builds("job/pipeline", [{"result": "SUCCESS"}])  # same name at the root
    (build,) = fetch(adapter, jenkins, resource).builds
    assert build.status == "failed"  # LifeMonitor would have read job/pipeline here


def test_full_job_url_as_resource(adapter, jenkins):
    jenkins.set_builds("job/f/job/j", [{"result": "ABORTED"}])
    (build,) = fetch(adapter, jenkins, f"{jenkins.url}/job/f/job/j/").builds
    assert build.status == "aborted"


def test_multibranch_branch_with_slash(adapter, jenkins):
    jenkins.add_folder("job/mb", multibranch=True)
    jenkins.set_builds("job/mb/job/feature%252Fx", [{"result": "SUCCESS"}])
    jenkins.set_builds("job/mb/job/main", [{"result": "FAILURE"}])
    assert fetch(adapter, jenkins, "job/mb/job/feature%252Fx").builds[0].status == "passed"
    assert fetch(adapter, jenkins, "job/mb/job/main").builds[0].status == "failed"


@pytest.mark.parametrize("resource", ["job/folder", "job/Level1_multibranchjob"])
def test_folder_is_not_a_job(adapter, jenkins, resource):
    with pytest.raises(CIError, match="folder or multibranch"):
        fetch(adapter, jenkins, resource)


def test_replayed_recorded_build(adapter, jenkins, shared_fixtures):
    (build,) = fetch(adapter, jenkins, "job/folder/job/pipeline").builds
    assert build.build_id == "52" and build.status == "failed"
    assert build.started_at == datetime(2019, 5, 31, 5, 44, 13, 240000, tzinfo=UTC)
    assert build.duration == pytest.approx(324.447)
    fish = fetch(adapter, jenkins, "job/fish").builds
    assert [b.status for b in fish[:2]] == ["running", "passed"]


def test_unknown_job(adapter, jenkins):
    with pytest.raises(CIError, match="not found"):
        fetch(adapter, jenkins, "job/missing")


def test_empty_job(adapter, jenkins):
    jenkins.set_builds("job/new", [])
    assert fetch(adapter, jenkins, "job/new").builds == []


# -- credentials -------------------------------------------------------------------------


def test_sends_basic_auth_from_the_parameter_store(adapter, jenkins):
    user_key, token_key = credential_keys(jenkins.url)
    get_secrets().put(user_key, "lm-bot")
    get_secrets().put(token_key, "11aa22bb")
    jenkins.require_auth("lm-bot", "11aa22bb")
    jenkins.set_builds("job/private", [{"result": "SUCCESS"}])
    assert fetch(adapter, jenkins, "job/private").builds[0].status == "passed"
    sent = jenkins.requests[-1].headers["authorization"]
    assert sent == "Basic " + base64.b64encode(b"lm-bot:11aa22bb").decode()


def test_no_credentials_no_header(adapter, jenkins):
    jenkins.set_builds("job/open", [{"result": "SUCCESS"}])
    fetch(adapter, jenkins, "job/open")
    assert "authorization" not in jenkins.requests[-1].headers


def test_half_a_credential_sends_nothing(adapter, jenkins):
    get_secrets().put(credential_keys(jenkins.url)[0], "lm-bot")
    jenkins.set_builds("job/open", [{"result": "SUCCESS"}])
    fetch(adapter, jenkins, "job/open")
    assert "authorization" not in jenkins.requests[-1].headers


def test_missing_credentials_is_a_clear_error(adapter, jenkins):
    jenkins.require_auth("lm-bot", "secret-token")
    with pytest.raises(CIError, match=r"access denied \(403, no credentials configured"):
        fetch(adapter, jenkins, "job/fish")


def test_wrong_credentials(adapter, jenkins):
    user_key, token_key = credential_keys(jenkins.url)
    get_secrets().put(user_key, "lm-bot")
    get_secrets().put(token_key, "wrong")
    jenkins.require_auth("lm-bot", "right")
    with pytest.raises(CIError, match=r"access denied \(401, credentials rejected") as info:
        fetch(adapter, jenkins, "job/fish")
    assert "wrong" not in str(info.value)  # never echo a secret


# -- logs ---------------------------------------------------------------------------------


def test_fetch_log(adapter, jenkins):
    jenkins.set_builds("job/a/job/b", [{"result": "FAILURE", "number": 3}])
    jenkins.set_log("job/a/job/b", 3, "line 1\nline 2\nFinished: FAILURE\n")
    instance = Instance("job/a/job/b")
    assert adapter.fetch_log(jenkins.url, instance, "3") == "line 1\nline 2\nFinished: FAILURE\n"
    assert adapter.fetch_log(jenkins.url, instance, "3", max_bytes=6) == "line 1"
    assert jenkins.requests[-1].path == "/job/a/job/b/3/consoleText"
    with pytest.raises(CIError, match="not found"):
        adapter.fetch_log(jenkins.url, instance, "4")
    with pytest.raises(CIError, match="invalid build id"):
        adapter.fetch_log(jenkins.url, instance, "../../x")


def test_fetch_recorded_log(adapter, jenkins, shared_fixtures):
    text = adapter.fetch_log(jenkins.url, Instance("job/fish"), "6", max_bytes=1 << 20)
    assert text.startswith('Started by upstream project "chicken"')


# -- failures -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 500, "body": "<html>Oops</html>"},
        {"status": 503, "body": "maintenance", "headers": {"Retry-After": "120"}},
        {"status": 200, "body": '{"builds": [{"number": 1,'},  # malformed (cut) JSON
        {"status": 200, "body": "<html><body>Login</body></html>"},  # not JSON at all
        {"status": 200, "body": "[1, 2]"},  # JSON, not an object
        {"status": 200, "body": {"builds": "nope"}},
        {"status": 200, "body": {"builds": []}, "truncate": True},  # connection cut short
        {"drop": True},
    ],
)
def test_faults_are_ci_errors(adapter, jenkins, fault):
    jenkins.fault(r"/api/json$", **fault)
    with pytest.raises(CIError) as info:
        fetch(adapter, jenkins, "job/fish")
    assert "\n" not in str(info.value)
    if fault.get("status") == 503:
        assert info.value.retry_after == 120


def test_malformed_builds_are_skipped(adapter, jenkins):
    jenkins.fault(
        r"/api/json$",
        status=200,
        body={
            "builds": [
                {"number": 2, "result": "SUCCESS", "timestamp": "yesterday", "duration": -1},
                {"number": "x"},
                None,
                {"number": 1, "result": "FAILURE", "timestamp": 1},
            ]
        },
    )
    builds = fetch(adapter, jenkins, "job/fish").builds
    assert [(b.build_id, b.status) for b in builds] == [("2", "passed"), ("1", "failed")]
    assert builds[0].started_at is None and builds[0].duration is None


def test_timeout(jenkins):
    jenkins.fault(r"/api/json$", delay=1.0)
    adapter = JenkinsAdapter(timeout=(0.5, 0.2), retries=0)
    with pytest.raises(CIError, match="timed out"):
        fetch(adapter, jenkins, "job/fish")


def test_refused_connection(adapter):
    emulator = JenkinsEmulator(replay=False).start()
    url = emulator.url
    emulator.stop()
    with pytest.raises(CIError, match="cannot connect"):
        adapter.fetch_builds(url, Instance("job/x"), 10)


def test_unresolvable_host(adapter):
    with pytest.raises(CIError, match="cannot resolve"):
        adapter.fetch_builds("http://jenkins.invalid", Instance("job/x"), 10)


def test_oversized_body(jenkins):
    small = JenkinsAdapter(timeout=(1.0, 2.0), retries=0, max_bytes=300)
    jenkins.set_builds("job/big", [{"result": "SUCCESS", "sha": "f" * 40}] * 20)
    with pytest.raises(CIError, match="exceeds 300 bytes"):
        fetch(small, jenkins, "job/big")


def test_redirect_to_a_private_address_is_blocked(adapter, jenkins, monkeypatch):
    # The guard is on (no ALLOW_PRIVATE_URLS); only the emulator's own address is let
    # through, so the redirect is what gets refused.
    monkeypatch.delenv("ALLOW_PRIVATE_URLS")
    original = http.address_allowed
    monkeypatch.setattr(http, "address_allowed", lambda ip: ip == "127.0.0.1" or original(ip))
    jenkins.fault(
        r"/api/json$", status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"}
    )
    with pytest.raises(CIError, match="private, loopback or reserved"):
        fetch(adapter, jenkins, "job/fish")


def test_private_address_blocked_without_the_flag(adapter, jenkins, monkeypatch):
    monkeypatch.delenv("ALLOW_PRIVATE_URLS")
    with pytest.raises(CIError, match="private, loopback or reserved"):
        fetch(adapter, jenkins, "job/fish")
    assert jenkins.requests == []


def test_bad_service_url(adapter):
    for url in ("", "ftp://jenkins.example.org"):
        with pytest.raises(CIError, match="Jenkins"):
            adapter.fetch_builds(url, Instance("job/x"), 10)


# -- through the refresh job ----------------------------------------------------------------


def test_refresh_job_stores_jenkins_builds(jenkins, session):
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

    jenkins.set_builds(
        "job/a/job/b", [{"building": True}, {"result": "FAILURE"}, {"result": "SUCCESS"}]
    )
    service = TestingService(type="jenkins", url=jenkins.url)
    version = WorkflowVersion(workflow=Workflow(name="wf"), version="1")
    instance = TestInstance(
        suite=TestSuite(workflow_version=version, name="s"),
        resource="job/a/job/b",
        testing_service=service,
    )
    session.add_all([service, version, instance])
    session.flush()
    jenkins.reset_requests()
    assert refresh_instance(session, instance.id) == "updated"
    assert len(jenkins.requests) == 1
    rows = session.execute(
        select(Build.build_id, Build.status, Build.duration)
        .where(Build.instance_id == instance.id)
        .order_by(Build.build_id)
    ).all()
    assert [(r.build_id, r.status) for r in rows] == [
        ("1", "passed"),
        ("2", "failed"),
        ("3", "running"),
    ]
    assert rows[0].duration == 60.0 and instance.last_error is None
