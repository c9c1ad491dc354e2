"""Acceptance of the refresh, end to end: every fixture crate with test instances (and
crates built here) is submitted through the API, its CI services are pointed at emulators
programmed with build sequences, `admin refresh --all` runs, and the statuses and latest
builds the API serves must be what the emulated CIs hold. Then: duplicate SQS deliveries
and concurrent refreshes of one instance leave one row per build (Postgres), and the
embedded default's local timer.

One module-scoped world (database, emulators, submissions, one refresh) serves the checks.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest

from chalicelib import status as status_rule
from emulators.crates import wtroc_metadata, zip_crate, zip_members
from emulators.github import GithubEmulator
from emulators.gitlab import GitlabEmulator
from emulators.jenkins import JenkinsEmulator
from emulators.travis import TravisEmulator
from tests.conftest import SHARED_FIXTURES
from tests.support import api_data

EMULATORS = {
    "jenkins": lambda: JenkinsEmulator(replay=False),
    "travis": TravisEmulator,
    "github": lambda: GithubEmulator(replay=False),
    "gitlab": GitlabEmulator,
}
# Build sequences (newest first) handed out to the CI projects in turn.
SEQUENCES = [
    ["passed"],
    ["running", "failed", "passed"],
    ["failed", "passed", "passed"],
    ["waiting", "aborted", "passed", "failed"],
    ["error", "passed"],
    ["running"],
    [],
    ["passed", "failed", "error", "failed"],
]


# --- the crates ----------------------------------------------------------------------------


def _fixture_crates() -> list[str]:
    """Fixture crates (relative paths) with at least one test instance on a CI we serve."""
    from chalicelib import crates

    root = SHARED_FIXTURES / "rocrates"
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.rglob("*")):
        try:
            if path.is_file() and path.name.endswith(".zip"):
                info = crates.read_crate(path.read_bytes())
            elif path.name in ("ro-crate-metadata.json", "ro-crate-metadata.jsonld"):
                info = crates.read_metadata_only(json.loads(path.read_text()))
            else:
                continue
        except crates.CrateError:
            continue  # unsupported service types: rejected at submission (test_submission)
        if any(s.instances for s in info.suites):
            found.append(str(path.relative_to(root)))
    return found


def _crate_bytes(relative: str) -> bytes:
    path = SHARED_FIXTURES / "rocrates" / relative
    if path.name.endswith(".zip"):
        return path.read_bytes()
    folder = path.parent  # a crate directory: zip it as it is
    return zip_members(
        (str(p.relative_to(folder)), p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    )


# Crates built here, so the acceptance runs without the shared fixtures too.
CODE_CRATES: dict[str, dict] = {
    "code/every-ci": wtroc_metadata(
        form="0.2",
        name="every-ci",
        instances=[
            ("jenkins", "https://ci.example.org/jenkins", "job/folder/job/pipeline"),
            ("github", "https://api.github.com", "repos/o/r/actions/workflows/ci.yml"),
            ("travis", "https://api.travis-ci.com", "github/o/r"),
            ("gitlab", "https://gitlab.example.org", "group/sub/project"),
        ],
    ),
    "code/legacy-two-jenkins": wtroc_metadata(
        form="0.1",
        legacy=True,
        name="legacy",
        instances=[
            ("jenkins", "https://ci.example.org/jenkins", "job/a"),
            ("jenkins", "https://ci.example.org/jenkins", "job/b"),
        ],
    ),
}
FIXTURE_CRATES = _fixture_crates()
CRATES = [*FIXTURE_CRATES, *CODE_CRATES] if FIXTURE_CRATES else ["fixtures", *CODE_CRATES]


# --- the world -----------------------------------------------------------------------------


@dataclass
class Expected:
    """What one instance's CI holds: its builds (newest first, as we name them)."""

    builds: list[tuple[str, str]] = field(default_factory=list)  # (build id, status)

    @property
    def counted(self) -> tuple[str, str] | None:
        """The build the status rule shows: the first completed of the newest ten, else
        the newest (which does not count), else none."""
        recent = self.builds[:10]
        done = next((b for b in recent if b[1] in status_rule.COMPLETED), None)
        return done or (recent[0] if recent else None)


@dataclass
class World:
    world: Any
    alice: Any
    emulators: dict[int, Any]  # service id -> emulator
    workflows: dict[str, str]  # crate -> workflow uuid
    expected: dict[str, Expected]  # instance uuid -> its CI's builds
    refresh: Any  # the admin command's result


class Programmer:
    """Turns a sequence of statuses into an emulator's native build specs, and returns the
    builds as our adapters name them."""

    def __init__(self) -> None:
        self.ids = iter(range(500_000, 10**9, 1000))

    def __call__(self, kind: str, emulator, resource: str, seq: list[str]) -> Expected:
        base = next(self.ids)
        ids = [base + len(seq) - i for i in range(len(seq))]  # newest has the highest id
        if kind == "jenkins":
            spec = {
                "passed": {"result": "SUCCESS"},
                "failed": {"result": "FAILURE"},
                "error": {"result": "UNSTABLE"},
                "aborted": {"result": "ABORTED"},
                "running": {"building": True},
                "waiting": {"building": True},  # Jenkins has no queued builds
            }
            emulator.set_builds(resource, [spec[s] for s in seq])
            named = {"waiting": "running"}
            return Expected([(str(len(seq) - i), named.get(s, s)) for i, s in enumerate(seq)])
        if kind == "travis":
            state = {
                "passed": "passed",
                "failed": "failed",
                "error": "errored",
                "aborted": "canceled",
                "running": "started",
                "waiting": "created",
            }
            from chalicelib.testing.travis import parse_resource

            repo = parse_resource(resource)
            builds = [
                emulator.make_build(i, state[s], started_at=start)
                for i, s, start in zip(ids, seq, _starts(seq), strict=True)
            ]
            if repo.slug:
                emulator.set_builds(builds, slug=repo.slug)
            else:
                emulator.set_builds(builds, slug=f"fixture/r{repo.ref}", repo_id=int(repo.ref))
            return Expected([(str(i), s) for i, s in zip(ids, seq, strict=True)])
        if kind == "github":
            spec = {
                "passed": {"conclusion": "success"},
                "failed": {"conclusion": "failure"},
                "error": {"conclusion": "timed_out"},
                "aborted": {"conclusion": "cancelled"},
                "running": {"status": "in_progress"},
                "waiting": {"status": "queued"},
            }
            _, owner, repo, _, _, workflow = resource.split("/")[:6]
            runs = [{"id": i, **spec[s]} for i, s in zip(ids, seq, strict=True)]
            emulator.set_runs(f"{owner}/{repo}", workflow, runs)
            return Expected([(f"{i}_1", s) for i, s in zip(ids, seq, strict=True)])
        status = {
            "passed": "success",
            "failed": "failed",
            "error": "error",
            "aborted": "canceled",
            "running": "running",
            "waiting": "pending",
        }
        pipelines = [
            emulator.make_pipeline(i, status[s], created_at=start, started_at=start)
            for i, s, start in zip(ids, seq, _starts(seq), strict=True)
        ]
        emulator.set_builds(pipelines, project=resource.strip("/"))
        return Expected([(str(i), s) for i, s in zip(ids, seq, strict=True)])


def _starts(seq: list[str]) -> list:
    """Start times one hour apart, newest first (ties would make the order arbitrary)."""
    from datetime import timedelta

    from chalicelib.models import utcnow

    now = utcnow().replace(microsecond=0)
    return [now - timedelta(hours=i + 1) for i in range(len(seq))]


@pytest.fixture(scope="module")
def world(database_url, chalice_app, tmp_path_factory) -> Iterator[World]:
    from chalicelib.admin import run
    from chalicelib.db import session_scope
    from chalicelib.models import TestingService, TestInstance

    with (
        api_data.open_world(
            database_url, chalice_app, tmp_path_factory, env={"ALLOW_PRIVATE_URLS": "1"}
        ) as w,
        ExitStack() as stack,
        pytest.MonkeyPatch.context() as mp,
    ):
        w.activate(mp)
        alice = api_data.make_user("alice")
        crates = {c: _crate_bytes(c) for c in FIXTURE_CRATES}
        crates.update({name: zip_crate(meta) for name, meta in CODE_CRATES.items()})
        workflows = {}
        for name, data in crates.items():
            body = {"rocrate": api_data.b64(data), "version": "1", "public": True}
            r = api_data.submit(w.client, alice, body)
            assert r.status_code == 201, (name, r.body)
            workflows[name] = r.json_body["uuid"]

        # One emulator per CI service the crates name (their real hosts), and the
        # services' URLs pointed at them.
        emulators: dict[int, Any] = {}
        with session_scope() as s:
            for service in s.query(TestingService).order_by(TestingService.id):
                emulators[service.id] = stack.enter_context(EMULATORS[service.type]())
                service.url = emulators[service.id].url
            instances = [
                (i.uuid, i.testing_service_id, i.resource)
                for i in s.query(TestInstance).order_by(TestInstance.id)
            ]
        program = Programmer()
        expected: dict[str, Expected] = {}
        projects: dict[tuple[int, str], Expected] = {}
        for uuid, service_id, resource in instances:
            key = (service_id, resource.strip("/"))
            if key not in projects:  # crates sharing a CI job see the same builds
                emulator = emulators[service_id]
                kind = type(emulator).__name__.removesuffix("Emulator").lower()
                seq = SEQUENCES[len(projects) % len(SEQUENCES)]
                projects[key] = program(kind, emulator, resource, seq)
            expected[uuid] = projects[key]
        result = run(["refresh", "--all", "--json"])
        yield World(w, alice, emulators, workflows, expected, result)


@pytest.fixture(autouse=True)
def _world_env(world, monkeypatch):
    """Each test starts from conftest's clean environment: point it at the world again."""
    world.world.activate(monkeypatch)


@pytest.mark.parametrize("crate", CRATES)
def test_status_matches_the_emulated_ci(request, world, crate):
    if crate == "fixtures":
        request.getfixturevalue("shared_fixtures")  # skips with the fixture's reason
        pytest.skip(f"no crate with test instances under {SHARED_FIXTURES / 'rocrates'}")
    http, headers = world.world.http, world.alice.headers
    wf = world.workflows[crate]
    instances = api_data.instance_uuids(wf)
    assert instances
    status = http.get(f"/workflows/{wf}/status", headers=headers).json_body
    # The rule, applied to what the CIs hold.
    counted = {u: world.expected[u].counted for u in instances}
    fold = status_rule.fold(
        b[1] == "passed" for b in counted.values() if b and b[1] in status_rule.COMPLETED
    )
    assert status["aggregate_test_status"] == fold
    shown = {(b["instance"]["uuid"], b["build_id"], b["status"]) for b in status["latest_builds"]}
    assert shown == {(u, *b) for u, b in counted.items() if b is not None}
    if any(b is None for b in counted.values()) and fold == "not_available":
        assert "No build found" in status["reason"]
    for uuid in instances:
        builds = http.get(f"/instances/{uuid}/latest-builds?limit=50", headers=headers).json_body
        got = [(b["build_id"], b["status"]) for b in builds["items"]]
        assert got == world.expected[uuid].builds, uuid
        instance = http.get(f"/instances/{uuid}", headers=headers).json_body
        assert "last_error" not in instance and instance["last_checked"]


def test_the_refresh_command_summary(world):
    result = world.refresh
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["selected"] == summary["refreshed"] == len(world.expected)
    assert summary["outcomes"] == {"updated": len(world.expected)}
    assert summary["errors"] == [] and summary["skipped"] == []


def test_the_sequences_reach_every_aggregate_status(world):
    if not FIXTURE_CRATES:
        pytest.skip("the crates built here alone do not reach every status")
    http, headers = world.world.http, world.alice.headers
    seen = {
        http.get(f"/workflows/{wf}/status", headers=headers).json_body["aggregate_test_status"]
        for wf in world.workflows.values()
    }
    assert seen == set(status_rule.AGGREGATE_STATUSES)


def test_every_fixture_crate_with_instances_was_checked(shared_fixtures):
    """The parametrization above found the fixture crates (and knows those it leaves out:
    their service types are not ours, so the API refuses them)."""
    assert len(FIXTURE_CRATES) >= 10
    assert not any("invalid-service-type" in c or "rate-limit" in c for c in FIXTURE_CRATES)


# --- idempotency on the real database ------------------------------------------------------


def new_jenkins_instance(world, name: str) -> tuple[int, JenkinsEmulator, str]:
    """A new workflow whose one instance runs on the world's first Jenkins emulator, on a
    job of its own; returns (instance id, emulator, job path)."""
    from chalicelib.db import session_scope
    from chalicelib.models import TestInstance

    jenkins = next(e for e in world.emulators.values() if isinstance(e, JenkinsEmulator))
    job = f"job/{name.replace('_', '-')}"
    data = zip_crate(wtroc_metadata(name=job, instances=[("jenkins", jenkins.url, job)]))
    body = {"rocrate": api_data.b64(data), "version": "1"}
    r = api_data.submit(world.world.client, world.alice, body)
    assert r.status_code == 201, r.body
    [uuid] = api_data.instance_uuids(r.json_body["uuid"])
    with session_scope() as s:
        instance_id = s.query(TestInstance.id).filter_by(uuid=uuid).scalar()
    return instance_id, jenkins, job


@pytest.fixture
def jenkins_instance(world, request):
    """`new_jenkins_instance` on PostgreSQL, where row locks and concurrent upserts are
    what the production database does."""
    from chalicelib.db import get_engine

    if get_engine().dialect.name != "postgresql":
        pytest.skip("row locks and concurrent upserts are checked on PostgreSQL")
    return new_jenkins_instance(world, request.node.name)


def rows_of(instance_id: int) -> list[tuple]:
    from chalicelib.db import session_scope
    from chalicelib.models import Build, TestInstance

    with session_scope() as s:
        rows = s.query(Build.id, Build.build_id, Build.status).filter_by(instance_id=instance_id)
        pointers = s.query(TestInstance.latest_build_id, TestInstance.last_completed_build_id)
        return sorted(rows.all(), key=lambda r: int(r[1])), pointers.filter_by(id=instance_id).one()


def test_duplicate_sqs_deliveries_keep_one_row_per_build(world, jenkins_instance):
    from chalicelib.jobs import refresh

    iid, jenkins, job = jenkins_instance
    jenkins.set_builds(job, [{"building": True}, {"result": "FAILURE"}, {"result": "SUCCESS"}])
    record = {"messageId": "m1", "body": json.dumps({"v": 1, "host": "x", "instances": [iid]})}
    assert refresh.handle_sqs_records([record]) == {"batchItemFailures": []}
    first, _ = rows_of(iid)
    assert refresh.handle_sqs_records([record]) == {"batchItemFailures": []}
    assert refresh.handle_sqs_records([record, dict(record, messageId="m1-again")]) == {
        "batchItemFailures": []
    }
    rows, (latest, completed) = rows_of(iid)
    assert rows == first  # the same rows, ids included
    assert [(b, s) for _, b, s in rows] == [("1", "passed"), ("2", "failed"), ("3", "running")]
    assert (latest, completed) == (rows[2][0], rows[1][0])


def test_concurrent_refreshes_of_one_instance(world, jenkins_instance):
    """Two refreshes overlap: the first asks, gets an old answer late; the second asks
    later and gets a newer one at once. One row per build, and the newer observation wins
    whichever transaction commits last."""
    import requests

    from chalicelib.jobs import refresh
    from chalicelib.testing.jenkins import tree_query

    iid, jenkins, job = jenkins_instance
    jenkins.set_builds(job, [{"building": True}, {"result": "SUCCESS"}])  # 2 running, 1
    old = requests.get(
        f"{jenkins.job_url(job)}api/json", params={"tree": tree_query(10)}, timeout=5
    )
    jenkins.set_builds(job, [{"building": True}, {"result": "FAILURE"}, {"result": "SUCCESS"}])
    jenkins.fault(rf"^/{job}/api/json$", status=200, body=old.content, delay=0.6, times=1)
    jenkins.reset_requests()
    outcomes: list = []

    def refresh_it() -> None:
        outcomes.append(refresh.process_batch([iid]))

    slow = threading.Thread(target=refresh_it)
    slow.start()
    deadline = time.monotonic() + 5
    while not jenkins.api_requests(job) and time.monotonic() < deadline:
        time.sleep(0.01)
    fast = threading.Thread(target=refresh_it)
    fast.start()
    slow.join(10)
    fast.join(10)
    assert outcomes == [{"updated": 1}, {"updated": 1}]
    assert len(jenkins.api_requests(job)) == 2
    rows, (latest, completed) = rows_of(iid)
    assert [(b, s) for _, b, s in rows] == [("1", "passed"), ("2", "failed"), ("3", "running")]
    assert (latest, completed) == (rows[2][0], rows[1][0])


def test_concurrent_deliveries_of_the_same_builds(world, jenkins_instance):
    from chalicelib.jobs import refresh

    iid, jenkins, job = jenkins_instance
    jenkins.set_builds(job, [{"result": "SUCCESS"}] * 8)
    jenkins.latency = 0.1
    barrier = threading.Barrier(4)

    def deliver() -> None:
        barrier.wait()
        refresh.process_batch([iid])

    try:
        threads = [threading.Thread(target=deliver) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    finally:
        jenkins.latency = 0.0
    rows, (latest, completed) = rows_of(iid)
    assert [b for _, b, _ in rows] == [str(n) for n in range(1, 9)]
    assert latest == completed == rows[-1][0]


# --- the embedded default: the local timer -------------------------------------------------


def test_local_timer_refreshes_due_instances(world, monkeypatch):
    """`make run`'s in-process refresh: the real `dispatch_due`, no queue."""
    from infra.local import start_refresh_timer

    iid, jenkins, job = new_jenkins_instance(world, "local-timer")
    jenkins.set_builds(job, [{"result": "SUCCESS"}])
    monkeypatch.delenv("LM_REFRESH_QUEUE_URL", raising=False)
    timer = start_refresh_timer(0.1)
    try:
        deadline = time.monotonic() + 10
        while not rows_of(iid)[0] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        timer.stop(5)
    assert [(b, s) for _, b, s in rows_of(iid)[0]] == [("1", "passed")]
    assert not timer.is_alive() and timer.failures == 0


def test_local_timer_survives_failures():
    from infra.local import RefreshTimer

    calls: list[float] = []

    def flaky() -> dict:
        calls.append(time.monotonic())
        if len(calls) % 2:
            raise RuntimeError("database is down")
        return {"claimed": 1}

    timer = RefreshTimer(0.02, flaky)
    timer.start()
    deadline = time.monotonic() + 5
    while len(calls) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    timer.stop(5)
    assert len(calls) >= 5 and timer.failures >= 2
    assert not timer.is_alive() and timer.daemon


def test_local_timer_settings(monkeypatch):
    from infra import local

    monkeypatch.setenv("LM_LOCAL_REFRESH_INTERVAL", "0")
    assert local.start_refresh_timer() is None
    monkeypatch.setenv("LM_LOCAL_REFRESH_INTERVAL", "soon")
    assert local.start_refresh_timer() is None  # logged; the server still starts
    monkeypatch.setenv("LM_LOCAL_REFRESH_INTERVAL", "3600")
    started = []
    monkeypatch.setattr(local, "RefreshTimer", lambda interval, dispatch: _Fake(started, interval))
    assert local.start_refresh_timer() is not None and started == [3600]


class _Fake:
    def __init__(self, started: list, interval: float) -> None:
        self.started, self.interval = started, interval

    def start(self) -> None:
        self.started.append(self.interval)


@pytest.mark.parametrize(
    ("args", "worker", "serving"),
    [
        (["--no-autoreload"], None, True),  # make run
        ([], None, False),  # the reloader's parent: it only watches files
        ([], "true", True),  # ... and its child serves
        (["--port", "9000", "--no-autoreload", "--help"], None, False),
    ],
)
def test_timer_runs_in_the_serving_process_only(monkeypatch, args, worker, serving):
    from chalice.cli import cli

    from infra import local

    if worker:
        monkeypatch.setenv("CHALICE_WORKER", worker)
    else:
        monkeypatch.delenv("CHALICE_WORKER", raising=False)
    started = []
    monkeypatch.setattr(local, "start_refresh_timer", lambda: started.append(True))
    monkeypatch.setattr(cli, "main", lambda **kwargs: 0)
    monkeypatch.setattr(local.sys, "argv", list(local.sys.argv))
    assert local.main(args) == 0
    assert started == ([True] if serving else [])
