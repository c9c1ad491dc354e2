"""Inbound webhooks end to end: a signed delivery refreshes the matching instances at once, so
the new status is visible through the API without a poll (the CI emulators serve the
builds); bad signatures or tokens get 401 and change nothing (no rows, no CI requests)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from emulators.github import API, GithubEmulator
from emulators.gitlab import GitlabEmulator
from emulators.jenkins import JenkinsEmulator
from tests.api.helpers import assert_problem
from tests.support import api_data
from tests.support.api_data import b64, crate

SECRET = "It's a Secret to Everybody"
JENKINS_TOKEN = "jenkins-shared-token"
GITLAB_TOKEN = "gitlab-shared-token"
REPO = "lm-org/wf-repo"
WORKFLOW = "ci.yml"


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def github_ci():
    with GithubEmulator(replay=False) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def jenkins_ci():
    with JenkinsEmulator(replay=False) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def gitlab_ci():
    with GitlabEmulator() as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def _private_urls(monkeypatch):
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")  # the emulators listen on loopback


@pytest.fixture
def gh(github_ci):
    github_ci.workflows.clear()
    github_ci.repos.clear()
    github_ci.clear_faults()
    github_ci.reset_requests()
    return github_ci


@pytest.fixture
def jenkins(jenkins_ci):
    jenkins_ci.jobs.clear()
    jenkins_ci.clear_faults()
    jenkins_ci.reset_requests()
    return jenkins_ci


@pytest.fixture
def gitlab(gitlab_ci):
    gitlab_ci.reset()
    return gitlab_ci


@pytest.fixture
def alice(client):
    return api_data.make_user("alice")


def put_secret(key: str, value: str) -> None:
    from chalicelib.secrets import get_secrets

    get_secrets().put(key, value)


def register(client, actor, instances) -> tuple[str, list[str]]:
    """A public workflow whose one suite holds these (service, url, resource) instances."""
    r = api_data.submit(
        client,
        actor,
        {"rocrate": b64(crate("hooked", instances=instances)), "version": "1", "public": True},
    )
    assert r.status_code == 201, r.body
    wf_uuid = r.json_body["uuid"]
    return wf_uuid, api_data.instance_uuids(wf_uuid)


def status(client, actor, wf_uuid: str) -> dict:
    r = client.http.get(f"/workflows/{wf_uuid}/status", headers=actor.headers)
    assert r.status_code == 200, r.body
    return r.json_body


def build_count() -> int:
    from chalicelib.db import session_scope
    from chalicelib.models import Build

    with session_scope() as s:
        return s.query(Build).count()


def instance_rows() -> list[tuple]:
    from chalicelib.db import session_scope
    from chalicelib.models import TestInstance

    with session_scope() as s:
        return [
            (i.id, i.next_check_at, i.last_checked_at, i.etag, i.latest_build_id, i.modified)
            for i in s.query(TestInstance).order_by(TestInstance.id)
        ]


# -- GitHub -------------------------------------------------------------------------------


def run_event(gh: GithubEmulator, run: dict, action: str = "completed") -> dict:
    """A `workflow_run` delivery as GitHub sends it, with the emulator as the API host."""
    wf = gh.find_workflow(REPO, WORKFLOW)
    payload = {
        "action": action,
        "workflow_run": run,
        "workflow": wf.body,
        "repository": run["repository"],
        "sender": {"login": "octocat", "id": 1},
    }
    return json.loads(json.dumps(payload).replace(API, gh.url))


def job_event(gh: GithubEmulator, run: dict, status: str = "completed") -> dict:
    payload = {
        "action": status,
        "repository": run["repository"],
        "workflow_job": {
            "id": 77,
            "run_id": run["id"],
            "run_attempt": run["run_attempt"],
            "workflow_name": run["name"],
            "head_branch": run["head_branch"],
            "status": status,
            "conclusion": "success",
            "name": "test",
        },
    }
    return json.loads(json.dumps(payload).replace(API, gh.url))


def signed(
    payload: dict | bytes,
    event: str,
    secret: str = SECRET,
    delivery: str | None = None,
    content_type: str = "application/json",
) -> tuple[dict, bytes]:
    """Headers and body of a signed delivery; each gets a new id unless one is given (a
    repeated id is a replay, ignored)."""
    import uuid

    from chalicelib.services.webhooks import github_signature

    delivery = delivery or str(uuid.uuid4())

    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return {
        "Content-Type": content_type,
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": github_signature(secret, body),
    }, body


def deliver(client, payload, event: str = "workflow_run", **kwargs):
    headers, body = signed(payload, event, **kwargs)
    return client.http.post("/webhooks/github", headers=headers, body=body)


def test_workflow_run_makes_the_new_status_visible_at_once(client, gh, alice):
    put_secret("webhooks/github/secret", SECRET)
    [failing] = gh.set_runs(REPO, WORKFLOW, [{"conclusion": "failure"}])
    wf_uuid, [inst] = register(
        client, alice, [("github", gh.url, f"repos/{REPO}/actions/workflows/{WORKFLOW}")]
    )
    assert status(client, alice, wf_uuid)["aggregate_test_status"] == "not_available"
    assert gh.requests == []  # nothing polled: registration only makes it due

    r = deliver(client, run_event(gh, failing), delivery="d-1")
    assert r.status_code == 202, r.body
    body = r.json_body
    assert body["matched"] == 1 and body["refreshed"] == [inst]
    assert (body["event"], body["action"], body["delivery"]) == ("workflow_run", "completed", "d-1")
    now = status(client, alice, wf_uuid)
    assert now["aggregate_test_status"] == "all_failing"
    assert [b["build_id"] for b in now["latest_builds"]] == [f"{failing['id']}_1"]

    # A new run passes: the next delivery shows it.
    passing, _ = gh.set_runs(
        REPO, WORKFLOW, [{"conclusion": "success"}, {"id": failing["id"], "conclusion": "failure"}]
    )
    r = deliver(client, run_event(gh, passing), delivery="d-2")
    assert r.status_code == 202 and r.json_body["refreshed"] == [inst], r.body
    now = status(client, alice, wf_uuid)
    assert now["aggregate_test_status"] == "all_passing"
    assert [b["build_id"] for b in now["latest_builds"]] == [f"{passing['id']}_1"]
    assert build_count() == 2

    # A replay of the same delivery is ignored (issue 9, defect 8): nothing fetched, same
    # builds, same status.
    fetched = len(gh.requests)
    r = deliver(client, run_event(gh, passing), delivery="d-2")
    assert r.status_code == 202, r.body
    assert r.json_body["duplicate"] is True and r.json_body["ignored"] is True
    assert r.json_body["matched"] == 0 and r.json_body["refreshed"] == []
    assert len(gh.requests) == fetched
    assert build_count() == 2
    again = status(client, alice, wf_uuid)
    assert again["aggregate_test_status"] == "all_passing"
    assert [(b["build_id"], b["status"], b["timestamp"]) for b in again["latest_builds"]] == [
        (b["build_id"], b["status"], b["timestamp"]) for b in now["latest_builds"]
    ]


def test_form_encoded_delivery_and_workflow_id_resource(client, gh, alice):
    put_secret("webhooks/github/secret", SECRET)
    [run] = gh.set_runs(REPO, WORKFLOW, [{"status": "in_progress"}])
    wf_id = gh.find_workflow(REPO, WORKFLOW).id
    wf_uuid, [inst] = register(
        client, alice, [("github", gh.url, f"{gh.url}/repos/{REPO}/actions/workflows/{wf_id}")]
    )
    body = urlencode({"payload": json.dumps(run_event(gh, run, "in_progress"))}).encode()
    r = deliver(client, body, content_type="application/x-www-form-urlencoded")
    assert r.status_code == 202, r.body
    assert r.json_body["refreshed"] == [inst]
    [latest] = status(client, alice, wf_uuid)["latest_builds"]
    assert latest["status"] == "running"


@pytest.mark.parametrize(
    "signature",
    [
        None,  # missing
        "sha256=" + "0" * 64,  # wrong
        "sha1=0123456789abcdef0123456789abcdef01234567",  # not sha256
        "sha256=",
        "garbage",
    ],
)
def test_bad_signature_is_401_and_changes_nothing(client, gh, alice, signature):
    put_secret("webhooks/github/secret", SECRET)
    [run] = gh.set_runs(REPO, WORKFLOW, [{"conclusion": "failure"}])
    register(client, alice, [("github", gh.url, f"repos/{REPO}/actions/workflows/{WORKFLOW}")])
    before, rows = api_data.row_counts(), instance_rows()
    headers, body = signed(run_event(gh, run), "workflow_run")
    if signature is None:
        del headers["X-Hub-Signature-256"]
    else:
        headers["X-Hub-Signature-256"] = signature
    problem = assert_problem(client.http.post("/webhooks/github", headers=headers, body=body), 401)
    assert "signature" in problem["detail"]
    assert api_data.row_counts() == before and instance_rows() == rows
    assert build_count() == 0
    assert gh.requests == []


def test_signature_from_another_secret_or_of_another_body_is_refused(client, gh, alice):
    put_secret("webhooks/github/secret", SECRET)
    [run] = gh.set_runs(REPO, WORKFLOW, [{}])
    register(client, alice, [("github", gh.url, f"repos/{REPO}/actions/workflows/{WORKFLOW}")])
    assert_problem(deliver(client, run_event(gh, run), secret="guessed"), 401)
    headers, body = signed(run_event(gh, run), "workflow_run")
    tampered = body.replace(b'"completed"', b'"requested"', 1)
    assert tampered != body
    assert_problem(client.http.post("/webhooks/github", headers=headers, body=tampered), 401)
    assert gh.requests == [] and build_count() == 0


def test_missing_secret_is_503_never_an_unsigned_accept(client, gh, alice):
    [run] = gh.set_runs(REPO, WORKFLOW, [{}])
    register(client, alice, [("github", gh.url, f"repos/{REPO}/actions/workflows/{WORKFLOW}")])
    before = api_data.row_counts()
    problem = assert_problem(deliver(client, run_event(gh, run)), 503)
    assert "webhook secret not configured" in problem["detail"]
    assert "webhooks/github/secret" in problem["detail"]
    assert api_data.row_counts() == before and gh.requests == []


def test_ping_and_ignored_events(client, gh):
    put_secret("webhooks/github/secret", SECRET)
    r = deliver(
        client,
        {"zen": "Keep it logically awesome.", "hook_id": 42, "hook": {"events": ["workflow_run"]}},
        event="ping",
    )
    assert r.status_code == 200, r.body
    assert r.json_body["zen"] == "Keep it logically awesome."
    assert r.json_body["matched"] == 0
    r = deliver(client, {"ref": "refs/heads/main", "repository": {"full_name": REPO}}, event="push")
    assert r.status_code == 202 and r.json_body["ignored"] is True, r.body
    assert r.json_body["matched"] == 0 and r.json_body["refreshed"] == []


def test_unrelated_repository_or_host_matches_nothing(client, gh, alice):
    put_secret("webhooks/github/secret", SECRET)
    [run] = gh.set_runs(REPO, WORKFLOW, [{}])
    register(client, alice, [("github", gh.url, f"repos/{REPO}/actions/workflows/{WORKFLOW}")])
    other = run_event(gh, run)
    other["repository"]["full_name"] = "someone/else"
    r = deliver(client, other)
    assert r.status_code == 202 and r.json_body["matched"] == 0, r.body
    # The same repository on github.com is not the one on the emulated (enterprise) host.
    public = run_event(gh, run)
    public["repository"]["url"] = f"{API}/repos/{REPO}"
    r = deliver(client, public)
    assert r.status_code == 202 and r.json_body["matched"] == 0, r.body
    # Another workflow of the same repository neither.
    other_wf = run_event(gh, run)
    other_wf["workflow_run"].update(path=".github/workflows/lint.yml", workflow_id=1)
    other_wf["workflow"].update(path=".github/workflows/lint.yml", id=1)
    r = deliver(client, other_wf)
    assert r.status_code == 202 and r.json_body["matched"] == 0, r.body
    assert gh.requests == [] and build_count() == 0


def test_workflow_job_refreshes_the_instances_that_know_its_run(client, gh, alice):
    put_secret("webhooks/github/secret", SECRET)
    [run] = gh.set_runs(REPO, WORKFLOW, [{"status": "in_progress"}])
    gh.set_runs(REPO, "other.yml", [{}])
    wf_uuid, [ci, _other] = register(
        client,
        alice,
        [
            ("github", gh.url, f"repos/{REPO}/actions/workflows/{WORKFLOW}"),
            ("github", gh.url, f"repos/{REPO}/actions/workflows/other.yml"),
        ],
    )
    # The job of a run no instance has seen yet matches nothing ...
    r = deliver(client, job_event(gh, run, "in_progress"), event="workflow_job")
    assert r.status_code == 202 and r.json_body["matched"] == 0, r.body
    # ... once the run is known (workflow_run "requested"), its jobs refresh that instance.
    r = deliver(client, run_event(gh, run, "requested"))
    assert r.json_body["refreshed"] == [ci], r.body
    [done] = gh.set_runs(REPO, WORKFLOW, [{"id": run["id"], "conclusion": "success"}])
    r = deliver(client, job_event(gh, done), event="workflow_job")
    assert r.status_code == 202, r.body
    assert r.json_body["matched"] == 1 and r.json_body["refreshed"] == [ci]
    [latest] = status(client, alice, wf_uuid)["latest_builds"]
    assert (latest["instance"]["uuid"], latest["status"]) == (ci, "passed")


def test_malformed_requests(client, gh):
    put_secret("webhooks/github/secret", SECRET)
    assert_problem(deliver(client, b"{not json"), 400)
    assert_problem(deliver(client, b"[1, 2]"), 400)
    assert_problem(deliver(client, {"workflow_run": {}, "repository": {}}), 400)
    headers, body = signed({"zen": "x"}, "ping")
    del headers["X-GitHub-Event"]
    assert_problem(client.http.post("/webhooks/github", headers=headers, body=body), 400)
    too_big = json.dumps({"zen": "x" * (3 * 1024 * 1024)}).encode()
    assert_problem(deliver(client, too_big, event="ping"), 413)
    r = client.http.post("/webhooks/github", headers={"Content-Type": "text/plain"}, body=b"x")
    assert_problem(r, 415)


# -- Jenkins ------------------------------------------------------------------------------


def jenkins_event(
    jenkins: JenkinsEmulator, path: str, build: dict, phase: str = "COMPLETED"
) -> dict:
    number = build["number"]
    return {
        "name": path.rsplit("/", 1)[-1],
        "url": f"{path}/",
        "build": {
            "full_url": f"{jenkins.url}/{path}/{number}/",
            "number": number,
            "queue_id": 3,
            "phase": phase,
            "status": build.get("result"),
            "url": f"{path}/{number}/",
            "scm": {},
            "parameters": {},
            "log": "",
        },
    }


def test_jenkins_notification_refreshes_at_once(client, jenkins, alice):
    put_secret("webhooks/jenkins/token", JENKINS_TOKEN)
    path = "job/folder/job/pipeline"
    [failed] = jenkins.set_builds(path, [{"result": "FAILURE"}])
    wf_uuid, [inst] = register(client, alice, [("jenkins", jenkins.url, "folder/pipeline")])
    payload = json.dumps(jenkins_event(jenkins, path, failed)).encode()
    json_type = {"Content-Type": "application/json;charset=UTF-8"}

    before = api_data.row_counts()
    for headers, query in [
        ({**json_type, "X-Webhook-Token": "wrong"}, ""),
        (json_type, "?token=wrong"),
        (json_type, ""),
    ]:
        r = client.http.post(f"/webhooks/jenkins{query}", headers=headers, body=payload)
        problem = assert_problem(r, 401)
        assert "wrong" not in json.dumps(problem)  # the query's token is not echoed
    assert api_data.row_counts() == before and jenkins.requests == []

    r = client.http.post(
        f"/webhooks/jenkins?token={JENKINS_TOKEN}", headers=json_type, body=payload
    )
    assert r.status_code == 202, r.body
    assert r.json_body["refreshed"] == [inst]
    assert (r.json_body["event"], r.json_body["action"]) == ("build", "COMPLETED")
    assert status(client, alice, wf_uuid)["aggregate_test_status"] == "all_failing"

    [passed, _] = jenkins.set_builds(path, [{"result": "SUCCESS"}, {"result": "FAILURE"}])
    r = client.http.post(
        "/webhooks/jenkins",
        body=json.dumps(jenkins_event(jenkins, path, passed)).encode(),
        headers={**json_type, "X-Webhook-Token": JENKINS_TOKEN},
    )
    assert r.status_code == 202 and r.json_body["refreshed"] == [inst], r.body
    assert status(client, alice, wf_uuid)["aggregate_test_status"] == "all_passing"


def test_jenkins_host_token_takes_precedence_and_binds_the_host(client, jenkins, alice):
    from chalicelib.services.webhooks import host_key

    put_secret("webhooks/jenkins/token", JENKINS_TOKEN)
    put_secret(f"webhooks/jenkins/{host_key(jenkins.url)}/token", "host-token")
    [build] = jenkins.set_builds("job/tests", [{"result": "SUCCESS"}])
    _, [inst] = register(client, alice, [("jenkins", jenkins.url, "job/tests/")])
    payload = json.dumps(jenkins_event(jenkins, "job/tests", build)).encode()
    json_type = {"Content-Type": "application/json"}
    # The global token is not accepted for a host with a token of its own.
    assert_problem(
        client.http.post(
            f"/webhooks/jenkins?token={JENKINS_TOKEN}", headers=json_type, body=payload
        ),
        401,
    )
    assert jenkins.requests == []
    r = client.http.post("/webhooks/jenkins?token=host-token", headers=json_type, body=payload)
    assert r.status_code == 202 and r.json_body["refreshed"] == [inst], r.body
    # A delivery from another host, with the global token, does not reach this host's jobs.
    other = jenkins_event(jenkins, "job/tests", build)
    other["build"]["full_url"] = "https://elsewhere.example/job/tests/1/"
    r = client.http.post(
        f"/webhooks/jenkins?token={JENKINS_TOKEN}",
        headers=json_type,
        body=json.dumps(other).encode(),
    )
    assert r.status_code == 202 and r.json_body["matched"] == 0, r.body


def test_jenkins_without_token_configured_is_503(client, jenkins):
    r = client.http.post(
        "/webhooks/jenkins?token=x",
        headers={"Content-Type": "application/json"},
        body=json.dumps(
            {
                "name": "t",
                "url": "job/t/",
                "build": {"full_url": "https://ci.example/job/t/1/", "number": 1},
            }
        ).encode(),
    )
    problem = assert_problem(r, 503)
    # Said before the body is read (issue 9): the host is not known yet.
    assert "webhooks/jenkins/<host>/token or webhooks/jenkins/token" in problem["detail"]


# -- GitLab -------------------------------------------------------------------------------


def pipeline_event(gitlab: GitlabEmulator, project: str, project_id: int, pipeline: dict) -> dict:
    return {
        "object_kind": "pipeline",
        "object_attributes": {
            "id": pipeline["id"],
            "iid": pipeline["iid"],
            "ref": pipeline["ref"],
            "status": pipeline["status"],
            "sha": pipeline["sha"],
            "source": "push",
        },
        "project": {
            "id": project_id,
            "name": project.rsplit("/", 1)[-1],
            "path_with_namespace": project,
            "web_url": f"{gitlab.url}/{project}",
        },
        "builds": [],
    }


def test_gitlab_pipeline_hook_refreshes_at_once(client, gitlab, alice):
    put_secret("webhooks/gitlab/secret", GITLAB_TOKEN)
    project = "group/sub/project"
    gitlab.set_builds([gitlab.make_pipeline(7, "failed")], project=project, project_id=42)
    wf_uuid, [by_path, by_id] = register(
        client, alice, [("gitlab", gitlab.url, project), ("gitlab", gitlab.url, "projects/42")]
    )
    payload = json.dumps(
        pipeline_event(gitlab, project, 42, gitlab.make_pipeline(7, "failed"))
    ).encode()
    hook = {
        "Content-Type": "application/json",
        "X-Gitlab-Event": "Pipeline Hook",
        "X-Gitlab-Instance": gitlab.url,
        "X-Gitlab-Event-UUID": "uuid-1",
    }

    before = api_data.row_counts()
    assert_problem(client.http.post("/webhooks/gitlab", headers=hook, body=payload), 401)
    assert_problem(
        client.http.post(
            "/webhooks/gitlab", body=payload, headers={**hook, "X-Gitlab-Token": "nope"}
        ),
        401,
    )
    assert api_data.row_counts() == before and gitlab.requests == []

    hook["X-Gitlab-Token"] = GITLAB_TOKEN
    r = client.http.post("/webhooks/gitlab", headers=hook, body=payload)
    assert r.status_code == 202, r.body
    assert sorted(r.json_body["refreshed"]) == sorted([by_path, by_id])
    assert (r.json_body["event"], r.json_body["action"]) == ("Pipeline Hook", "failed")
    assert status(client, alice, wf_uuid)["aggregate_test_status"] == "all_failing"

    gitlab.set_builds(
        [gitlab.make_pipeline(8, "success"), gitlab.make_pipeline(7, "failed")],
        project=project,
        project_id=42,
    )
    r = client.http.post(
        "/webhooks/gitlab",
        headers=hook,
        body=json.dumps(
            pipeline_event(gitlab, project, 42, gitlab.make_pipeline(8, "success"))
        ).encode(),
    )
    assert r.status_code == 202 and r.json_body["matched"] == 2, r.body
    assert status(client, alice, wf_uuid)["aggregate_test_status"] == "all_passing"

    # Other events are acknowledged and ignored; unknown projects match nothing.
    r = client.http.post(
        "/webhooks/gitlab",
        headers={**hook, "X-Gitlab-Event": "Push Hook"},
        body=json.dumps({"object_kind": "push"}).encode(),
    )
    assert r.status_code == 202 and r.json_body["ignored"] is True, r.body
    r = client.http.post(
        "/webhooks/gitlab",
        headers=hook,
        body=json.dumps(
            pipeline_event(gitlab, "other/project", 99, gitlab.make_pipeline(1))
        ).encode(),
    )
    assert r.status_code == 202 and r.json_body["matched"] == 0, r.body


def test_gitlab_without_secret_is_503(client, gitlab):
    r = client.http.post(
        "/webhooks/gitlab",
        body=b"{}",
        headers={
            "Content-Type": "application/json",
            "X-Gitlab-Event": "Pipeline Hook",
            "X-Gitlab-Token": "anything",
        },
    )
    problem = assert_problem(r, 503)
    assert "webhook secret not configured" in problem["detail"]


def test_replayed_deliveries_are_ignored_for_a_day_in_the_database(client, gh, alice):
    """The memory is the database (any container sees it); ids older than a day go."""
    from datetime import timedelta

    from chalicelib.db import session_scope
    from chalicelib.models import ReceivedDelivery, utcnow

    put_secret("webhooks/github/secret", SECRET)
    [run] = gh.set_runs(REPO, WORKFLOW, [{"conclusion": "success"}])
    register(client, alice, [("github", gh.url, f"repos/{REPO}/actions/workflows/{WORKFLOW}")])
    headers, body = signed(run_event(gh, run), "workflow_run", delivery="replayed")
    first = client.http.post("/webhooks/github", headers=headers, body=body)
    assert first.status_code == 202 and first.json_body["matched"] == 1, first.body
    again = client.http.post("/webhooks/github", headers=headers, body=body)
    assert again.json_body.get("duplicate") is True and again.json_body["matched"] == 0
    with session_scope() as s:
        [row] = s.query(ReceivedDelivery).filter_by(delivery_id="replayed").all()
        row.received_at = utcnow() - timedelta(days=1, minutes=1)
    later = client.http.post("/webhooks/github", headers=headers, body=body)
    assert later.json_body["matched"] == 1 and "duplicate" not in later.json_body, later.body
    with session_scope() as s:
        assert s.query(ReceivedDelivery).filter_by(delivery_id="replayed").count() == 1
