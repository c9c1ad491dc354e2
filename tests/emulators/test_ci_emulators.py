"""The Jenkins and GitHub emulators themselves: recorded payloads replayed with rewritten
hosts, programmed sequences in the real shapes, Jenkins' `tree=`, GitHub's ETag/304 and
rate-limit rules, and generated look-alikes when the shared fixtures are absent."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
import requests

import emulators
from emulators.github import GithubEmulator, created_matches
from emulators.jenkins import JenkinsEmulator, apply_tree, normalise, parse_tree

RECORDED_JENKINS_HOSTS = ("0.0.0.0:8080", "localhost:32769", "jenkins.emulator")


def get(url: str, **kwargs) -> requests.Response:
    return requests.get(url, timeout=5, **kwargs)


@pytest.fixture
def no_fixtures(monkeypatch, tmp_path):
    monkeypatch.setattr(emulators, "SHARED_FIXTURES", tmp_path / "absent")


# -- Jenkins -----------------------------------------------------------------------------


def test_tree_parser():
    spec = parse_tree("a,b[c,d[e]]{0,2},f{1}")
    assert spec[0] == ("a", None, None)
    assert spec[1][0] == "b" and spec[1][2] == slice(0, 2)
    assert spec[2] == ("f", None, slice(1, 2))
    body = {
        "_class": "X",
        "a": 1,
        "b": [{"c": 1, "d": {"e": 2, "z": 3}, "y": 0}] * 3,
        "f": [10, 20, 30],
        "g": 5,
    }
    assert apply_tree(body, spec) == {
        "_class": "X",
        "a": 1,
        "b": [{"c": 1, "d": {"e": 2}}] * 2,
        "f": [20],
    }
    for bad in ("", "a[", "a]", "a[b", "a{x}"):
        with pytest.raises(ValueError):
            parse_tree(bad)


def test_normalise_job_paths():
    assert normalise("/job/a/view/v/job/b/") == "job/a/job/b"
    assert normalise("job/a") == "job/a"


def test_jenkins_replays_recorded_bodies(shared_fixtures):
    with JenkinsEmulator() as jenkins:
        r = get(f"{jenkins.url}/job/Level1_WorkflowJob/api/json")
        assert r.status_code == 200
        body = r.json()
        assert body["_class"] == "org.jenkinsci.plugins.workflow.job.WorkflowJob"
        assert [b["number"] for b in body["builds"]] == list(range(52, 44, -1))
        assert set(body["builds"][0]) == {"_class", "number", "url"}  # depth 0
        assert body["lastFailedBuild"]["number"] == 52
        assert body["lastSuccessfulBuild"]["number"] == 49
        assert body["url"] == f"{jenkins.url}/job/Level1_WorkflowJob/"
        recorded = (shared_fixtures / "jenkins/api4jenkins/run/workflowrun.json").read_text()
        run = get(f"{jenkins.url}/job/folder/job/pipeline/52/api/json").json()
        assert run == json.loads(recorded.replace("http://0.0.0.0:8080", jenkins.url))
        assert run["url"] == f"{jenkins.url}/job/folder/job/pipeline/52/"
        folder = get(f"{jenkins.url}/job/folder/api/json").json()
        assert folder["_class"] == "com.cloudbees.hudson.plugins.folder.Folder"
        assert [j["name"] for j in folder["jobs"]] == ["pipeline"]
        log = get(f"{jenkins.url}/job/fish/6/consoleText")
        assert log.headers["content-type"].startswith("text/plain")
        assert (
            log.text == (shared_fixtures / "jenkins/jenkins-rest/build-consoleText.txt").read_text()
        )
        for path in (
            "/api/json",
            "/job/fish/api/json",
            "/job/fish/lastBuild/api/json",
            "/job/Level1_multibranchjob/api/json",
        ):
            text = get(jenkins.url + path).text
            assert not any(host in text for host in RECORDED_JENKINS_HOSTS), path


def test_jenkins_tree_query_and_build_refs():
    with JenkinsEmulator(replay=False) as jenkins:
        jenkins.set_builds(
            "job/a/job/b",
            [{"building": True}, {"result": "FAILURE", "sha": "c" * 40}, {"result": "SUCCESS"}],
        )
        tree = "builds[number,result,building,actions[lastBuiltRevision[SHA1]]]{0,2}"
        body = get(f"{jenkins.url}/job/a/job/b/api/json", params={"tree": tree}).json()
        assert [(b["number"], b["result"], b["building"]) for b in body["builds"]] == [
            (3, None, True),
            (2, "FAILURE", False),
        ]
        assert {
            "_class": "hudson.plugins.git.util.BuildData",
            "lastBuiltRevision": {"SHA1": "c" * 40},
        } in body["builds"][1]["actions"]
        assert "color" not in body
        last = get(f"{jenkins.url}/job/a/job/b/lastCompletedBuild/api/json").json()
        assert last["number"] == 2 and last["url"] == f"{jenkins.url}/job/a/job/b/2/"
        assert get(f"{jenkins.url}/job/a/job/b/9/api/json").status_code == 404
        bad = get(f"{jenkins.url}/job/a/job/b/api/json", params={"tree": "builds["})
        assert bad.status_code == 400
        parent = get(f"{jenkins.url}/job/a/api/json").json()  # created as a folder
        assert parent["jobs"][0]["url"] == f"{jenkins.url}/job/a/job/b/"
        assert len(jenkins.api_requests("job/a/job/b")) == 2


def test_jenkins_set_builds_shapes():
    with JenkinsEmulator(replay=False) as jenkins:
        when = datetime(2024, 1, 1, tzinfo=UTC)
        (body,) = jenkins.set_builds(
            "job/x", [{"number": 5, "result": "ABORTED", "timestamp": when, "duration": 1234}]
        )
        assert body["number"] == 5 and body["id"] == "5" and body["result"] == "ABORTED"
        assert body["timestamp"] == int(when.timestamp() * 1000) and body["duration"] == 1234
        assert body["url"].endswith("/job/x/5/") and body["building"] is False


def test_jenkins_auth():
    with JenkinsEmulator(replay=False) as jenkins:
        jenkins.set_builds("job/x", [{}])
        jenkins.require_auth("u", "t")
        url = f"{jenkins.url}/job/x/api/json"
        assert get(url).status_code == 403
        assert get(url, auth=("u", "bad")).status_code == 401
        assert get(url, auth=("u", "t")).status_code == 200
        good = "Basic " + base64.b64encode(b"u:t").decode()
        assert jenkins.requests[-1].headers["authorization"] == good


def test_jenkins_without_fixtures(no_fixtures):
    with JenkinsEmulator() as jenkins:
        body = get(f"{jenkins.url}/job/folder/job/pipeline/52/api/json").json()
        assert body["result"] == "FAILURE" and body["url"].startswith(jenkins.url)
        assert get(f"{jenkins.url}/job/freestylejob/14/api/json").json()["result"] == "SUCCESS"
        assert "Finished" in get(f"{jenkins.url}/job/fish/1/consoleText").text


def test_faults_and_latency_from_the_base_class():
    with JenkinsEmulator(replay=False, latency=0.05) as jenkins:
        jenkins.set_builds("job/x", [{}])
        jenkins.fault(r"/api/json$", status=503, times=1)
        url = f"{jenkins.url}/job/x/api/json"
        assert get(url).status_code == 503
        assert get(url).status_code == 200


# -- GitHub ------------------------------------------------------------------------------


def test_github_replays_recorded_bodies(shared_fixtures):
    payloads = shared_fixtures / "github/payloads"
    with GithubEmulator() as github:
        r = get(f"{github.url}/repos/PyGithub/PyGithub/actions/workflows/check.yml")
        recorded = json.loads((payloads / "workflow.by-filename.check.yml.json").read_text())
        assert r.json() == {
            **recorded,
            "url": recorded["url"].replace("https://api.github.com", github.url),
        }
        assert r.headers["X-GitHub-Media-Type"] == "github.v3; format=json"
        runs = get(f"{github.url}/repos/PyGithub/PyGithub/actions/workflows/1026390/runs").json()
        assert [run["id"] for run in runs["workflow_runs"]] == [
            109950033,
            109168419,
            108934155,
            108817672,
        ]
        assert "api.github.com" not in json.dumps(runs)
        assert runs["workflow_runs"][0]["html_url"].startswith("https://github.com/")
        base = f"{github.url}/repos/EnricoMi/PyGithub/actions/runs/26365060973"
        assert get(base).json()["run_attempt"] == 2
        second = get(f"{base}/attempts/2").json()
        assert second == json.loads(
            (payloads / "workflow-run.attempt.2.json")
            .read_text()
            .replace("https://api.github.com", github.url)
        )
        first = get(f"{base}/attempts/1").json()
        assert first["run_attempt"] == 1 and first["previous_attempt_url"] is None
        jobs = get(f"{github.url}/repos/PyGithub/PyGithub/actions/runs/3881497935/jobs").json()
        assert jobs["total_count"] == 5
        missing = get(f"{github.url}/repos/PyGithub/PyGithub/actions/workflows/nope.yml")
        assert missing.status_code == 404
        assert missing.json() == json.loads((payloads / "error.404.not-found.json").read_text())


def test_github_set_runs_shapes_and_filters():
    t0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
    with GithubEmulator(replay=False) as github:
        bodies = github.set_runs(
            "o/r",
            "ci.yml",
            [
                {"id": 3, "status": "in_progress", "created_at": t0, "branch": "dev"},
                {"id": 2, "attempt": 2, "created_at": t0 - timedelta(days=1)},
                {"id": 1, "conclusion": "failure", "created_at": t0 - timedelta(days=2)},
            ],
        )
        assert [(b["id"], b["run_attempt"], b["status"], b["conclusion"]) for b in bodies] == [
            (3, 1, "in_progress", None),
            (2, 2, "completed", "success"),
            (1, 1, "completed", "failure"),
        ]
        assert bodies[1]["previous_attempt_url"].endswith("/actions/runs/2/attempts/1")
        assert bodies[0]["repository"]["full_name"] == "o/r"
        url = f"{github.url}/repos/o/r/actions/workflows/ci.yml/runs"
        assert [r["id"] for r in get(url, params={"branch": "main"}).json()["workflow_runs"]] == [
            2,
            1,
        ]
        window = {"created": "2024-04-29..2024-04-30"}
        assert [r["id"] for r in get(url, params=window).json()["workflow_runs"]] == [2, 1]
        assert [
            r["id"] for r in get(url, params={"created": ">2024-04-30"}).json()["workflow_runs"]
        ] == [3]
        page = get(url, params={"per_page": 2})
        assert [r["id"] for r in page.json()["workflow_runs"]] == [3, 2]
        assert page.json()["total_count"] == 3 and 'rel="next"' in page.headers["Link"]
        attempt = get(f"{github.url}/repos/o/r/actions/runs/2/attempts/1").json()
        assert (attempt["run_attempt"], attempt["conclusion"]) == (1, "failure")
        wf_id = github.find_workflow("o/r", "ci.yml").id
        by_id = get(f"{github.url}/repos/o/r/actions/workflows/{wf_id}/runs").json()
        assert by_id["total_count"] == 3
        assert get(url, params={"created": "soon"}).status_code == 422


def test_created_qualifier():
    day = datetime(2024, 1, 1, 15, tzinfo=UTC)
    assert created_matches("2024-01-01", day)
    assert created_matches("<=2024-01-01", day) and not created_matches("<2024-01-01", day)
    assert created_matches("*..2024-01-01", day) and not created_matches(">2024-01-01", day)


def test_github_etag_and_304_cost():
    with GithubEmulator(replay=False) as github:
        github.set_runs("o/r", "ci.yml", [{"id": 1}])
        url = f"{github.url}/repos/o/r/actions/workflows/ci.yml/runs"
        first = get(url)
        etag = first.headers["ETag"]
        assert etag.startswith('W/"') and get(url).headers["ETag"] == etag  # stable
        assert github.rate_used == 2
        anonymous = get(url, headers={"If-None-Match": etag})
        assert anonymous.status_code == 304 and anonymous.content == b""
        assert github.rate_used == 3  # unauthorised 304s are billed
        authorised = get(url, headers={"If-None-Match": etag, "Authorization": "Bearer t"})
        assert authorised.status_code == 304 and github.rate_used == 3  # free
        assert authorised.headers["ETag"] == etag
        assert authorised.headers["X-RateLimit-Remaining"] == str(5000 - 3)
        assert github.not_modified == 2
        github.set_runs("o/r", "ci.yml", [{"id": 2}, {"id": 1}])
        changed = get(url, headers={"If-None-Match": etag, "Authorization": "Bearer t"})
        assert changed.status_code == 200 and changed.headers["ETag"] != etag


def test_github_rate_limit_headers_and_exhaustion(shared_fixtures):
    with GithubEmulator(replay=False) as github:
        github.set_runs("o/r", "ci.yml", [{"id": 1}])
        github.set_rate_limit(limit=60, remaining=2, reset_in=100)
        url = f"{github.url}/repos/o/r/actions/workflows/ci.yml/runs"
        r = get(url)
        assert r.headers["X-RateLimit-Limit"] == "60"
        assert r.headers["X-RateLimit-Remaining"] == "1"
        assert r.headers["X-RateLimit-Used"] == "59"
        assert r.headers["X-RateLimit-Resource"] == "core"
        assert get(url).headers["X-RateLimit-Remaining"] == "0"
        limited = get(url)
        assert limited.status_code == 403
        assert limited.headers["X-RateLimit-Remaining"] == "0"
        recorded = json.loads(
            (shared_fixtures / "github/payloads/error.403.rate-limit-exceeded.json").read_text()
        )
        assert limited.json() == recorded
        quota = get(f"{github.url}/rate_limit").json()  # free, as on GitHub
        assert quota["resources"]["core"]["remaining"] == 0 and quota["rate"]["limit"] == 60
        assert github.rate_used == 60


def test_github_rate_limited_switch_and_secondary_limit():
    with GithubEmulator(replay=False) as github:
        github.set_runs("o/r", "ci.yml", [{"id": 1}])
        url = f"{github.url}/repos/o/r/actions/workflows/ci.yml/runs"
        github.rate_limited(True)
        assert get(url).status_code == 403 and github.rate_used == 0
        github.rate_limited(False)
        github.secondary_rate_limit(retry_after=7, times=1)
        secondary = get(url)
        assert secondary.status_code == 403 and secondary.headers["Retry-After"] == "7"
        assert "secondary rate limit" in secondary.json()["message"]
        assert get(url).status_code == 200


def test_github_token_and_request_counters():
    with GithubEmulator(replay=False) as github:
        github.set_runs("o/r", "ci.yml", [{"id": 5, "attempt": 2}])
        github.require_token("s3cret")
        url = f"{github.url}/repos/o/r/actions/workflows/ci.yml/runs"
        assert get(url).status_code == 401
        assert get(url, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        get(
            f"{github.url}/repos/o/r/actions/runs/5/attempts/1",
            headers={"Authorization": "token s3cret"},
        )
        assert len(github.runs_requests()) == 2 and len(github.attempt_requests()) == 1
        github.reset_requests()
        assert github.requests == []


def test_github_enterprise_prefix():
    with GithubEmulator(replay=False) as github:
        github.set_runs("o/r", "ci.yml", [{"id": 1}])
        r = get(f"{github.url}/api/v3/repos/o/r/actions/workflows/ci.yml/runs")
        assert r.status_code == 200 and r.json()["total_count"] == 1


def test_github_without_fixtures(no_fixtures):
    with GithubEmulator() as github:
        runs = get(f"{github.url}/repos/PyGithub/PyGithub/actions/workflows/check.yml/runs")
        assert runs.json()["total_count"] == 4
        run = runs.json()["workflow_runs"][0]
        for key in (
            "id",
            "status",
            "conclusion",
            "run_attempt",
            "run_started_at",
            "created_at",
            "updated_at",
            "head_sha",
            "html_url",
            "url",
        ):
            assert key in run
        base = f"{github.url}/repos/EnricoMi/PyGithub/actions/runs/26365060973"
        assert get(f"{base}/attempts/1").json()["conclusion"] == "failure"
        github.rate_limited(True)
        assert get(f"{base}/attempts/1").json()["message"].startswith("API Rate Limit")
