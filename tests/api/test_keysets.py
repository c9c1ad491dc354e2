"""The exact keys of every read response (contract §1.4 envelopes, §1.5 shapes), plus our
documented additions: ISO-8601 `started_at`/`finished_at` and `duration_seconds` on builds,
`last_checked`/`last_error` on instances when set.

`meta` is `{api_version, base_url, resource, created, modified}` with epoch-second floats (or
null, always null on lists); lists are `{meta, links, items}` and their items never carry
`meta`. BuildSummary `timestamp` is a string of epoch seconds and `duration` an integer of
seconds, whatever the CI.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.support import api_data
from tests.support.api_data import NOW, b64, crate

BASE = "http://lm.test"
META = {"api_version", "base_url", "resource", "created", "modified"}
LIST = {"meta", "links", "items"}
REGISTRY_ITEM = {"uuid", "identifier", "uri", "type", "name"}
LIST_ITEM = {"uuid", "name", "public", "latest_version"}
STATUS = {"aggregate_test_status", "latest_builds"}
VERSION_ITEM = {"uuid", "version", "ro_crate", "is_latest"}
CRATE_LINKS = {"origin", "metadata", "download", "registries"}
VERSION_LINKS = {"origin", "registries"}
# `registries` is checked apart (test_ro_crate_links_always_carry_registries).
CRATE_LINKS_BUT_REGISTRIES = CRATE_LINKS - {"registries"}
VERSION = {"uuid", "name", "version", "is_latest", "submitter", "authors", "ro_crate", "links"}
DETAILS = {"meta", "links", "uuid", "name", "public", "registries", "version"}
SUITE = {"uuid", "roc_suite", "name", "definition", "instances"}
INSTANCE = {"uuid", "roc_instance", "name", "resource", "managed", "service", "links"}
SERVICE = {"uuid", "url", "type"}
ADDED_INSTANCE = {"last_checked", "last_error"}
BUILD = {"build_id", "suite_uuid", "status", "instance", "timestamp", "duration", "links"}
ADDED_BUILD = {"started_at", "finished_at", "duration_seconds"}
SUBSCRIPTION = {"user", "resource", "created", "modified", "events"}
STATUSES = {"all_passing", "some_passing", "all_failing", "not_available"}
CHECKED: set[str] = set()  # instances with last_checked/last_error set

# One instance per CI; the build of each: (id, status, minutes before NOW, seconds).
CIS = [
    ("jenkins", "https://ci.example/jenkins/", "job/wf/"),
    ("github", "https://api.github.com", "repos/o/r/actions/workflows/ci.yml"),
    ("travis", "https://api.travis-ci.com", "github/o/r"),
    ("gitlab", "https://gitlab.example", "projects/o%2Fr/pipelines"),
]
BUILDS = {
    "jenkins": ("101", "passed", 30, 61.4),
    "github": ("7_2", "failed", 45, 122.6),
    "travis": ("9001", "error", 50, 0.4),
    "gitlab": ("55", "passed", 70, 3600.0),
}


@pytest.fixture(scope="module")
def world(database_url, chalice_app, tmp_path_factory):
    with api_data.open_world(database_url, chalice_app, tmp_path_factory) as w:
        d = w.data
        d["alice"] = alice = api_data.make_user("alice")
        d["reg"] = reg = api_data.make_registry(
            w.client, "WorkflowHub", "wfh-app", client_name="wfhub"
        )
        api_data.link_identity(
            alice.user_id,
            reg.registry_id,
            "wfhub",
            "2",
            {"name": "Alice A.", "email": "alice@hub.example", "username": "alice-hub"},
        )
        # Two versions submitted by the registry for alice; the second has one instance per
        # CI with one build each.
        first = api_data.submit(
            w.client,
            reg,
            {
                "rocrate": b64(crate("keys")),
                "version": "1",
                "public": True,
                "user_id": alice.user_id,
            },
            path="/registries/current/workflows",
        )
        assert first.status_code == 201, first.body
        d["registered"] = first.json_body
        d["wf"] = wf = first.json_body["uuid"]
        second = api_data.submit(
            w.client,
            reg,
            {
                "rocrate": b64(crate("keys", instances=CIS)),
                "version": "2",
                "uuid": wf,
                "user_id": alice.user_id,
            },
            path="/registries/current/workflows",
        )
        assert second.status_code == 201, second.body
        d["instances"] = instances = api_data.instance_uuids(wf, "2")
        for (ci, _, _), inst in zip(CIS, instances, strict=True):
            build_id, status, ago, seconds = BUILDS[ci]
            api_data.store_builds(inst, [api_data.build(build_id, status, ago, duration=seconds)])
        _mark_checked(instances[0])
        CHECKED.add(instances[0])
        # A user's own upload, with no registry, whose crate declares isBasedOn.
        own = api_data.submit(
            w.client,
            alice,
            {"rocrate": b64(crate("own", with_tests=False, based_on=True)), "version": "1"},
        )
        assert own.status_code == 201, own.body
        d["own"] = own.json_body["uuid"]
        yield w


def _mark_checked(instance_uuid: str) -> None:
    from chalicelib.db import session_scope
    from chalicelib.models import TestInstance

    with session_scope() as s:
        inst = s.query(TestInstance).filter_by(uuid=instance_uuid).one()
        inst.last_checked_at = NOW
        inst.last_error = "HTTP 502 from ci.example"


@pytest.fixture(autouse=True)
def _world_env(world, monkeypatch):
    world.activate(monkeypatch)


def get(world, path: str, who: str | None = "alice") -> dict:
    headers = world.data[who].headers if who else {}
    r = world.http.get(path, headers=headers)
    assert r.status_code == 200, r.body
    return r.json_body


def check_single(body: dict, path: str) -> None:
    """`meta` and `links.self` of a single resource."""
    assert set(body["meta"]) == META
    assert body["meta"]["api_version"] == "0.15.0"
    assert body["meta"]["base_url"] == BASE
    assert body["meta"]["resource"] == path
    for key in ("created", "modified"):
        assert body["meta"][key] is None or isinstance(body["meta"][key], float)
    assert body["links"]["self"] == BASE + path


def check_list(body: dict, path: str, links_null: bool = False) -> list[dict]:
    assert set(body) == LIST
    assert set(body["meta"]) == META
    assert body["meta"]["resource"] == path
    assert body["meta"]["created"] is None and body["meta"]["modified"] is None
    assert body["links"] == (None if links_null else {"self": BASE + path})
    for item in body["items"]:
        assert "meta" not in item
    return body["items"]


def check_instance(item: dict, *, nested: bool = True) -> None:
    expected = INSTANCE | ({"meta"} if not nested else set())
    if item["uuid"] in CHECKED:  # the instance whose refresh recorded a time and an error
        expected |= ADDED_INSTANCE
    assert set(item) == expected, item
    assert set(item["service"]) == SERVICE
    assert set(item["links"]) == ({"origin"} if nested else {"origin", "self"})
    assert isinstance(item["managed"], bool)


def check_build(item: dict, *, links: bool = True) -> None:
    expected = (BUILD if links else BUILD - {"links"}) | ADDED_BUILD
    assert set(item) == expected, item
    if links:
        assert set(item["links"]) == {"origin"}
    check_instance(item["instance"])
    assert isinstance(item["timestamp"], str) and item["timestamp"].isdigit()
    assert isinstance(item["duration"], int)
    for key in ("started_at", "finished_at"):
        datetime.fromisoformat(item[key].replace("Z", "+00:00"))
    assert isinstance(item["duration_seconds"], float)


# -- registries ---------------------------------------------------------------------------------


def test_registries(world):
    items = check_list(get(world, "/registries", None), "/registries")
    assert [set(i) for i in items] == [REGISTRY_ITEM]
    uuid = items[0]["uuid"]
    body = get(world, f"/registries/{uuid}", None)
    check_single(body, f"/registries/{uuid}")
    assert set(body) == REGISTRY_ITEM | {"meta", "links"}
    assert isinstance(body["meta"]["created"], float)


# -- workflow lists -------------------------------------------------------------------------


def _item(world, path, who="alice") -> dict:
    items = check_list(get(world, path, who), path)
    [item] = [i for i in items if i["uuid"] == world.data["wf"]]
    return item


def test_workflow_list_plain(world):
    item = _item(world, "/workflows")
    assert set(item) == LIST_ITEM
    assert item["latest_version"] == "2"


def test_workflow_list_with_status(world):
    item = _item(world, "/workflows?status=true")
    assert set(item) == LIST_ITEM | {"status"}
    assert set(item["status"]) == STATUS
    assert item["status"]["aggregate_test_status"] == "some_passing"
    assert len(item["status"]["latest_builds"]) == 1
    check_build(item["status"]["latest_builds"][0])


def test_workflow_list_with_versions(world):
    item = _item(world, "/workflows?versions=true")
    assert set(item) == LIST_ITEM | {"versions"}
    assert [v["version"] for v in item["versions"]] == ["2", "1"]
    for v in item["versions"]:
        assert set(v) == VERSION_ITEM
        assert set(v["ro_crate"]) == {"links"}
        assert set(v["ro_crate"]["links"]) - {"registries"} == CRATE_LINKS_BUT_REGISTRIES


def test_workflow_list_with_subscriptions(world):
    item = _item(world, "/workflows?subscriptions=true")
    assert set(item) == LIST_ITEM | {"subscriptions"}
    [sub] = item["subscriptions"]
    assert set(sub) == SUBSCRIPTION
    assert set(sub["user"]) == {"id", "username"}
    assert sub["resource"] == {"uuid": world.data["wf"], "type": "workflow"}


def test_registry_workflows_with_status_and_versions(world):
    item = _item(world, "/registries/current/workflows?status=true&versions=true", "reg")
    assert set(item) == LIST_ITEM | {"status", "versions"}
    for v in item["versions"]:
        assert set(v) == VERSION_ITEM | {"status"}
        assert STATUS <= set(v["status"]) <= STATUS | {"reason"}
        assert v["status"]["aggregate_test_status"] in STATUSES
    first = next(v for v in item["versions"] if v["version"] == "1")
    assert first["status"]["reason"] == "No build found for instance test1_1"
    for b in item["status"]["latest_builds"]:
        check_build(b)


# -- one workflow ---------------------------------------------------------------------------


def _check_version(version: dict) -> None:
    assert set(version) == VERSION
    assert set(version["submitter"]) == {"id", "username"}
    assert set(version["ro_crate"]) == {"links"}
    assert set(version["ro_crate"]["links"]) == CRATE_LINKS
    assert set(version["links"]) == VERSION_LINKS
    for author in version["authors"]:
        assert set(author) == {"name", "url"}


def test_workflow_details(world):
    wf = world.data["wf"]
    body = get(world, f"/workflows/{wf}")
    check_single(body, f"/workflows/{wf}")
    assert set(body) == DETAILS | {"subscriptions"}
    assert [set(r) for r in body["registries"]] == [REGISTRY_ITEM]
    _check_version(body["version"])
    assert isinstance(body["meta"]["created"], float)
    # A registry has no subscriptions.
    assert set(get(world, f"/workflows/{wf}", "reg")) == DETAILS


def test_workflow_details_with_crate_and_previous_versions(world):
    wf = world.data["wf"]
    path = f"/workflows/{wf}?ro_crate=true&previous_versions=true"
    body = get(world, path)
    check_single(body, path)
    assert set(body) == DETAILS | {"subscriptions", "previous_versions"}
    assert set(body["version"]["ro_crate"]) == {"links", "metadata"}
    assert "@graph" in body["version"]["ro_crate"]["metadata"]
    [previous] = body["previous_versions"]
    assert set(previous) == {"uuid", "version", "ro_crate"}
    assert previous["version"] == "1"
    assert set(previous["ro_crate"]["links"]) - {"registries"} == CRATE_LINKS_BUT_REGISTRIES


def test_workflow_version_details(world):
    wf = world.data["wf"]
    body = get(world, f"/workflows/{wf}/versions/1")
    assert set(body) == DETAILS | {"subscriptions"}
    assert body["version"]["version"] == "1" and body["version"]["is_latest"] is False
    _check_version(body["version"])


def test_versions_list(world):
    wf = world.data["wf"]
    body = get(world, f"/workflows/{wf}/versions")
    check_single(body, f"/workflows/{wf}/versions")
    assert set(body) == {"meta", "links", "workflow", "versions"}
    assert body["workflow"] == {
        "uuid": wf,
        "name": "sort-and-change-case",  # the main entity's name (contract §5 fallback)
        "links": {"self": f"{BASE}/workflows/{wf}"},
    }
    for v in body["versions"]:
        assert set(v) == {"uuid", "version", "ro_crate", "is_latest", "submitter", "authors"}
        assert set(v["ro_crate"]["links"]) - {"registries"} == CRATE_LINKS_BUT_REGISTRIES


def test_status(world):
    wf = world.data["wf"]
    body = get(world, f"/workflows/{wf}/status")
    check_single(body, f"/workflows/{wf}/status")
    assert set(body) - {"subscriptions"} == DETAILS | STATUS  # see test_status_subscriptions
    assert body["aggregate_test_status"] == "some_passing"
    assert len(body["latest_builds"]) == len(CIS)
    for b in body["latest_builds"]:
        check_build(b, links=False)
    body = get(world, f"/workflows/{wf}/status?version=1")
    assert set(body) - {"subscriptions"} == DETAILS | STATUS | {"reason"}
    assert body["aggregate_test_status"] == "not_available"
    # A registry has no subscriptions.
    assert set(get(world, f"/workflows/{wf}/status", "reg")) == DETAILS | STATUS


def test_status_subscriptions(world):
    body = get(world, f"/workflows/{world.data['wf']}/status")
    assert set(body) == DETAILS | {"subscriptions"} | STATUS


@pytest.mark.parametrize(("ci", "index"), [(ci, n) for n, (ci, _, _) in enumerate(CIS)])
def test_build_times_are_seconds_for_every_ci(world, ci, index):
    inst = world.data["instances"][index]
    build_id, status, ago, seconds = BUILDS[ci]
    path = f"/instances/{inst}/builds/{build_id}"
    body = get(world, path)
    assert set(body) == BUILD | ADDED_BUILD | {"meta"}
    assert set(body["meta"]) == META and body["meta"]["resource"] == path
    assert isinstance(body["meta"]["created"], float)
    assert {"origin"} <= set(body["links"]) <= {"origin", "self"}
    started = NOW - timedelta(minutes=ago)
    assert body["timestamp"] == str(int(started.timestamp()))
    assert body["duration"] == round(seconds) and isinstance(body["duration"], int)
    assert body["duration_seconds"] == seconds
    assert datetime.fromisoformat(body["started_at"].replace("Z", "+00:00")) == started
    assert datetime.fromisoformat(
        body["finished_at"].replace("Z", "+00:00")
    ) == started + timedelta(seconds=seconds)
    assert body["status"] == status
    assert body["instance"]["service"]["type"] == ci


# -- suites, instances, builds ----------------------------------------------------------------


def _suite(world) -> dict:
    wf = world.data["wf"]
    [suite] = check_list(get(world, f"/workflows/{wf}/suites"), f"/workflows/{wf}/suites")
    return suite


@pytest.mark.parametrize(
    ("query", "extra"),
    [
        ("", set()),
        ("?status=true", {"aggregate_test_status"}),
        ("?latest_builds=true", {"latest_builds"}),
        ("?status=true&latest_builds=true", {"aggregate_test_status", "latest_builds"}),
    ],
)
def test_suites_list_and_single(world, query, extra):
    wf = world.data["wf"]
    path = f"/workflows/{wf}/suites{query}"
    [item] = check_list(get(world, path), path)
    assert set(item) == SUITE | extra
    assert set(item["definition"]) == {"path", "test_engine"}
    assert set(item["definition"]["test_engine"]) == {"type", "version"}
    for inst in item["instances"]:
        check_instance(inst)
    for b in item.get("latest_builds", []):
        check_build(b)
    path = f"/suites/{item['uuid']}{query}"
    body = get(world, path)
    check_single(body, path)
    assert set(body) == SUITE | extra | {"meta", "links"}


def test_suite_status(world):
    suite = _suite(world)
    path = f"/suites/{suite['uuid']}/status"
    body = get(world, path)
    check_single(body, path)
    assert set(body) == {"meta", "links", "suite_uuid", "aggregate_test_status", "latest_builds"}
    for b in body["latest_builds"]:
        check_build(b)


def test_instances_list_and_single(world):
    suite = _suite(world)
    path = f"/suites/{suite['uuid']}/instances"
    items = check_list(get(world, path), path)
    assert len(items) == len(CIS)
    for item in items:
        check_instance(item)
    [checked] = [i for i in items if i["uuid"] in CHECKED]
    assert checked["last_error"] == "HTTP 502 from ci.example"
    datetime.fromisoformat(checked["last_checked"].replace("Z", "+00:00"))
    for item in items:
        body = get(world, f"/instances/{item['uuid']}")
        assert set(body["meta"]) == META
        check_instance(body, nested=False)
        assert body["links"]["self"] == f"{BASE}/instances/{item['uuid']}"


def test_latest_builds(world):
    inst = world.data["instances"][1]
    path = f"/instances/{inst}/latest-builds"
    [item] = check_list(get(world, path), path)
    check_build(item)
    assert item["build_id"] == BUILDS["github"][0]


# -- users ------------------------------------------------------------------------------------


def test_user_profile(world):
    body = get(world, "/users/current")
    check_single(body, "/users/current")
    assert set(body) == {"meta", "links", "id", "username", "identities"}
    assert set(body["identities"]) == {"lifemonitor", "wfhub"}
    lm = body["identities"]["lifemonitor"]
    assert set(lm) == {"sub", "username", "picture", "provider"}
    assert set(lm["provider"]) == {"name", "type", "uri", "userinfo_endpoint"}
    assert set(body["identities"]["wfhub"]) == {
        "sub",
        "name",
        "username",
        "email",
        "mbox_sha1sum",
        "profile",
        "picture",
        "provider",
    }


def test_user_profile_identity_provider_keys(world):
    provider = get(world, "/users/current")["identities"]["wfhub"]["provider"]
    assert set(provider) == {"uuid", "name", "type", "uri", "userinfo_endpoint"}


def test_subscriptions(world):
    body = get(world, "/users/current/subscriptions")
    items = check_list(body, "/users/current/subscriptions", links_null=True)
    assert items and all(set(i) == SUBSCRIPTION for i in items)


def test_registered_body(world):
    body = world.data["registered"]
    assert set(body) == {"uuid", "wf_version", "name", "meta"}
    assert set(body["meta"]) == {"created", "modified"}
    assert all(isinstance(v, float) for v in body["meta"].values())


# -- a user's own upload ------------------------------------------------------------------------


def test_ro_crate_links_always_carry_registries(world):
    wf, own = world.data["wf"], world.data["own"]
    places = []
    item = _item(world, "/workflows?versions=true")
    places += [("list", v["ro_crate"]["links"]) for v in item["versions"]]
    body = get(world, f"/workflows/{wf}?previous_versions=true")
    places += [("previous", v["ro_crate"]["links"]) for v in body["previous_versions"]]
    body = get(world, f"/workflows/{wf}/versions")
    places += [("versions", v["ro_crate"]["links"]) for v in body["versions"]]
    missing = [
        where
        for where, links in places
        if links.get("registries") != {"wfhub": links.get("registries", {}).get("wfhub")}
        or "registries" not in links
    ]
    assert not missing, missing
    body = get(world, f"/workflows/{own}")
    assert body["version"]["ro_crate"]["links"]["registries"] == {}
    assert body["version"]["links"]["registries"] == {}


def test_based_on_link(world):
    version = get(world, f"/workflows/{world.data['own']}")["version"]
    assert (
        version["ro_crate"]["links"]["based_on"] == "https://github.com/crs4/sort-and-change-case"
    )
    assert version["links"]["based_on"] == "https://github.com/crs4/sort-and-change-case"


def test_upload_keys_apart_from_links(world):
    wf = world.data["own"]
    body = get(world, f"/workflows/{wf}")
    assert set(body) == DETAILS | {"subscriptions"}
    assert body["registries"] == []
    version = body["version"]
    assert set(version) == VERSION
    assert version["ro_crate"]["links"]["origin"] == "local file uploaded"
    assert {"origin", "metadata", "download"} <= set(version["ro_crate"]["links"])
