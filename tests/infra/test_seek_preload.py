"""infra/seek_preload.py against the WorkflowHub emulator over real HTTP on loopback.

The script runs as the compose one-shot runs it, `python -m infra.seek_preload` in a
subprocess, and with `-S` (no site-packages): it must work in a plain Python. The compose
path itself (a real `fairdom/seek`) is not run here: there is no Docker engine."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from emulators.seek import DEFAULT_PASSWORD, WorkflowHubEmulator
from infra.seek_preload import DEMO_WORKFLOWS
from tests.infra.infra_support import ROOT

JENKINS_URL = "http://jenkins.preload.test:8080/"
TEST_NS = "https://w3id.org/ro/terms/test#"
# The jobs each demo workflow's instances must run, by title.
EXPECTED_JOBS = {
    "sort-and-change-case-jenkins-passing": ["job/test/"],
    "sort-and-change-case-jenkins-failing": ["job/failing/"],
    "sort-and-change-case-jenkins-mixed": ["job/test/", "job/failing/"],
}


# One server for the module (stopping one costs its poll interval); reset for each test.
@pytest.fixture(scope="module")
def _server() -> Iterator[WorkflowHubEmulator]:
    with WorkflowHubEmulator() as emulator:
        yield emulator


@pytest.fixture
def emu(_server) -> WorkflowHubEmulator:
    _server.reset()
    return _server


def preload(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """Run the script as compose does, without site-packages, and without the caller's
    SEEK_* variables."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SEEK_")}
    return subprocess.run(
        [sys.executable, "-S", "-m", "infra.seek_preload", *args],
        cwd=ROOT,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def login(url: str, user: str, password: str, *extra: str) -> list[str]:
    """Arguments naming a server, an account and project 2."""
    return ["--url", url, "--user", user, "--password", password, "--project", "2", *extra]


def as_user1(emu: WorkflowHubEmulator, *extra: str) -> list[str]:
    """Arguments for user1 (a member of project 2 in both the real and generated catalogue)."""
    return [
        "--url",
        emu.url,
        "--user",
        "user1",
        "--password",
        DEFAULT_PASSWORD,
        "--project",
        "2",
        "--jenkins-url",
        JENKINS_URL,
        *extra,
    ]


def outcomes(stdout: str) -> list[tuple[str, str, str]]:
    """(outcome, id, title) of each printed line: `created workflow 25 'title': URL`."""
    rows = []
    for line in stdout.strip().splitlines():
        outcome, word, identifier, rest = line.split(" ", 3)
        assert word == "workflow", line
        rows.append((outcome, identifier, rest.split("'")[1]))
    return rows


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def crate_graph(content: bytes) -> dict[str, dict]:
    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        assert zf.testzip() is None
        return {e["@id"]: e for e in json.loads(zf.read("ro-crate-metadata.json"))["@graph"]}


def suite_instances(graph: dict[str, dict]) -> list[dict]:
    """The TestInstance entities of every TestSuite, in order."""
    return [
        graph[ref["@id"]]
        for entity in graph.values()
        if entity.get("@type") == "TestSuite"
        for ref in entity["instance"]
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- creating, and again ---------------------------------------------------------------------


def test_creates_the_workflows_with_instances_on_the_given_jenkins(emu):
    before = set(emu.workflows)
    done = preload(*as_user1(emu))
    assert done.returncode == 0, done.stderr
    rows = outcomes(done.stdout)
    assert [(o, t) for o, _, t in rows] == [("created", w.title) for w in DEMO_WORKFLOWS]
    assert set(emu.workflows) - before == {i for _, i, _ in rows}
    assert not emu.uploads  # every content blob received its bytes

    for _, identifier, title in rows:
        assert f"{emu.url}/workflows/{identifier}" in done.stdout
        wf = emu.workflow(identifier)
        assert (wf.title, wf.contributor, wf.projects) == (title, "2", ["2"])
        # Public download, as the body asked: anonymous callers get the crate.
        r = requests.get(f"{emu.url}/workflows/{identifier}/ro_crate", timeout=5)
        assert r.status_code == 200
        graph = crate_graph(r.content)
        assert graph["./"]["name"] == title
        instances = suite_instances(graph)
        assert [i["url"] for i in instances] == [JENKINS_URL] * len(instances)
        assert [i["resource"] for i in instances] == EXPECTED_JOBS[title]
        assert {i["runsOn"]["@id"] for i in instances} == {TEST_NS + "JenkinsService"}
        # The workflow as SEEK shows it: the uploaded blob, a Galaxy workflow.
        data = requests.get(
            f"{emu.url}/workflows/{identifier}", headers={"Accept": "application/json"}, timeout=5
        ).json()["data"]
        blob = data["attributes"]["content_blobs"][0]
        assert blob["size"] == len(r.content)
        assert blob["original_filename"] == f"{title}.crate.zip"
        assert data["attributes"]["workflow_class"]["key"] == "galaxy"

    # The two steps, as SEEK documents them.
    posts = emu.requests_to(r"^/workflows$")
    posts = [r for r in posts if r.method == "POST"]
    assert len(posts) == 3
    for post in posts:
        assert post.headers["content-type"] == "application/vnd.api+json"
        assert post.headers["accept"] == "application/json"
        assert post.headers["authorization"].startswith("Basic ")
    puts = [r for r in emu.requests if r.method == "PUT"]
    assert [r.path for r in puts] == [f"/workflows/{i}/content_blobs/{i}1" for _, i, _ in rows]


def test_request_bodies_follow_seeks_example(emu, shared_fixtures):
    example = json.loads(
        (shared_fixtures / "seek" / "api_examples" / "workflowPost.json").read_text()
    )["data"]
    assert preload(*as_user1(emu)).returncode == 0
    posts = [r for r in emu.requests_to(r"^/workflows$") if r.method == "POST"]
    body = posts[0].json()["data"]
    # Only keys SEEK's example uses, each with the example's structure.
    assert set(body) <= set(example)
    assert set(body["attributes"]) <= set(example["attributes"])
    assert set(body["relationships"]) <= set(example["relationships"])
    attributes = body["attributes"]
    assert set(attributes["content_blobs"][0]) == set(example["attributes"]["content_blobs"][0])
    assert attributes["content_blobs"][0]["content_type"] == "application/zip"
    assert set(attributes["workflow_class"]) == set(example["attributes"]["workflow_class"])
    assert set(attributes["policy"]) == set(example["attributes"]["policy"])
    assert attributes["policy"]["access"] == "download"
    assert body["relationships"]["projects"] == {"data": [{"id": "2", "type": "projects"}]}


def test_a_second_run_creates_nothing(emu):
    first = preload(*as_user1(emu))
    assert first.returncode == 0, first.stderr
    catalogue = sorted(emu.workflows)
    writes = len([r for r in emu.requests if r.method in ("POST", "PUT")])

    second = preload(*as_user1(emu))
    assert second.returncode == 0, second.stderr
    assert [(o, i) for o, i, _ in outcomes(second.stdout)] == [
        ("kept", i) for _, i, _ in outcomes(first.stdout)
    ]
    assert sorted(emu.workflows) == catalogue
    assert len([r for r in emu.requests if r.method in ("POST", "PUT")]) == writes


def test_an_interrupted_upload_is_resumed(emu):
    # The first PUT fails: the workflow exists in SEEK, without content.
    emu.fault(r"/content_blobs/", status=500, body={"errors": [{"title": "boom"}]}, times=1)
    line = one_line_error(preload(*as_user1(emu)))
    assert "PUT /workflows/" in line and "500" in line
    [pending] = emu.uploads.values()

    done = preload(*as_user1(emu))
    assert done.returncode == 0, done.stderr
    rows = outcomes(done.stdout)
    assert rows[0] == ("resumed", pending.id, DEMO_WORKFLOWS[0].title)
    assert [o for o, _, _ in rows[1:]] == ["created", "created"]
    assert not emu.uploads
    assert suite_instances(crate_graph(emu.crate_bytes(pending.id)))[0]["url"] == JENKINS_URL


def test_an_api_token_from_the_environment(emu):
    emu.tokens["preload-token"] = "2"
    done = preload("--url", emu.url, env={"SEEK_TOKEN": "preload-token", "SEEK_PROJECT": "2"})
    assert done.returncode == 0, done.stderr
    assert len(outcomes(done.stdout)) == 3
    posts = [r for r in emu.requests_to(r"^/workflows$") if r.method == "POST"]
    assert {p.headers["authorization"] for p in posts} == {"Token preload-token"}
    # The default Jenkins is the compose service.
    [identifier] = [i for _, i, t in outcomes(done.stdout) if t.endswith("-passing")]
    instance = suite_instances(crate_graph(emu.crate_bytes(identifier)))[0]
    assert (instance["url"], instance["resource"]) == ("http://jenkins:8080/", "job/test/")


# -- failures --------------------------------------------------------------------------------


def test_a_wrong_password_is_one_line_and_creates_nothing(emu):
    before = sorted(emu.workflows)
    args = as_user1(emu)
    args[args.index(DEFAULT_PASSWORD)] = "not-the-password"
    done = preload(*args)
    line = one_line_error(done)
    assert "401" in line and "Unauthorized" in line and "SEEK_PASSWORD" in line
    assert done.stdout == ""
    assert sorted(emu.workflows) == before and not emu.uploads


def test_a_project_the_account_is_not_in_is_refused(emu):
    args = as_user1(emu)
    args[args.index("--project") + 1] = "1"  # Default Project: admin's only
    line = one_line_error(preload(*args))
    assert "POST /workflows answered 403 Forbidden" in line
    assert "member of project 1" in line
    assert not emu.uploads


def test_missing_credentials_are_a_usage_error(emu):
    done = preload("--url", emu.url, "--project", "2")
    assert done.returncode == 2
    assert "credentials are required" in done.stderr
    assert not emu.requests


def test_an_unreachable_server_fails_within_the_wait(emu):
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    done = preload(*login(url, "u", "p", "--wait", "2"))
    elapsed = time.monotonic() - started
    line = one_line_error(done)
    assert "no answer within --wait 2 s" in line and "cannot reach" in line
    assert 2 <= elapsed < 15, elapsed  # it waited, and not much longer


def test_it_waits_for_a_server_that_starts_late():
    port = free_port()
    late = WorkflowHubEmulator()
    timer = threading.Timer(1.5, lambda: late.start(port=port))
    timer.start()
    try:
        done = preload(
            *login(f"http://127.0.0.1:{port}", "user1", DEFAULT_PASSWORD, "--wait", "30")
        )
    finally:
        timer.join()
        late.stop()
    assert done.returncode == 0, done.stderr
    assert [o for o, _, _ in outcomes(done.stdout)] == ["created"] * 3
    assert len(late.requests_to(r"^/workflows\.json$")) >= 1  # the anonymous probe
    assert "authorization" not in late.requests_to(r"^/workflows\.json$")[0].headers


# -- redirects -------------------------------------------------------------------------------


@contextmanager
def tiny_server(respond: Callable[[BaseHTTPRequestHandler], None]) -> Iterator[tuple[str, list]]:
    """A stdlib HTTP server on loopback: (its port as a string, the requests' (method, path,
    headers) it received). `respond` answers each request."""
    seen: list[tuple[str, str, dict[str, str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _handle(self):
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
            respond(self)

        do_GET = do_POST = do_PUT = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield str(server.server_address[1]), seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def reply(handler: BaseHTTPRequestHandler, status: int, body: dict, **headers: str) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    for name, value in {"Content-Type": "application/json", **headers}.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def test_a_redirect_to_another_host_is_refused_while_waiting():
    with tiny_server(lambda h: reply(h, 200, {"data": []})) as (other_port, other_seen):
        # "localhost" and another port: another host and origin than 127.0.0.1:<port>.
        elsewhere = f"http://localhost:{other_port}"
        redirect = lambda h: reply(h, 302, {}, Location=elsewhere + h.path)  # noqa: E731
        with tiny_server(redirect) as (port, seen):
            done = preload(*login(f"http://127.0.0.1:{port}", "u", "secret", "--wait", "5"))
    line = one_line_error(done)
    assert "redirected (302)" in line and f"localhost:{other_port}" in line
    assert not any("authorization" in headers for _, _, headers in other_seen), other_seen
    assert seen  # the redirect was met (on the anonymous probe)


def test_a_redirect_after_login_does_not_take_the_credentials_along():
    # The probe is answered; the authenticated listing is redirected to another origin.
    with tiny_server(lambda h: reply(h, 200, {"data": []})) as (other_port, other_seen):
        elsewhere = f"http://localhost:{other_port}"

        def respond(h: BaseHTTPRequestHandler) -> None:
            if h.path == "/workflows.json":
                reply(h, 200, {"data": []})
            else:
                reply(h, 307, {}, Location=elsewhere + h.path)

        with tiny_server(respond) as (port, seen):
            done = preload(*login(f"http://127.0.0.1:{port}", "u", "secret", "--wait", "5"))
    line = one_line_error(done)
    assert "GET /workflows was redirected (307)" in line
    assert [(m, p) for m, p, _ in seen] == [("GET", "/workflows.json"), ("GET", "/workflows")]
    assert "authorization" in seen[1][2]  # sent to --url, where it belongs
    assert not other_seen  # and nothing, let alone the credentials, to the other host


def test_a_redirect_within_the_origin_is_followed_with_the_credentials():
    def respond(h: BaseHTTPRequestHandler) -> None:
        if (h.command, h.path) == ("GET", "/workflows"):
            reply(h, 302, {}, Location="/workflows?page=1")
        elif h.path == "/workflows?page=1":
            reply(h, 200, {"data": []})
        else:  # the POST: end here
            reply(h, 401, {"errors": [{"title": "Unauthorized", "detail": "stop here"}]})

    with tiny_server(respond) as (port, seen):
        done = preload(*login(f"http://127.0.0.1:{port}", "u", "p"))
    assert "POST /workflows answered 401 Unauthorized: stop here" in one_line_error(done)
    assert [(m, p) for m, p, _ in seen] == [
        ("GET", "/workflows"),
        ("GET", "/workflows?page=1"),
        ("POST", "/workflows"),
    ]
    assert all("authorization" in headers for _, _, headers in seen)


# -- LifeMonitor registers what was preloaded -------------------------------------------------


def test_our_service_registers_a_preloaded_workflow(client, emu, monkeypatch):
    from chalicelib.auth import scopes as S
    from chalicelib.db import session_scope
    from chalicelib.services import registries
    from tests.api.helpers import form

    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")  # the emulator listens on loopback
    done = preload(*as_user1(emu))
    assert done.returncode == 0, done.stderr
    [identifier] = [i for _, i, t in outcomes(done.stdout) if t.endswith("-mixed")]

    with session_scope() as s:
        creds = registries.add_registry(
            s,
            name="WorkflowHub",
            type="seek",
            client_id="app",
            client_secret="app-secret",
            api_url=emu.url,
            client_name="wfhub",
        )
    r = client.http.post(
        "/oauth2/token",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=form(
            client_id=creds.client_id,
            client_secret=creds.client_secret,
            grant_type="client_credentials",
            scope=S.WORKFLOWHUB_REQUEST,
        ),
    )
    assert r.status_code == 200, r.body
    headers = {
        "Authorization": f"Bearer {r.json_body['access_token']}",
        "Content-Type": "application/json",
    }
    r = client.http.post(
        "/registries/current/workflows",
        headers=headers,
        body=json.dumps({"identifier": identifier, "version": "1", "public": True}),
    )
    assert r.status_code == 201, r.body
    assert r.json_body["uuid"] == emu.uuid_of(identifier)
    assert r.json_body["name"] == "sort-and-change-case-jenkins-mixed"

    r = client.http.get(f"/workflows/{r.json_body['uuid']}/suites", headers=headers)
    assert r.status_code == 200, r.body
    [suite] = r.json_body["items"]
    got = [(i["service"]["type"], i["service"]["url"], i["resource"]) for i in suite["instances"]]
    assert got == [
        ("jenkins", JENKINS_URL, "job/test/"),
        ("jenkins", JENKINS_URL, "job/failing/"),
    ]
