"""Submitting workflows as a user (contract §1.2 rows 19, 24-37, §1.3, §5): every fixture
crate by base64 `rocrate` and by `roc_link`, then every read endpoint; failures that must
leave nothing behind; name fallback; conflicts; `roc_link` refusals and authorization; bad
uploads; PUT/DELETE of versions and workflows.

All tests share one module-scoped database (tests.support.api_data.World): "leaves no rows"
is checked as "every table has the row count it had before".
"""

from __future__ import annotations

import io
import json
import uuid as uuidlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from emulators.crates import wtroc_metadata, zip_crate, zip_members
from tests.api.helpers import assert_problem
from tests.support import api_data
from tests.support.api_data import b64, build, crate, row_counts, stored_crates
from tests.support.fileserver import FileServer, unused_port

REGISTERED_KEYS = {"uuid", "wf_version", "name", "meta"}
ZIP = {"Accept": "application/zip"}
# Testing services are shared CI records, kept when the last workflow using them goes.
KEPT_TABLES = {"testing_services"}


# -- the fixture crates and what each must give (contract §5 and fixtures/SOURCES.md) ---------


@dataclass(frozen=True)
class Expect:
    """What registering a fixture crate must give. `name` is the contract's fallback
    (mainEntity name, else its @id, else the root dataset name); `suites` maps each
    suite @id to its instances' (service type, url, resource)."""

    name: str | None = None
    suites: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    error: str | None = None  # 422 with this text in the detail


JENKINS_LOCAL = [("jenkins", "http://jenkins:8080/", "job/test/")]
TRAVIS_1002447 = [("travis", "https://api.travis-ci.org", "repo/1002447")]
TRAVIS_PYDOOP = [("travis", "https://api.travis-ci.org", "github/crs4/pydoop")]
TWO_EMPTY = {"#test1": [], "#test2": []}

LM = "rocrates/life_monitor/"
SCC = LM + "generated/ro-crate-galaxy-sortchangecase"  # LifeMonitor's generated variants
WFH = "seek/lifemonitor-test-instance/"
GALAXY_EXAMPLE = "galaxy-workflow-example-with-tests"  # a root dataset name

FIXTURE_CRATES: dict[str, Expect] = {
    LM + "example-wf-crate.zip": Expect("sort-and-change-case", {"#test1": TRAVIS_1002447}),
    LM + "rocrate-base64-decoded.crate.zip": Expect(
        "sort-and-change-case-some-passing",
        {
            "#test1": [
                ("jenkins", "http://jenkins:8080/", "job/test-passed/"),
                ("jenkins", "http://jenkins:8080/", "job/test-failed/"),
            ]
        },
    ),
    LM + "generated/ro-crate-cwl-basefreqsum.crate.zip": Expect("basefreqsum", TWO_EMPTY),
    SCC + "-github-actions.crate.zip": Expect(
        "sort-and-change-case",
        {
            "#test1": [
                (
                    "github",
                    "https://api.github.com",
                    "repos/crs4/life_monitor/actions/workflows/docs.yaml",
                )
            ]
        },
    ),
    SCC + "-invalid-service-type.crate.zip": Expect(error="JenkinsXService"),
    SCC + "-invalid-service-url.crate.zip": Expect(
        "sort-and-change-case-invalid-service-url",
        {"#test1": [("travis", "http://127.0.0.1:67890", "repo/1002447")]},
    ),
    SCC + "-no-name.crate.zip": Expect("sort-and-change-case.ga", {"#test1": TRAVIS_1002447}),
    SCC + "-rate-limit-exceeded.crate.zip": Expect(error="RateLimitExceededService"),
    SCC + "-travis.crate.zip": Expect("sort-and-change-case-travis", {"#test1": TRAVIS_PYDOOP}),
    SCC + ".crate.zip": Expect("sort-and-change-case", {"#test1": JENKINS_LOCAL}),
    "rocrates/seek/all_remote.crate.zip": Expect(
        "https://raw.githubusercontent.com/bob/workflow/master/workflow.txt"
    ),
    "rocrates/seek/just-cwl-workflow.crate.zip": Expect("Cheminformatics-4-SuCOS_scoring.cwl"),
    "rocrates/seek/missing-file.crate.zip": Expect("concat_two_files"),
    "rocrates/seek/ro-crate-with-tests.crate.zip": Expect(
        "sort-and-change-case",
        {"#test1": [("jenkins", "http://example.org/jenkins", "job/tests/")]},
    ),
    "rocrates/seek/workflow-4-1.crate.zip": Expect(
        "Genomics-1-PreProcessing_without_downloading_from_SRA.ga"
    ),
    WFH + "workflow-20.crate.zip": Expect("basefreqsum", TWO_EMPTY),
    WFH + "workflow-21.crate.zip": Expect("sort-and-change-case", {"#test1": JENKINS_LOCAL}),
    WFH + "workflow-22.crate.zip": Expect(error="JenkinsXService"),
    WFH + "workflow-23.crate.zip": Expect(
        "sort-and-change-case-invalid-service-url",
        {"#test1": [("jenkins", "http://127.0.0.1:67890", "job/tests/")]},
    ),
    WFH + "workflow-24.crate.zip": Expect("sort-and-change-case-travis", {"#test1": TRAVIS_PYDOOP}),
    WFH + "converted/seek-generated-0956b080-old-test-metadata.crate.zip": Expect(
        "sort-and-change-case"
    ),
    WFH + "converted/seek-generated-0eea7f40.crate.zip": Expect(
        "sort-and-change-case", {"#test1": JENKINS_LOCAL}
    ),
}

# Crates whose root dataset name differs from the mainEntity name: the contract's fallback
# takes the mainEntity's, ours the root's (see test_name_fallback_prefers_main_entity).
ROOT_NAMES = {
    LM + "example-wf-crate.zip": GALAXY_EXAMPLE,
    LM + "rocrate-base64-decoded.crate.zip": GALAXY_EXAMPLE,
    SCC + "-github-actions.crate.zip": GALAXY_EXAMPLE,
    SCC + "-invalid-service-url.crate.zip": GALAXY_EXAMPLE,
    SCC + "-travis.crate.zip": GALAXY_EXAMPLE,
    SCC + ".crate.zip": GALAXY_EXAMPLE,
    "rocrates/seek/missing-file.crate.zip": "Concat two files",
}


def test_the_table_lists_every_fixture_crate(shared_fixtures):
    found = {
        str(p.relative_to(shared_fixtures))
        for p in [
            *(shared_fixtures / "rocrates").rglob("*.zip"),
            *(shared_fixtures / "seek" / "lifemonitor-test-instance").rglob("*.zip"),
        ]
    }
    assert found == set(FIXTURE_CRATES)


# -- the world ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(database_url, chalice_app, tmp_path_factory):
    with api_data.open_world(database_url, chalice_app, tmp_path_factory) as w:
        w.data["alice"] = api_data.make_user("alice")
        w.data["bob"] = api_data.make_user("bob")
        yield w


@pytest.fixture(autouse=True)
def _world_env(world, monkeypatch):
    world.activate(monkeypatch)


@pytest.fixture(scope="module")
def _server():
    with FileServer() as server:
        yield server


@pytest.fixture
def files(_server, monkeypatch):
    """The loopback file server, emptied; private addresses allowed for the test."""
    from chalicelib import http

    _server.files.clear()
    _server.requests.clear()
    _server.clear_faults()
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")
    http.reset()
    yield _server
    http.reset()


@pytest.fixture
def alice(world):
    return world.data["alice"]


@pytest.fixture
def bob(world):
    return world.data["bob"]


@pytest.fixture
def snapshot(world):
    """Row counts and stored crates before the test; `unchanged()` compares."""

    class Snapshot:
        def __init__(self):
            self.rows = row_counts()
            self.crates = stored_crates(world.data_dir)

        def unchanged(self, ignore=KEPT_TABLES):
            now = row_counts()
            changed = {
                t: (self.rows[t], now[t]) for t in now if t not in ignore and now[t] != self.rows[t]
            }
            assert not changed, f"rows changed (before, after): {changed}"
            assert stored_crates(world.data_dir) == self.crates

    return Snapshot()


@pytest.fixture(autouse=True)
def _forget_unused_services(world):
    """A testing service outlives its instances; drop unused ones so that crates naming the
    same CI URL with different types do not meet across tests (see
    test_a_deleted_workflows_ci_url_accepts_another_type)."""
    yield
    from sqlalchemy import delete, exists

    from chalicelib.db import session_scope
    from chalicelib.models import TestingService, TestInstance

    with session_scope() as s:
        s.execute(
            delete(TestingService).where(
                ~exists().where(TestInstance.testing_service_id == TestingService.id)
            )
        )


# -- helpers ---------------------------------------------------------------------------------


def metadata_of(data: bytes) -> dict:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = [
            n
            for n in archive.namelist()
            if n.rsplit("/", 1)[-1] in ("ro-crate-metadata.json", "ro-crate-metadata.jsonld")
        ]
        return json.loads(archive.read(sorted(names, key=len)[0]))


def registered(r, version: str = "1") -> dict:
    assert r.status_code == 201, r.body
    body = r.json_body
    assert set(body) == REGISTERED_KEYS
    assert body["wf_version"] == version
    assert set(body["meta"]) == {"created", "modified"}
    assert all(isinstance(v, float) for v in body["meta"].values())
    uuidlib.UUID(body["uuid"])
    return body


def check_download(world, actor, wf_uuid: str, version: str, data: bytes) -> None:
    r = world.http.get(
        f"/workflows/{wf_uuid}/rocrate/{version}/download", headers={**actor.headers, **ZIP}
    )
    assert r.status_code == 200, r.body
    headers = {k.lower(): v for k, v in r.headers.items()}
    assert headers["content-type"] == "application/zip"
    assert (
        headers["content-disposition"] == f"attachment; filename=rocrate_{wf_uuid}_v{version}.zip"
    )
    assert r.body == data


def delete_workflow(world, actor, wf_uuid: str) -> None:
    r = world.http.delete(f"/workflows/{wf_uuid}", headers=actor.headers)
    assert r.status_code == 204, r.body
    assert_problem(world.http.get(f"/workflows/{wf_uuid}", headers=actor.headers), 404)


# -- every fixture crate -----------------------------------------------------------------------


def _read_everything(
    world, actor, wf_uuid: str, data: bytes, expect: Expect, origin: str = "local file uploaded"
) -> None:
    """Every read endpoint of a freshly registered version "1"."""
    h = actor.headers
    r = world.http.get(f"/workflows/{wf_uuid}", headers=h)
    assert r.status_code == 200, r.body
    details = r.json_body
    assert details["uuid"] == wf_uuid
    assert details["public"] is False
    assert details["version"]["version"] == "1"
    assert details["version"]["is_latest"] is True
    assert details["version"]["submitter"] == {"id": actor.user_id, "username": actor.name}
    assert details["version"]["ro_crate"]["links"]["origin"] == origin
    assert details["version"]["links"]["origin"] == origin

    r = world.http.get(f"/workflows/{wf_uuid}/versions", headers=h)
    assert r.status_code == 200, r.body
    assert [v["version"] for v in r.json_body["versions"]] == ["1"]
    assert r.json_body["workflow"]["uuid"] == wf_uuid

    instances = api_data.instance_uuids(wf_uuid)
    assert len(instances) == sum(len(i) for i in expect.suites.values())
    for n, inst in enumerate(instances):
        api_data.store_builds(
            inst,
            [
                build(f"{n}-old", "failed", 60),
                build(f"{n}-new", "passed", 30),
                build(f"{n}-running", "running", 5),
            ],
        )

    r = world.http.get(f"/workflows/{wf_uuid}/status", headers=h)
    assert r.status_code == 200, r.body
    status = r.json_body
    if instances:
        assert status["aggregate_test_status"] == "all_passing"
        assert sorted(b["build_id"] for b in status["latest_builds"]) == sorted(
            f"{n}-new" for n in range(len(instances))
        )
        assert "reason" not in status
    else:
        assert status["aggregate_test_status"] == "not_available"
        assert status["latest_builds"] == []
        if expect.suites:
            assert status["reason"] == ", ".join(
                f"No test instances configured for suite {s.lstrip('#')}" for s in expect.suites
            )
        else:
            assert status["reason"] == "No test suite configured for this workflow"

    r = world.http.get(f"/workflows/{wf_uuid}/suites", headers=h)
    assert r.status_code == 200, r.body
    suites = r.json_body["items"]
    assert [s["roc_suite"] for s in suites] == list(expect.suites)
    for suite in suites:
        wanted = expect.suites[suite["roc_suite"]]
        got = [
            (i["service"]["type"], i["service"]["url"], i["resource"]) for i in suite["instances"]
        ]
        assert got == wanted
        r = world.http.get(f"/suites/{suite['uuid']}", headers=h)
        assert r.status_code == 200 and r.json_body["uuid"] == suite["uuid"], r.body
        r = world.http.get(f"/suites/{suite['uuid']}/status", headers=h)
        assert r.status_code == 200, r.body
        assert r.json_body["suite_uuid"] == suite["uuid"]
        assert r.json_body["aggregate_test_status"] == (
            "all_passing" if wanted else "not_available"
        )
        r = world.http.get(f"/suites/{suite['uuid']}/instances", headers=h)
        assert r.status_code == 200, r.body
        assert [i["uuid"] for i in r.json_body["items"]] == [i["uuid"] for i in suite["instances"]]

    for n, inst in enumerate(instances):
        r = world.http.get(f"/instances/{inst}", headers=h)
        assert r.status_code == 200 and r.json_body["uuid"] == inst, r.body
        r = world.http.get(f"/instances/{inst}/latest-builds", headers=h)
        assert r.status_code == 200, r.body
        assert [b["build_id"] for b in r.json_body["items"]] == [
            f"{n}-running",
            f"{n}-new",
            f"{n}-old",
        ]
        r = world.http.get(f"/instances/{inst}/builds/{n}-new", headers=h)
        assert r.status_code == 200, r.body
        assert (r.json_body["build_id"], r.json_body["status"]) == (f"{n}-new", "passed")

    r = world.http.get(f"/workflows/{wf_uuid}/rocrate/1/metadata", headers=h)
    assert r.status_code == 200, r.body
    assert r.json_body == metadata_of(data)
    check_download(world, actor, wf_uuid, "1", data)


@pytest.mark.parametrize("relpath", sorted(FIXTURE_CRATES))
def test_fixture_crate_by_base64(world, alice, snapshot, shared_fixtures, relpath):
    data = (shared_fixtures / relpath).read_bytes()
    expect = FIXTURE_CRATES[relpath]
    r = api_data.submit(world.client, alice, {"rocrate": b64(data), "version": "1"})
    if expect.error:
        body = assert_problem(r, 422)
        assert expect.error in body["detail"]
        snapshot.unchanged(ignore=())
        return
    wf_uuid = registered(r)["uuid"]
    _read_everything(world, alice, wf_uuid, data, expect)
    delete_workflow(world, alice, wf_uuid)
    snapshot.unchanged()


@pytest.mark.parametrize("relpath", sorted(FIXTURE_CRATES))
def test_fixture_crate_by_roc_link(world, alice, files, snapshot, shared_fixtures, relpath):
    data = (shared_fixtures / relpath).read_bytes()
    expect = FIXTURE_CRATES[relpath]
    link = files.add(f"/crates/{Path(relpath).name}", data)
    r = api_data.submit(world.client, alice, {"roc_link": link, "version": "1"})
    assert len(files.received(f"/crates/{Path(relpath).name}")) == 1
    if expect.error:
        body = assert_problem(r, 422)
        assert expect.error in body["detail"]
        snapshot.unchanged(ignore=())
        return
    wf_uuid = registered(r)["uuid"]
    _read_everything(world, alice, wf_uuid, data, expect, origin=link)
    delete_workflow(world, alice, wf_uuid)
    snapshot.unchanged()


@pytest.mark.parametrize(
    "relpath",
    [p for p in sorted(p for p, e in FIXTURE_CRATES.items() if not e.error)],
)
def test_fixture_crate_name(world, alice, shared_fixtures, relpath):
    """The name a crate registers under when the request gives none (contract §5)."""
    data = (shared_fixtures / relpath).read_bytes()
    r = api_data.submit(world.client, alice, {"rocrate": b64(data), "version": "1"})
    body = registered(r)
    try:
        assert body["name"] == FIXTURE_CRATES[relpath].name
        r = world.http.get(f"/workflows/{body['uuid']}", headers=alice.headers)
        assert r.json_body["name"] == FIXTURE_CRATES[relpath].name
    finally:
        delete_workflow(world, alice, body["uuid"])


# -- crates built here (no ../shared needed) ----------------------------------------------------


@pytest.mark.parametrize(("form", "legacy"), [("0.1", False), ("0.1", True), ("0.2", False)])
def test_crate_built_in_code_with_every_ci(world, alice, snapshot, form, legacy):
    instances = [
        ("jenkins", "https://ci.example/jenkins/", "job/wf/"),
        ("github", "https://api.github.com", "repos/crs4/wf/actions/workflows/test.yml"),
        ("travis", "https://api.travis-ci.com", "github/crs4/wf"),
    ]
    data = crate("code-built", instances=instances, form=form, legacy=legacy)
    body = registered(
        api_data.submit(
            world.client,
            alice,
            {"rocrate": b64(data), "version": "v0.1", "name": "Given name", "public": True},
        ),
        "v0.1",
    )
    assert body["name"] == "Given name"
    wf = body["uuid"]
    r = world.http.get(f"/workflows/{wf}/suites")  # public: anonymous may read
    assert r.status_code == 200, r.body
    [suite] = r.json_body["items"]
    assert suite["roc_suite"] == "#test1"
    assert suite["definition"] == {
        "path": "test/test1/sort-and-change-case-test.yml",
        "test_engine": {"type": "planemo", "version": ">=0.70"},
    }
    assert [
        (i["roc_instance"], i["service"]["type"], i["service"]["url"], i["resource"])
        for i in suite["instances"]
    ] == [(f"#test1_{n}", *inst) for n, inst in enumerate(instances, 1)]
    for n, inst in enumerate(api_data.instance_uuids(wf)):
        api_data.store_builds(inst, [build(f"b{n}", "passed" if n else "failed", 20)])
    r = world.http.get(f"/workflows/{wf}/status?version=v0.1")
    assert r.json_body["aggregate_test_status"] == "some_passing"
    r = world.http.get(f"/workflows/{wf}")
    assert r.json_body["name"] == "Given name"
    assert r.json_body["version"]["name"] == "Given name"
    assert r.json_body["version"]["authors"] == [
        {"name": "Josiah Carberry", "url": "https://orcid.org/0000-0002-1825-0097"}
    ]
    check_download(world, api_data.ANONYMOUS, wf, "v0.1", data)
    delete_workflow(world, alice, wf)
    snapshot.unchanged()


def test_download_without_a_stored_copy_is_410(world, alice):
    wf = registered(
        api_data.submit(world.client, alice, {"rocrate": b64(crate("gone")), "version": "1"})
    )["uuid"]
    [path] = [p for p in stored_crates(world.data_dir) if p.parent.name == wf]
    path.unlink()
    r = world.http.get(f"/workflows/{wf}/rocrate/1/download", headers={**alice.headers, **ZIP})
    body = assert_problem(r, 410)
    assert "RO-Crate not found" in body["detail"]
    r = world.http.get(f"/workflows/{wf}/rocrate/1/metadata", headers=alice.headers)
    assert r.status_code == 200  # the metadata lives in the database
    delete_workflow(world, alice, wf)


def test_crate_without_tests_registers_with_no_suites(world, alice):
    data = crate("no-tests", with_tests=False)
    wf = registered(api_data.submit(world.client, alice, {"rocrate": b64(data), "version": "1"}))[
        "uuid"
    ]
    r = world.http.get(f"/workflows/{wf}/status", headers=alice.headers)
    assert r.json_body["aggregate_test_status"] == "not_available"
    assert r.json_body["reason"] == "No test suite configured for this workflow"
    assert world.http.get(f"/workflows/{wf}/suites", headers=alice.headers).json_body["items"] == []
    delete_workflow(world, alice, wf)


# -- names ---------------------------------------------------------------------------------


def _metadata(root_name=None, main_name="sort-and-change-case", main=True) -> dict:
    from emulators.crates import wtroc_metadata

    metadata = wtroc_metadata(name=root_name, with_tests=False)
    for entity in metadata["@graph"]:
        if entity["@id"] == "./":
            if root_name is None:
                entity.pop("name", None)
            if not main:
                entity.pop("mainEntity")
        if entity["@id"] == "sort-and-change-case.ga":
            if main_name is None:
                entity.pop("name")
            else:
                entity["name"] = main_name
    return metadata


def test_name_from_the_request_wins(world, alice):
    data = zip_crate(_metadata("Root name", "Main name"))
    body = registered(
        api_data.submit(
            world.client, alice, {"rocrate": b64(data), "version": "1", "name": "Request name"}
        )
    )
    assert body["name"] == "Request name"
    delete_workflow(world, alice, body["uuid"])


def test_name_fallback_prefers_main_entity(world, alice):
    data = zip_crate(_metadata("Root name", "Main name"))
    body = registered(api_data.submit(world.client, alice, {"rocrate": b64(data), "version": "1"}))
    try:
        assert body["name"] == "Main name"
    finally:
        delete_workflow(world, alice, body["uuid"])


def test_name_fallback_uses_main_entity_id_before_root_name(world, alice):
    data = zip_crate(_metadata("Root name", None))
    body = registered(api_data.submit(world.client, alice, {"rocrate": b64(data), "version": "1"}))
    try:
        assert body["name"] == "sort-and-change-case.ga"
    finally:
        delete_workflow(world, alice, body["uuid"])


def test_name_fallback_main_entity_then_its_id_then_root(world, alice):
    for metadata, expected in [
        (_metadata(None, "Main name"), "Main name"),
        (_metadata(None, None), "sort-and-change-case.ga"),
        (_metadata("Root name", main=False), "Root name"),
    ]:
        body = registered(
            api_data.submit(
                world.client, alice, {"rocrate": b64(zip_crate(metadata)), "version": "1"}
            )
        )
        assert body["name"] == expected
        delete_workflow(world, alice, body["uuid"])


def test_no_name_anywhere_is_400_and_writes_nothing(world, alice, snapshot):
    data = zip_crate(_metadata(None, None, main=False))
    body = assert_problem(
        api_data.submit(world.client, alice, {"rocrate": b64(data), "version": "1"}), 400
    )
    assert "Missing attribute 'name'" in f"{body['title']} {body['detail']}"
    snapshot.unchanged(ignore=())


# -- conflicts and ownership -----------------------------------------------------------------


def test_duplicate_workflow_version_is_409(world, alice, bob, snapshot):
    wf = str(uuidlib.uuid4())
    data = crate("dup")
    registered(
        api_data.submit(world.client, alice, {"rocrate": b64(data), "version": "1", "uuid": wf})
    )
    after_first = row_counts()
    r = api_data.submit(
        world.client, alice, {"rocrate": b64(crate("dup-2")), "version": "1", "uuid": wf}
    )
    body = assert_problem(r, 409)
    assert body["title"] == "Workflow version conflict"
    assert row_counts() == after_first
    # A second version is fine.
    registered(
        api_data.submit(
            world.client, alice, {"rocrate": b64(crate("dup-2")), "version": "2", "uuid": wf}
        ),
        "2",
    )
    r = world.http.get(f"/workflows/{wf}/versions", headers=alice.headers)
    assert sorted(v["version"] for v in r.json_body["versions"]) == ["1", "2"]
    delete_workflow(world, alice, wf)
    snapshot.unchanged()


def test_new_version_by_another_user_is_403(world, alice, bob, snapshot):
    wf = str(uuidlib.uuid4())
    registered(
        api_data.submit(
            world.client,
            alice,
            {"rocrate": b64(crate("mine")), "version": "1", "uuid": wf, "public": True},
        )
    )
    before = row_counts()
    r = api_data.submit(
        world.client, bob, {"rocrate": b64(crate("theirs")), "version": "2", "uuid": wf}
    )
    assert_problem(r, 403)
    assert row_counts() == before
    r = world.http.get(f"/workflows/{wf}/versions", headers=alice.headers)
    assert [v["version"] for v in r.json_body["versions"]] == ["1"]
    delete_workflow(world, alice, wf)
    snapshot.unchanged()


def test_conflict_does_not_reveal_someone_elses_private_workflow(world, alice, bob):
    wf = str(uuidlib.uuid4())
    registered(
        api_data.submit(
            world.client, alice, {"rocrate": b64(crate("hidden")), "version": "1", "uuid": wf}
        )
    )
    try:
        assert_problem(world.http.get(f"/workflows/{wf}", headers=bob.headers), 403)
        r = api_data.submit(
            world.client, bob, {"rocrate": b64(crate("probe")), "version": "1", "uuid": wf}
        )
        assert_problem(r, 403)
    finally:
        delete_workflow(world, alice, wf)


# -- roc_link ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("link", "reason"),
    [
        ("ftp://example.org/crate.zip", "http"),
        ("file:///etc/passwd", "http"),
        ("gopher://example.org/1", "http"),
        ("http://user:pw@example.org/crate.zip", "credentials"),
    ],
)
def test_roc_link_bad_scheme_or_credentials_is_400(world, alice, snapshot, link, reason):
    body = assert_problem(
        api_data.submit(world.client, alice, {"roc_link": link, "version": "1"}), 400
    )
    assert reason in body["detail"]
    snapshot.unchanged(ignore=())


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_roc_link_to_loopback_is_refused_without_allow_private(
    world, alice, snapshot, _server, host
):
    from chalicelib import http

    http.reset()
    _server.requests.clear()
    _server.files.clear()
    port = _server.url.rsplit(":", 1)[1]
    _server.add("/crate.zip", crate("private"))
    r = api_data.submit(
        world.client, alice, {"roc_link": f"http://{host}:{port}/crate.zip", "version": "1"}
    )
    body = assert_problem(r, 400)
    assert "private" in body["detail"] and "roc_link" in body["detail"]
    assert _server.requests == []
    snapshot.unchanged(ignore=())


def test_roc_link_errors_are_400_with_the_reason(world, alice, files, snapshot):
    # 400 as in LifeMonitor's spec and for WorkflowHub (issue 9, defect 8), not 422.
    files.add("/gone.zip", b"", status=404)
    files.add("/boom.zip", b"oops", status=500, content_type="text/plain")
    files.add("/secret.zip", crate("secret"), authorization="Bearer right")
    dead = f"http://127.0.0.1:{unused_port()}/crate.zip"
    for link, reason in [
        (files.url + "/gone.zip", "404"),
        (files.url + "/boom.zip", "500"),
        (files.url + "/secret.zip", "not authorized"),
        (dead, "cannot connect"),
    ]:
        r = api_data.submit(world.client, alice, {"roc_link": link, "version": "1"})
        body = assert_problem(r, 400)
        assert reason in body["detail"], (link, body)
        assert body["extra_info"]["field"] == "roc_link"
    assert len(files.received("/boom.zip")) == 1  # a 500 is not retried
    snapshot.unchanged(ignore=())


def test_roc_link_that_is_not_a_crate_is_400(world, alice, files, snapshot):
    files.add("/page.html", b"<html>hello</html>", content_type="text/html")
    body = assert_problem(
        api_data.submit(
            world.client, alice, {"roc_link": files.url + "/page.html", "version": "1"}
        ),
        400,
    )
    assert "zip" in body["detail"]
    snapshot.unchanged(ignore=())


def test_roc_link_authorization_is_sent_and_kept_as_a_secret(world, alice, files, snapshot):
    token = "Bearer s3cret-" + uuidlib.uuid4().hex
    data = crate("protected")
    link = files.add("/protected.zip", data, authorization=token)
    body = registered(
        api_data.submit(
            world.client, alice, {"roc_link": link, "version": "1", "authorization": token}
        )
    )
    [request] = files.received("/protected.zip")
    assert request.headers["authorization"] == token
    # In the parameter store (the secrets file under LM_DATA_DIR), not in the database.
    stored = api_data.secrets_file(world.data_dir)
    keys = [k for k, v in stored.items() if v == token]
    assert len(keys) == 1 and keys[0].endswith("/authorization"), stored
    assert token not in _database_dump()
    check_download(world, alice, body["uuid"], "1", data)
    delete_workflow(world, alice, body["uuid"])
    assert token not in api_data.secrets_file(world.data_dir).values()
    snapshot.unchanged()


def _database_dump() -> str:
    from sqlalchemy import select

    from chalicelib.db import get_engine
    from chalicelib.models import Base

    with get_engine().connect() as conn:
        return "\n".join(
            repr(row) for t in Base.metadata.sorted_tables for row in conn.execute(select(t))
        )


def test_roc_link_authorization_is_removed_with_the_version(world, alice, files):
    token = "Bearer v-" + uuidlib.uuid4().hex
    link = files.add("/v.zip", crate("versioned"), authorization=token)
    wf = registered(
        api_data.submit(
            world.client, alice, {"roc_link": link, "version": "1", "authorization": token}
        )
    )["uuid"]
    registered(
        api_data.submit(
            world.client, alice, {"rocrate": b64(crate("versioned")), "version": "2", "uuid": wf}
        ),
        "2",
    )
    assert token in api_data.secrets_file(world.data_dir).values()
    r = world.http.delete(f"/workflows/{wf}/versions/1", headers=alice.headers)
    assert r.status_code == 204, r.body
    assert token not in api_data.secrets_file(world.data_dir).values()
    delete_workflow(world, alice, wf)


# -- base64 uploads ---------------------------------------------------------------------------


def test_the_fixture_base64_text_registers(world, alice, shared_fixtures):
    folder = shared_fixtures / "rocrates" / "life_monitor"
    text = (folder / "rocrate.base64").read_text()
    data = (folder / "rocrate-base64-decoded.crate.zip").read_bytes()
    body = registered(api_data.submit(world.client, alice, {"rocrate": text, "version": "1"}))
    check_download(world, alice, body["uuid"], "1", data)
    delete_workflow(world, alice, body["uuid"])


def test_line_wrapped_base64_is_accepted(world, alice):
    import base64

    data = crate("wrapped")
    wrapped = base64.encodebytes(data).decode()
    assert "\n" in wrapped.strip()
    r = api_data.submit(world.client, alice, {"rocrate": wrapped, "version": "1"})
    body = registered(r)
    check_download(world, alice, body["uuid"], "1", data)
    delete_workflow(world, alice, body["uuid"])


# -- bad uploads ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rocrate", "reason"),
    [
        ("not base64 at all!", "base64"),
        (b64(b"hello, I am not a zip"), "zip"),
        (b64(zip_members([("README.md", "no metadata here")])), "ro-crate-metadata"),
        (b64(zip_crate(b"{not json")), "JSON"),
    ],
)
def test_bad_upload_is_400(world, alice, snapshot, rocrate, reason):
    body = assert_problem(
        api_data.submit(world.client, alice, {"rocrate": rocrate, "version": "1"}), 400
    )
    assert reason in body["detail"]
    snapshot.unchanged(ignore=())


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"version": "1"}, 400),  # no crate at all
        ({"rocrate": b64(crate("x"))}, 400),  # no version
        ({"rocrate": b64(crate("x")), "version": "1", "uuid": "not-a-uuid"}, 400),
        ({"rocrate": b64(crate("x")), "version": "1", "public": "yes"}, 400),
        (
            {"rocrate": b64(crate("x")), "roc_link": "https://example.org/x.zip", "version": "1"},
            400,
        ),
        ({"identifier": "21", "version": "1"}, 400),  # registry ids are not for this endpoint
    ],
)
def test_bad_request_body_is_400(world, alice, snapshot, body, status):
    assert_problem(api_data.submit(world.client, alice, body), status)
    snapshot.unchanged(ignore=())


# -- PUT and DELETE of versions -------------------------------------------------------------


def test_put_version_with_a_changed_crate_rebuilds_suites(world, alice, snapshot):
    first = crate("evolving", instances=[("jenkins", "https://ci.example/j/", "job/a/")])
    wf = registered(api_data.submit(world.client, alice, {"rocrate": b64(first), "version": "1"}))[
        "uuid"
    ]
    [old_instance] = api_data.instance_uuids(wf)
    api_data.store_builds(old_instance, [build("1", "failed")])
    old_suite = world.http.get(f"/workflows/{wf}/suites", headers=alice.headers).json_body["items"][
        0
    ]["uuid"]

    # Unchanged crate: 204, nothing rebuilt.
    r = world.http.put(
        f"/workflows/{wf}/versions/1",
        headers=alice.json(),
        body=json.dumps({"rocrate": b64(first)}),
    )
    assert r.status_code == 204, r.body
    assert api_data.instance_uuids(wf) == [old_instance]

    second = crate(
        "evolving",
        instances=[
            ("github", "https://api.github.com", "repos/o/r/actions/workflows/ci.yml"),
            ("travis", "https://api.travis-ci.com", "github/o/r"),
        ],
    )
    r = world.http.put(
        f"/workflows/{wf}/versions/1",
        headers=alice.json(),
        body=json.dumps({"rocrate": b64(second)}),
    )
    body = registered(r)
    assert body["uuid"] == wf
    suites = world.http.get(f"/workflows/{wf}/suites", headers=alice.headers).json_body["items"]
    assert [i["service"]["type"] for s in suites for i in s["instances"]] == ["github", "travis"]
    assert_problem(world.http.get(f"/suites/{old_suite}", headers=alice.headers), 404)
    assert_problem(world.http.get(f"/instances/{old_instance}", headers=alice.headers), 404)
    r = world.http.get(f"/workflows/{wf}/status", headers=alice.headers)
    assert r.json_body["aggregate_test_status"] == "not_available"  # the old build went too
    r = world.http.get(f"/workflows/{wf}/rocrate/1/metadata", headers=alice.headers)
    assert r.json_body == metadata_of(second)
    check_download(world, alice, wf, "1", second)
    assert len(stored_crates(world.data_dir)) == len(snapshot.crates) + 1
    delete_workflow(world, alice, wf)
    snapshot.unchanged()


def test_put_version_by_roc_link_with_the_same_bytes_is_204(world, alice, files):
    data = crate("same")
    link = files.add("/same.zip", data)
    wf = registered(api_data.submit(world.client, alice, {"rocrate": b64(data), "version": "1"}))[
        "uuid"
    ]
    r = world.http.put(
        f"/workflows/{wf}/versions/1",
        headers=alice.json(),
        body=json.dumps({"roc_link": link, "name": "Renamed"}),
    )
    assert r.status_code == 204, r.body
    assert len(files.received("/same.zip")) == 1
    r = world.http.get(f"/workflows/{wf}", headers=alice.headers)
    assert r.json_body["name"] == "Renamed"
    delete_workflow(world, alice, wf)


def test_put_and_delete_need_the_owner(world, alice, bob):
    body = {"rocrate": b64(crate("owned")), "version": "1", "public": True, "name": "owned"}
    wf = registered(api_data.submit(world.client, alice, body))["uuid"]
    for method, path, body in [
        ("put", f"/workflows/{wf}", {"name": "hijacked", "public": False}),
        ("put", f"/workflows/{wf}/versions/1", {"name": "hijacked"}),
        ("delete", f"/workflows/{wf}/versions/1", None),
        ("delete", f"/workflows/{wf}", None),
    ]:
        r = getattr(world.http, method)(
            path, headers=bob.json(), body=json.dumps(body) if body else b""
        )
        assert_problem(r, 403)
    r = world.http.get(f"/workflows/{wf}")
    assert (r.json_body["name"], r.json_body["public"]) == ("owned", True)
    delete_workflow(world, alice, wf)


def test_delete_versions_then_the_workflow(world, alice, snapshot):
    wf = str(uuidlib.uuid4())
    v1, v2 = (
        crate("two-versions"),
        crate(
            "two-versions",
            instances=[
                ("jenkins", "https://ci.example/j/", "job/a/"),
                ("jenkins", "https://ci.example/j/", "job/b/"),
            ],
        ),
    )
    registered(
        api_data.submit(world.client, alice, {"rocrate": b64(v1), "version": "1", "uuid": wf})
    )
    registered(
        api_data.submit(world.client, alice, {"rocrate": b64(v2), "version": "2", "uuid": wf}), "2"
    )
    for inst in api_data.instance_uuids(wf):
        api_data.store_builds(inst, [build("7", "passed")])
    assert len(stored_crates(world.data_dir)) == len(snapshot.crates) + 2
    with_two = row_counts()

    r = world.http.delete(f"/workflows/{wf}/versions/1", headers=alice.headers)
    assert r.status_code == 204, r.body
    after = row_counts()
    assert after["workflow_versions"] == with_two["workflow_versions"] - 1
    assert after["test_instances"] == with_two["test_instances"] - 1
    assert after["builds"] == with_two["builds"] - 1
    assert after["workflows"] == with_two["workflows"]
    assert len(stored_crates(world.data_dir)) == len(snapshot.crates) + 1
    assert_problem(world.http.get(f"/workflows/{wf}/versions/1", headers=alice.headers), 404)
    r = world.http.get(f"/workflows/{wf}", headers=alice.headers)
    assert r.json_body["version"]["version"] == "2"
    check_download(world, alice, wf, "2", v2)

    # The last version takes the workflow with it.
    r = world.http.delete(f"/workflows/{wf}/versions/2", headers=alice.headers)
    assert r.status_code == 204, r.body
    assert_problem(world.http.get(f"/workflows/{wf}", headers=alice.headers), 404)
    snapshot.unchanged()


def test_delete_workflow_removes_every_version(world, alice, snapshot):
    wf = str(uuidlib.uuid4())
    for version in ("1", "2", "3"):
        registered(
            api_data.submit(
                world.client, alice, {"rocrate": b64(crate("many")), "version": version, "uuid": wf}
            ),
            version,
        )
    for inst in api_data.instance_uuids(wf):
        api_data.store_builds(inst, [build("1", "passed")])
    delete_workflow(world, alice, wf)
    snapshot.unchanged()


def test_a_deleted_workflows_ci_url_accepts_another_type(world, alice):
    url = f"https://ci-{uuidlib.uuid4().hex[:8]}.example/"
    first = registered(
        api_data.submit(
            world.client,
            alice,
            {
                "rocrate": b64(crate("first", instances=[("travis", url, "github/o/r")])),
                "version": "1",
            },
        )
    )
    delete_workflow(world, alice, first["uuid"])
    from chalicelib.db import session_scope
    from chalicelib.models import TestingService

    with session_scope() as s:  # what the autouse cleanup would hide
        assert s.query(TestingService).filter_by(url=url).count() == 1
    r = api_data.submit(
        world.client,
        alice,
        {"rocrate": b64(crate("second", instances=[("jenkins", url, "job/x/")])), "version": "1"},
    )
    assert r.status_code == 201, r.body
    delete_workflow(world, alice, r.json_body["uuid"])


# -- issue 9, defect 8 ------------------------------------------------------------------------


def test_roc_link_query_is_not_shown_as_origin(world, alice, files):
    link = files.add("/crate.zip", crate("with-token")) + "?token=s3cret&x=1#frag"
    r = api_data.submit(world.client, alice, {"roc_link": link, "version": "1"})
    assert r.status_code == 201, r.body
    wf_uuid = r.json_body["uuid"]
    try:
        assert files.received("/crate.zip")[0].query == {"token": ["s3cret"], "x": ["1"]}
        body = world.http.get(f"/workflows/{wf_uuid}", headers=alice.headers).json_body
        assert body["version"]["ro_crate"]["links"]["origin"] == files.url + "/crate.zip"
        assert body["version"]["links"]["origin"] == files.url + "/crate.zip"
        assert "s3cret" not in json.dumps(body)
    finally:
        api_data.delete_workflow_rows(wf_uuid)


def test_origin_stored_with_a_query_before_is_not_shown(world, alice, files):
    from chalicelib.db import session_scope
    from chalicelib.models import Workflow, WorkflowVersion

    r = api_data.submit(world.client, alice, {"rocrate": b64(crate("old-row")), "version": "1"})
    wf_uuid = r.json_body["uuid"]
    try:
        with session_scope() as s:
            version = s.query(WorkflowVersion).join(Workflow).filter(Workflow.uuid == wf_uuid).one()
            version.crate_origin = "https://hub.example/crate.zip?token=s3cret"
        body = world.http.get(f"/workflows/{wf_uuid}", headers=alice.headers).json_body
        assert body["version"]["ro_crate"]["links"]["origin"] == "https://hub.example/crate.zip"
    finally:
        api_data.delete_workflow_rows(wf_uuid)


@pytest.mark.parametrize(
    "url",
    ["file:///var/lib/jenkins", "gopher://ci.example/1", "https://admin:hunter2@ci.example/"],
)
def test_crates_naming_unfetchable_service_urls_are_refused_at_submission(
    world, alice, snapshot, url
):
    data = crate("bad-url", instances=[("jenkins", url, "job/x/")])
    r = api_data.submit(world.client, alice, {"rocrate": b64(data), "version": "1"})
    body = assert_problem(r, 422)
    assert body["extra_info"]["field"] == "url"
    assert "hunter2" not in json.dumps(body)
    snapshot.unchanged(ignore=())


@pytest.mark.parametrize("size", [1025, 12 * 1024 * 1024], ids=["just-over", "12MB"])
def test_over_long_workflow_names_are_refused(world, alice, snapshot, size):
    name = "n" * size
    r = api_data.submit(
        world.client, alice, {"rocrate": b64(crate("short")), "version": "1", "name": name}
    )
    assert assert_problem(r, 400)["extra_info"]["field"] == "name"
    metadata = wtroc_metadata(name=name)
    metadata["@graph"][2]["name"] = name  # the main workflow's name is the one taken
    r = api_data.submit(world.client, alice, {"rocrate": b64(zip_crate(metadata)), "version": "1"})
    if size > 1024 * 1024:  # over the metadata cap before the name is even read
        assert "metadata file is" in assert_problem(r, 400)["detail"]
    else:
        assert assert_problem(r, 422)["extra_info"]["field"] == "name"
    snapshot.unchanged(ignore=())


def test_over_long_names_are_refused_on_updates(world, alice):
    r = api_data.submit(world.client, alice, {"rocrate": b64(crate("rename")), "version": "1"})
    wf_uuid = r.json_body["uuid"]
    try:
        name = json.dumps({"name": "n" * 1025}).encode()
        for path in (f"/workflows/{wf_uuid}", f"/workflows/{wf_uuid}/versions/1"):
            r = world.http.put(path, headers=alice.json(), body=name)
            assert assert_problem(r, 400)["extra_info"]["field"] == "name"
        ok = json.dumps({"name": "n" * 1024}).encode()
        assert (
            world.http.put(f"/workflows/{wf_uuid}", headers=alice.json(), body=ok).status_code
            == 204
        )
    finally:
        api_data.delete_workflow_rows(wf_uuid)


# -- issue 9, defect 2: a testing service is its type and URL ---------------------------------

GH_RESOURCE = "repos/crs4/life_monitor/actions/workflows/docs.yaml"


def _services_at(url: str) -> list[tuple[str, str]]:
    from chalicelib.db import session_scope
    from chalicelib.models import TestingService

    with session_scope() as s:
        rows = s.query(TestingService.type, TestingService.url).filter_by(url=url)
        return sorted(tuple(r) for r in rows)


def _instance_types(wf_uuid: str) -> list[str]:
    from chalicelib.db import session_scope
    from chalicelib.models import TestingService, TestInstance

    uuids = api_data.instance_uuids(wf_uuid)
    with session_scope() as s:
        rows = (
            s.query(TestingService.type)
            .join(TestInstance, TestInstance.testing_service_id == TestingService.id)
            .filter(TestInstance.uuid.in_(uuids))
        )
        return [t for (t,) in rows]


@pytest.mark.parametrize(
    ("url", "real", "resource"),
    [
        ("https://api.github.com", "github", GH_RESOURCE),
        ("https://github.com", "github", GH_RESOURCE),
        ("https://api.travis-ci.com", "travis", "github/crs4/pydoop"),
        ("https://api.travis-ci.org", "travis", "github/crs4/pydoop"),
        ("https://gitlab.com", "gitlab", "group/project"),
    ],
)
def test_a_crate_cannot_claim_another_type_for_a_well_known_host(
    world, alice, bob, url, real, resource
):
    created = []
    try:
        bad = crate("claim", instances=[("jenkins", url, "job/x/")])
        r = api_data.submit(world.client, bob, {"rocrate": b64(bad), "version": "1"})
        body = assert_problem(r, 422)  # bob's own crate is refused ...
        assert body["extra_info"]["field"] == "url"
        assert ("jenkins", url) not in _services_at(url)
        # ... and every other user's crate naming that host still registers.
        good = crate("real", instances=[(real, url, resource)])
        r = api_data.submit(world.client, alice, {"rocrate": b64(good), "version": "1"})
        assert r.status_code == 201, r.body
        created.append(r.json_body["uuid"])
        assert _instance_types(created[0]) == [real]
    finally:
        for wf_uuid in created:
            api_data.delete_workflow_rows(wf_uuid)


def test_two_types_at_one_url_are_two_services_and_nobody_is_blocked(world, alice, bob):
    url = f"https://ci-{uuidlib.uuid4().hex[:8]}.example"
    created = []
    try:
        first = crate("as-jenkins", instances=[("jenkins", url, "job/x/")])
        r = api_data.submit(world.client, bob, {"rocrate": b64(first), "version": "1"})
        assert r.status_code == 201, r.body
        created.append(r.json_body["uuid"])
        second = crate("as-github", instances=[("github", url, GH_RESOURCE)])
        r = api_data.submit(world.client, alice, {"rocrate": b64(second), "version": "1"})
        assert r.status_code == 201, r.body  # was 422 "already registered as 'jenkins'"
        created.append(r.json_body["uuid"])
        assert _services_at(url) == [("github", url), ("jenkins", url)]
        assert _instance_types(created[0]) == ["jenkins"]
        assert _instance_types(created[1]) == ["github"]
        # The same type and URL again shares the service.
        third = crate("as-jenkins-too", instances=[("jenkins", url, "job/y/")])
        r = api_data.submit(world.client, alice, {"rocrate": b64(third), "version": "1"})
        assert r.status_code == 201, r.body
        created.append(r.json_body["uuid"])
        assert _services_at(url) == [("github", url), ("jenkins", url)]
    finally:
        for wf_uuid in created:
            api_data.delete_workflow_rows(wf_uuid)


# -- issue 9, defect 8: downloads without an Accept header; HEAD ------------------------------


@pytest.mark.parametrize("accept", [None, "*/*", "application/zip", "*/*;q=0.8"])
def test_download_without_a_binary_accept_header_gets_the_zip(world, alice, accept):
    data = crate("download")
    r = api_data.submit(world.client, alice, {"rocrate": b64(data), "version": "1"})
    wf_uuid = r.json_body["uuid"]
    try:
        headers = dict(alice.headers)
        if accept is not None:
            headers["Accept"] = accept
        got = world.http.get(f"/workflows/{wf_uuid}/rocrate/1/download", headers=headers)
        assert got.status_code == 200, got.body[:300]
        assert got.body == data
        ctype = {k.lower(): v for k, v in got.headers.items()}["content-type"]
        assert ctype == "application/zip"
        url = f"/workflows/{wf_uuid}/rocrate/1/download"
        head = world.http.request("HEAD", url, headers=headers, body=b"")
        assert (head.status_code, head.body) == (200, b"")
        assert {k.lower(): v for k, v in head.headers.items()}["content-type"] == ctype
    finally:
        api_data.delete_workflow_rows(wf_uuid)
