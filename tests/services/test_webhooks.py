"""chalicelib/services/webhooks.py: signatures and tokens, the SQL matching of deliveries to
test instances (every resource form the adapters accept), and how matches are refreshed:
inline, queued to SQS in the refresh job's format, or made due for the scheduler."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.services import webhooks as W
from chalicelib.testing import BuildData, CIError, FetchResult

GH = "https://api.github.com"
GHE = "https://ghe.example.org/api/v3"
JENKINS = "https://ci.example.org/jenkins"
GITLAB = "https://gitlab.example.org"


# -- pure helpers -------------------------------------------------------------------------


def test_github_documented_signature_vector():
    # docs.github.com "Validating webhook deliveries": the published test values.
    secret, body = "It's a Secret to Everybody", b"Hello, World!"
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert W.github_signature(secret, body) == expected
    assert W.verify_github_signature(secret, body, expected)
    assert W.verify_github_signature(secret, body, expected.upper().replace("SHA256", "sha256"))
    for bad in (
        None,
        "",
        "sha256=",
        expected[:-1],
        "sha1=" + expected[7:],
        expected.replace("7", "8"),
        "sha256=é" + expected[8:],
    ):
        assert not W.verify_github_signature(secret, body, bad), bad
    assert not W.verify_github_signature("other", body, expected)
    assert not W.verify_github_signature(secret, body + b" ", expected)


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://api.github.com/repos/o/r", "api.github.com"),
        ("https://CI.Example.org:443/jenkins/", "ci.example.org"),
        ("http://ci.example.org:80", "ci.example.org"),
        ("http://127.0.0.1:8080/x", "127.0.0.1_8080"),
        ("https://ci.example.org:8080", "ci.example.org_8080"),
        ("gitlab.com", "gitlab.com"),
        ("", None),
        (None, None),
        ("https://", None),
        ("http://host:notaport/", None),
        ("http://[::1/x", None),
        ("http://[::1]:8080/", "__1_8080"),
    ],
)
def test_host_key(url, key):
    assert W.host_key(url) == key


@pytest.mark.parametrize(
    ("path", "name"),
    [
        (".github/workflows/ci.yml", "ci.yml"),
        (".github/workflows/ci.yml@refs/heads/main", "ci.yml"),
        ("dynamic/pages/pages-build-deployment", "pages-build-deployment"),
        ("", None),
        (None, None),
        (42, None),
        (".github/workflows/a b.yml", None),
    ],
)
def test_workflow_file(path, name):
    assert W._workflow_file(path) == name


# -- data ---------------------------------------------------------------------------------


def add(service_type: str, url: str, resources: list[str], **fields) -> list[str]:
    """Instances (one suite) of the service at `url`; returns their uuids."""
    from chalicelib.db import session_scope
    from chalicelib.models import TestingService, TestInstance, TestSuite, Workflow, WorkflowVersion

    with session_scope() as s:
        service = s.query(TestingService).filter_by(url=url).one_or_none()
        if service is None:
            service = TestingService(type=service_type, url=url)
        suite = TestSuite(
            workflow_version=WorkflowVersion(workflow=Workflow(name="wf"), version="1"),
            name="suite",
        )
        instances = [
            TestInstance(suite=suite, resource=r, name=r, testing_service=service, **fields)
            for r in resources
        ]
        s.add_all(instances)
        s.flush()
        return [i.uuid for i in instances]


def matched(matcher, payload, *args) -> set[str]:
    from chalicelib.db import session_scope

    with session_scope() as s:
        return {m.uuid for m in matcher(s, payload, *args)}


def run_payload(
    full_name="lm-org/wf-repo",
    path=".github/workflows/ci.yml",
    workflow_id=111,
    api=GH,
    branch="main",
) -> dict:
    return {
        "action": "completed",
        "repository": {"full_name": full_name, "url": f"{api}/repos/{full_name}"},
        "workflow_run": {
            "id": 5,
            "run_attempt": 1,
            "path": path,
            "workflow_id": workflow_id,
            "head_branch": branch,
        },
        "workflow": {"id": workflow_id, "path": path},
    }


# -- GitHub matching ----------------------------------------------------------------------


def test_github_run_matches_every_resource_form_and_nothing_else(db):
    good = add(
        "github",
        GH,
        [
            "repos/lm-org/wf-repo/actions/workflows/ci.yml",
            "/repos/LM-Org/WF-Repo/actions/workflows/ci.yml/",
            "lm-org/wf-repo/actions/workflows/ci.yml",
            "https://api.github.com/repos/lm-org/wf-repo/actions/workflows/ci.yml",
            "https://github.com/lm-org/wf-repo/actions/workflows/ci.yml",
            "repos/lm-org/wf-repo/actions/workflows/111",
        ],
    )
    add("github", "https://github.com", ["repos/lm-org/wf-repo/actions/workflows/ci.yml"])
    bad = add(
        "github",
        GH,
        [
            "repos/lm-org/wf-repo/actions/workflows/lint.yml",
            "repos/lm-org/wf-repo/actions/workflows/1111",
            "repos/xlm-org/wf-repo/actions/workflows/ci.yml",
            "repos/lm-org/wf-repo2/actions/workflows/ci.yml",
            "repos/lm-org/wf-repo/actions/workflows/ci.yml.bak",
            "not a workflow lm-org/wf-repo/actions/workflows/ci.yml",
        ],
    )
    managed = add("github", GH, ["repos/lm-org/wf-repo/actions/workflows/ci.yml"], managed=True)
    other_type = add("jenkins", JENKINS, ["repos/lm-org/wf-repo/actions/workflows/ci.yml"])
    enterprise = add("github", GHE, ["repos/lm-org/wf-repo/actions/workflows/ci.yml"])
    got = matched(W.match_github_run, run_payload())
    assert set(good) <= got
    assert len(got) == len(good) + 1  # and the github.com service's instance
    assert not got & set(bad + managed + other_type + enterprise)
    # The enterprise host's deliveries reach only its instances.
    assert matched(W.match_github_run, run_payload(api=GHE)) == set(enterprise)
    # No API URL in the payload: every GitHub service.
    payload = run_payload()
    del payload["repository"]["url"]
    assert matched(W.match_github_run, payload) == got | set(enterprise)


def test_github_like_wildcards_are_literal(db):
    add(
        "github",
        GH,
        ["repos/a-b/c-d/actions/workflows/x.yml", "repos/axb/c-d/actions/workflows/x.yml"],
    )
    assert matched(W.match_github_run, run_payload("a_b/c-d", "x.yml", 1)) == set()
    [hit] = add("github", GH, ["repos/a_b/c-d/actions/workflows/x.yml"])
    assert matched(W.match_github_run, run_payload("a_b/c-d", "x.yml", 1)) == {hit}


def test_github_branch_parameter_filters(db):
    [main] = add(
        "github", GH, ["repos/o/r/actions/workflows/ci.yml"], parameters={"branch": "main"}
    )
    [dev] = add("github", GH, ["repos/o/r/actions/workflows/ci.yml"], parameters={"branch": "dev"})
    [any_branch] = add("github", GH, ["repos/o/r/actions/workflows/ci.yml"])
    assert matched(W.match_github_run, run_payload("o/r")) == {main, any_branch}
    assert matched(W.match_github_run, run_payload("o/r", branch=None)) == {main, dev, any_branch}


def test_github_job_matches_instances_that_know_the_run(db):
    from chalicelib.db import session_scope
    from chalicelib.jobs.refresh import store_builds
    from chalicelib.models import TestInstance

    ci, _lint = add(
        "github", GH, ["repos/o/r/actions/workflows/ci.yml", "repos/o/r/actions/workflows/lint.yml"]
    )
    with session_scope() as s:
        inst = s.query(TestInstance).filter_by(uuid=ci).one()
        store_builds(s, inst, [BuildData("900_1", "failed", datetime.now(UTC))])
    job = {
        "repository": {"full_name": "o/r", "url": f"{GH}/repos/o/r"},
        "workflow_job": {"run_id": 900, "run_attempt": 2, "head_branch": "main"},
    }
    assert matched(W.match_github_job, job) == {ci}  # a re-run: attempt 1 is known
    job["workflow_job"]["run_id"] = 901
    assert matched(W.match_github_job, job) == set()
    with pytest.raises(W.BadRequestError):
        matched(W.match_github_job, {"repository": {"full_name": "o/r"}, "workflow_job": {}})


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"repository": {"full_name": "no-slash"}},
        {"repository": {"full_name": "a/b/c"}},
        {"repository": {"full_name": "o/r%"}},
        {"repository": {"full_name": "o/r"}},
        {"repository": {"full_name": "o/r"}, "workflow_run": {"path": "", "workflow_id": "x"}},
    ],
)
def test_github_run_payload_errors(db, payload):
    with pytest.raises(W.BadRequestError):
        matched(W.match_github_run, payload)


# -- Jenkins and GitLab matching ------------------------------------------------------------


def jenkins_payload(path: str, root: str = JENKINS) -> dict:
    return {
        "name": path.rsplit("/", 1)[-1],
        "url": f"{path}/",
        "build": {
            "full_url": f"{root}/{path}/3/",
            "number": 3,
            "phase": "COMPLETED",
            "status": "SUCCESS",
            "url": f"{path}/3/",
        },
    }


def test_jenkins_matches_job_paths_on_the_host(db):
    good = add(
        "jenkins",
        JENKINS,
        [
            "job/folder/job/pipeline",
            "folder/pipeline",
            "/job/folder/job/pipeline/",
            f"{JENKINS}/job/folder/job/pipeline/",
            "job/folder/view/all/job/pipeline",
        ],
    )
    bad = add(
        "jenkins",
        JENKINS,
        ["job/pipeline", "job/folder/job/pipeline2", "job/other/job/pipeline", "job/folder"],
    )
    elsewhere = add("jenkins", "https://other.example.org", ["job/folder/job/pipeline"])
    host = W.host_key(JENKINS)
    payload = jenkins_payload("job/folder/job/pipeline")
    got = matched(W.match_jenkins, payload, host)
    assert got == set(good)
    assert not got & set(bad + elsewhere)
    assert matched(W.match_jenkins, payload, None) >= set(elsewhere)
    # Encoded branch names of multibranch projects.
    [branch] = add("jenkins", JENKINS, ["job/mb/job/feature%252Fx"])
    assert matched(W.match_jenkins, jenkins_payload("job/mb/job/feature%252Fx"), host) == {branch}
    # Only the build's url: the job is its parent.
    payload = jenkins_payload("job/mb/job/feature%252Fx")
    del payload["url"]
    assert matched(W.match_jenkins, payload, host) == {branch}
    with pytest.raises(W.BadRequestError):
        matched(W.match_jenkins, {"build": {}}, host)


def gitlab_payload(path="group/sub/project", project_id=42, ref="main") -> dict:
    return {
        "object_kind": "pipeline",
        "object_attributes": {"id": 1, "ref": ref, "status": "success"},
        "project": {"id": project_id, "path_with_namespace": path, "web_url": f"{GITLAB}/{path}"},
    }


def test_gitlab_matches_project_path_or_id(db):
    good = add(
        "gitlab",
        GITLAB,
        [
            "group/sub/project",
            "projects/42",
            "projects/group%2Fsub%2Fproject",
            "group/sub/project/-/pipelines",
            f"{GITLAB}/group/sub/project",
            "Group/Sub/Project/",
        ],
    )
    bad = add(
        "gitlab",
        GITLAB,
        ["group/sub/project2", "projects/421", "group/sub", "other/group/sub/project"],
    )
    [main_only] = add("gitlab", GITLAB, ["group/sub/project"], parameters={"ref": "main"})
    [dev_only] = add("gitlab", GITLAB, ["group/sub/project"], parameters={"branch": "dev"})
    elsewhere = add("gitlab", "https://gitlab.com", ["group/sub/project"])
    host = W.host_key(GITLAB)
    assert matched(W.match_gitlab, gitlab_payload(), host) == {*good, main_only}
    assert matched(W.match_gitlab, gitlab_payload(ref="dev"), host) == {*good, dev_only}
    assert not matched(W.match_gitlab, gitlab_payload(), host) & set(bad + elsewhere)
    assert matched(W.match_gitlab, gitlab_payload(), None) >= set(elsewhere)
    with pytest.raises(W.BadRequestError):
        matched(W.match_gitlab, {"project": {}}, host)
    with pytest.raises(W.BadRequestError):
        matched(W.match_gitlab, {"project": {"path_with_namespace": "a/%/b"}}, host)


# -- authentication: refused deliveries never reach the database -----------------------------


@pytest.fixture
def no_matching(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("matching must not run for a refused delivery")

    monkeypatch.setattr(W, "_match_and_refresh", fail)


def put(key: str, value: str) -> None:
    from chalicelib.secrets import get_secrets

    get_secrets().put(key, value)


def test_refusals_happen_before_any_matching(no_matching):
    body = json.dumps(gitlab_payload()).encode()
    with pytest.raises(W.WebhookNotConfiguredError, match="webhook secret not configured"):
        W.handle_github({"X-Hub-Signature-256": W.github_signature("x", body)}, body)
    with pytest.raises(W.WebhookNotConfiguredError):
        W.handle_gitlab({"X-Gitlab-Token": "x"}, body)
    with pytest.raises(W.WebhookNotConfiguredError):
        W.handle_jenkins({}, {"token": "x"}, json.dumps(jenkins_payload("job/a")).encode())
    put("webhooks/github/secret", "s3cret")
    put("webhooks/gitlab/secret", "global")
    put(f"webhooks/gitlab/{W.host_key(GITLAB)}/secret", "per-host")
    put("webhooks/jenkins/token", "tok")
    with pytest.raises(W.WebhookAuthError):
        W.handle_github({"X-GitHub-Event": "ping"}, body)
    with pytest.raises(W.WebhookAuthError):
        W.handle_gitlab({"X-Gitlab-Token": "global", "X-Gitlab-Event": "Pipeline Hook"}, body)
    with pytest.raises(W.WebhookAuthError):  # the header names the host whose key counts
        W.handle_gitlab({"X-Gitlab-Token": "global", "X-Gitlab-Instance": GITLAB}, b"{}")
    with pytest.raises(W.WebhookAuthError):
        W.handle_jenkins(
            {"X-Webhook-Token": "tok "}, {}, json.dumps(jenkins_payload("job/a")).encode()
        )
    with pytest.raises(W.PayloadTooLargeError):
        W.handle_github({}, b" " * (W.MAX_BODY_BYTES + 1))


def test_unreadable_parameter_store_is_503(monkeypatch, no_matching):
    from chalicelib import secrets

    class Broken:
        def get(self, key):
            raise secrets.SecretError("SSM is down")

    monkeypatch.setattr(secrets, "get_secrets", lambda settings=None: Broken())
    with pytest.raises(W.WebhookNotConfiguredError, match="cannot be read"):
        W.handle_github({}, b"{}")


def test_accepted_gitlab_global_secret_when_the_host_has_none(db):
    put("webhooks/gitlab/secret", "global")
    outcome = W.handle_gitlab(
        {"X-Gitlab-Token": "global", "X-Gitlab-Event": "Pipeline Hook"},
        json.dumps(gitlab_payload()).encode(),
    )
    assert (outcome.event, outcome.matches, outcome.handled) == ("Pipeline Hook", [], True)


# -- refreshing the matches ---------------------------------------------------------------


@dataclass
class FakeGithub:
    calls: list[str] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)
    delay: float = 0.0

    def fetch_builds(self, service_url, instance, limit):
        import time

        self.calls.append(instance.resource)
        time.sleep(self.delay)
        if instance.resource in self.fail:
            raise CIError("boom")
        return FetchResult(
            builds=[
                BuildData(
                    f"{len(self.calls)}_1", "passed", datetime.now(UTC) - timedelta(minutes=5)
                )
            ]
        )


@pytest.fixture
def fake_github(monkeypatch):
    from chalicelib import testing

    testing.get_adapter("github")  # the built-in registers itself once; patch over it
    fake = FakeGithub()
    monkeypatch.setitem(testing._ADAPTERS, "github", lambda: fake)
    return fake


def matches_for(uuids: list[str]) -> list[W.Match]:
    from chalicelib.db import session_scope
    from chalicelib.models import TestInstance

    with session_scope() as s:
        rows = s.query(TestInstance).filter(TestInstance.uuid.in_(uuids)).all()
        by_uuid = {i.uuid: W.Match(i.id, i.uuid, i.testing_service.url) for i in rows}
        return [by_uuid[u] for u in uuids]


def next_checks(uuids: list[str]) -> dict[str, datetime | None]:
    from chalicelib.db import session_scope
    from chalicelib.models import TestInstance

    with session_scope() as s:
        return {
            i.uuid: i.next_check_at
            for i in s.query(TestInstance).filter(TestInstance.uuid.in_(uuids))
        }


def test_inline_refresh_reports_refreshed_and_failed(db, fake_github):
    ok, broken = add(
        "github", GH, ["repos/o/r/actions/workflows/a.yml", "repos/o/r/actions/workflows/b.yml"]
    )
    fake_github.fail.add("repos/o/r/actions/workflows/b.yml")
    report = W.refresh_matches(matches_for([ok, broken]))
    assert report == {"refreshed": [ok], "queued": [], "deferred": [], "failed": [broken]}


def test_blocked_services_and_the_time_budget_defer_to_the_scheduler(db, fake_github, monkeypatch):
    monkeypatch.setenv("LM_REFRESH_CONCURRENCY", "1")  # one fetch after the other
    later = datetime.now(UTC) + timedelta(hours=1)
    uuids = add(
        "github",
        GH,
        [f"repos/o/r/actions/workflows/w{n}.yml" for n in range(4)],
        next_check_at=later,
    )
    matches = matches_for(uuids)
    matches[0] = W.Match(matches[0].id, matches[0].uuid, GH, blocked=True)
    fake_github.delay = 0.6
    report = W.refresh_matches(matches, budget=0.3)
    assert report["refreshed"] == [uuids[1]]  # the first one runs, then the budget is spent
    assert report["deferred"] == [uuids[0], uuids[2], uuids[3]]
    due = next_checks(uuids)
    assert all(due[u] < later for u in report["deferred"])  # brought forward, not skipped
    assert len(fake_github.calls) == 1


def test_many_matches_are_queued_in_the_refresh_message_format(db, fake_github, monkeypatch):
    from moto import mock_aws

    uuids = add("github", GH, [f"repos/o/r/actions/workflows/w{n}.yml" for n in range(12)])
    with mock_aws():
        import boto3

        sqs = boto3.client("sqs", region_name="eu-west-1")
        url = sqs.create_queue(QueueName="lifemonitor-refresh")["QueueUrl"]
        monkeypatch.setenv("LM_REFRESH_QUEUE_URL", url)
        few = W.refresh_matches(matches_for(uuids[:2]))
        assert few["refreshed"] == uuids[:2] and few["queued"] == []
        many = matches_for(uuids)
        report = W.refresh_matches(many)
        assert report["queued"] == uuids and report["refreshed"] == []
        bodies = [
            json.loads(m["Body"])
            for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        ]
    assert bodies == [{"v": 1, "host": "api.github.com", "instances": [m.id for m in many]}]
    assert len(fake_github.calls) == 2  # only the two inline ones


def test_queue_failure_falls_back_to_the_scheduler(db, fake_github, monkeypatch):
    from chalicelib import queues

    uuids = add(
        "github",
        GH,
        [f"repos/o/r/actions/workflows/w{n}.yml" for n in range(3)],
        next_check_at=datetime.now(UTC) + timedelta(hours=1),
    )
    monkeypatch.setenv("LM_REFRESH_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/1/q")

    def broken(queue_url, messages):
        raise RuntimeError("SQS is down")

    monkeypatch.setattr(queues, "send_messages", broken)
    report = W.refresh_matches(matches_for(uuids), inline_limit=1)
    assert report["deferred"] == uuids and report["queued"] == []
    assert fake_github.calls == []


def test_deleted_instance_is_skipped(db, fake_github):
    [uuid] = add("github", GH, ["repos/o/r/actions/workflows/a.yml"])
    [match] = matches_for([uuid])
    gone = W.Match(match.id + 1000, "gone", GH)
    report = W.refresh_matches([gone, match])
    assert report == {"refreshed": [uuid], "queued": [], "deferred": [], "failed": []}
