"""Malformed input answers a 400/413/422 problem+json that names the field, never a 500
(issue 9, defect 6): lone UTF-16 surrogates and deep nesting in any JSON body (the
unauthenticated webhooks check their token before parsing), over-length values measured
against the models' own column sizes, NUL / surrogates / NaN in crate metadata, and a NUL
in the OAuth2 token form. Nothing is written on any of these."""

from __future__ import annotations

import json

import pytest

from emulators.crates import JENKINS, wtroc_metadata, zip_crate
from tests.api.helpers import assert_problem
from tests.support import api_data
from tests.support.api_data import b64, crate, row_counts

PERSON_ID = "31337"
OWNER, REGISTRY = "owner", "registry"
DEEP = 1000

# Every route with a JSON body, who may call it and a valid body with one string field to
# spoil. Path placeholders are filled from the seeded workflow.
JSON_ROUTES = [
    ("POST", "/users/current/workflows", OWNER, "name"),
    ("POST", "/registries/current/workflows", REGISTRY, "name"),
    ("POST", "/users/{person}/workflows", REGISTRY, "name"),
    ("POST", "/registries/{registry_uuid}/workflows", OWNER, "name"),
    ("PUT", "/workflows/{wf_uuid}", OWNER, "name"),
    ("PUT", "/workflows/{wf_uuid}/versions/1", OWNER, "name"),
    ("PUT", "/suites/{suite_uuid}", OWNER, "name"),
    ("POST", "/suites/{suite_uuid}/instances", OWNER, "name"),
    ("PUT", "/instances/{instance_uuid}", OWNER, "name"),
    ("PUT", "/users/current/notifications", OWNER, "items"),
    ("PATCH", "/users/current/notifications", OWNER, None),
    ("PUT", "/workflows/{wf_uuid}/subscribe", OWNER, None),
]


@pytest.fixture(scope="module")
def world(database_url, chalice_app, tmp_path_factory):
    with api_data.open_world(database_url, chalice_app, tmp_path_factory) as w:
        d = w.data
        d[OWNER] = api_data.make_user("alice")
        d[REGISTRY] = api_data.make_registry(w.client, "WorkflowHub", "wfh-app")
        api_data.link_identity(d[OWNER].user_id, d[REGISTRY].registry_id, "wfhub", PERSON_ID)
        r = api_data.submit(
            w.client, d[OWNER], {"rocrate": b64(crate("seed")), "version": "1", "public": True}
        )
        assert r.status_code == 201, r.body
        d["wf_uuid"] = r.json_body["uuid"]
        [instance] = api_data.instance_uuids(d["wf_uuid"])
        d["instance_uuid"] = instance
        d["suite_uuid"] = _suite_of(instance)
        yield w


def _suite_of(instance_uuid: str) -> str:
    from chalicelib.db import session_scope
    from chalicelib.models import TestInstance, TestSuite

    with session_scope() as s:
        return (
            s.query(TestSuite.uuid)
            .join(TestInstance)
            .filter(TestInstance.uuid == instance_uuid)
            .scalar()
        )


@pytest.fixture(autouse=True)
def _world_env(world, monkeypatch):
    world.activate(monkeypatch)


def _url(world, path: str) -> str:
    d = world.data
    return path.format(
        person=PERSON_ID,
        registry_uuid=d[REGISTRY].registry_uuid,
        wf_uuid=d["wf_uuid"],
        suite_uuid=d["suite_uuid"],
        instance_uuid=d["instance_uuid"],
    )


def _send(world, method: str, path: str, who: str, raw: bytes):
    headers = {**world.data[who].headers, "Content-Type": "application/json"}
    return world.http.request(method, _url(world, path), headers=headers, body=raw)


def _named(body: dict, field: str) -> bool:
    return body["extra_info"].get("field") == field or f"'{field}'" in body["detail"]


def _crate_body(rocrate: bytes, **extra) -> bytes:
    return json.dumps({"rocrate": b64(rocrate), "version": "1", **extra}).encode()


# -- lone surrogates and deep nesting in every JSON body ------------------------------------


@pytest.mark.parametrize(("method", "path", "who", "field"), JSON_ROUTES)
def test_lone_surrogate_in_a_json_string_is_a_400_naming_the_field(world, method, path, who, field):
    before = row_counts()
    if field is None:
        raw = b'["\\ud800"]'
    else:
        raw = b'{"version": "1", "%s": "ab\\ud800cd"}' % field.encode()
    r = _send(world, method, path, who, raw)
    body = assert_problem(r, 400)
    assert _named(body, field or "[0]"), body
    assert "surrogate" in body["detail"]
    assert row_counts() == before


@pytest.mark.parametrize(("method", "path", "who", "field"), JSON_ROUTES)
@pytest.mark.parametrize("depth", [DEEP, 100_000])
def test_deeply_nested_json_is_a_400(world, method, path, who, field, depth):
    before = row_counts()
    nested = b"[" * depth + b"]" * depth
    raw = b'{"%s": %s}' % ((field or "x").encode(), nested)
    r = _send(world, method, path, who, raw)
    body = assert_problem(r, 400)
    assert "nested" in body["detail"]
    assert row_counts() == before


def test_nan_in_a_json_body_is_a_400(world):
    r = _send(world, "PUT", "/workflows/{wf_uuid}", OWNER, b'{"name": "x", "public": NaN}')
    body = assert_problem(r, 400)
    assert _named(body, "public")


# -- webhooks: the token is checked before the body is parsed --------------------------------


@pytest.mark.parametrize("path", ["/webhooks/jenkins", "/webhooks/gitlab", "/webhooks/github"])
@pytest.mark.parametrize("depth", [DEEP, 100_000])
def test_webhooks_refuse_a_deep_body_without_credentials_before_parsing(world, path, depth):
    from chalicelib.secrets import get_secrets

    for key in ("webhooks/jenkins/token", "webhooks/gitlab/secret", "webhooks/github/secret"):
        get_secrets().put(key, "s3cret")
    raw = b'{"build": ' + b"[" * depth + b"]" * depth + b"}"
    r = world.http.post(path, headers={"Content-Type": "application/json"}, body=raw)
    assert_problem(r, 401)


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/webhooks/jenkins", {"X-Webhook-Token": "s3cret"}),
        ("/webhooks/gitlab", {"X-Gitlab-Token": "s3cret"}),
    ],
)
def test_webhooks_with_a_good_token_refuse_a_deep_or_surrogate_body_with_a_400(
    world, path, headers
):
    from chalicelib.secrets import get_secrets

    get_secrets().put("webhooks/jenkins/token", "s3cret")
    get_secrets().put("webhooks/gitlab/secret", "s3cret")
    headers = {**headers, "Content-Type": "application/json"}
    for raw in (b'{"build": ' + b"[" * DEEP + b"]" * DEEP + b"}", b'{"name": "\\udfff"}'):
        assert_problem(world.http.post(path, headers=headers, body=raw), 400)


# -- over-length values, against the models' column sizes -----------------------------------


def test_a_200_character_version_is_a_400(world):
    before = row_counts()
    for method, path, who in [
        ("POST", "/users/current/workflows", OWNER),
        ("POST", "/users/{person}/workflows", REGISTRY),
    ]:
        r = _send(world, method, path, who, _crate_body(crate("long"), version="v" * 200))
        assert _named(assert_problem(r, 400), "version")
    assert row_counts() == before


def test_a_200_character_version_label_on_a_version_put_is_a_400(world):
    body = json.dumps({"version": "v" * 200}).encode()
    r = _send(world, "PUT", "/workflows/{wf_uuid}/versions/1", OWNER, body)
    assert _named(assert_problem(r, 400), "version")


def test_a_long_version_in_the_path_is_not_a_500(world):
    for method in ("GET", "PUT", "DELETE"):
        r = world.http.request(
            method,
            f"/workflows/{world.data['wf_uuid']}/versions/{'v' * 200}",
            headers={**world.data[OWNER].headers, "Content-Type": "application/json"},
            body=b'{"name": "x"}' if method == "PUT" else b"",
        )
        assert r.status_code in (400, 404), r.body


@pytest.mark.parametrize(
    ("instances", "field"),
    [
        ([("jenkins", "https://ci.example/" + "a" * 1100, "job/x/")], "url"),
        ([JENKINS], "@id"),
    ],
    ids=["service-url", "instance-id"],
)
def test_over_length_crate_values_are_a_422_naming_the_field(world, instances, field):
    before = row_counts()
    metadata = wtroc_metadata(name="long", instances=instances)
    if field == "@id":
        long_id = "#" + "i" * 600
        for entity in metadata["@graph"]:
            if entity.get("@id") == "#test1_1":
                entity["@id"] = long_id
            if entity.get("@id") == "#test1":
                entity["instance"] = [{"@id": long_id}]
    r = _send(world, "POST", "/users/current/workflows", OWNER, _crate_body(zip_crate(metadata)))
    body = assert_problem(r, 422)
    assert _named(body, field), body
    assert row_counts() == before


def test_an_over_length_suite_id_is_a_422(world):
    before = row_counts()
    metadata = wtroc_metadata(name="long")
    long_id = "#" + "s" * 600
    for entity in metadata["@graph"]:
        if entity.get("@id") == "#test1":
            entity["@id"] = long_id
        if entity.get("@id") == "./":
            entity["mentions"] = [{"@id": long_id}]
    r = _send(world, "POST", "/users/current/workflows", OWNER, _crate_body(zip_crate(metadata)))
    assert _named(assert_problem(r, 422), "@id")
    assert row_counts() == before


def test_an_over_length_service_url_of_an_added_instance_is_a_400(world):
    body = {
        "managed": False,
        "name": "added",
        "resource": "job/added/",
        "service": {"type": "jenkins", "url": "https://ci.example/" + "a" * 1100},
    }
    r = _send(world, "POST", "/suites/{suite_uuid}/instances", OWNER, json.dumps(body).encode())
    assert _named(assert_problem(r, 400), "service.url")


# -- NUL, lone surrogates and NaN in crate metadata ------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [b'"a\\u0000b"', b'"a\\ud800b"', b"NaN", b"Infinity"],
    ids=["nul", "surrogate", "nan", "infinity"],
)
def test_bad_values_in_crate_metadata_are_a_400(world, bad):
    before = row_counts()
    text = json.dumps(wtroc_metadata(name="PLACEHOLDER"))
    text = text.replace('"PLACEHOLDER"', bad.decode())
    r = _send(world, "POST", "/users/current/workflows", OWNER, _crate_body(zip_crate(text)))
    body = assert_problem(r, 400)  # not a storable RO-Crate, as for any unreadable metadata
    assert body["extra_info"]["field"] == "@graph[1].name", body
    assert row_counts() == before


def test_deeply_nested_crate_metadata_is_a_400(world):
    metadata = wtroc_metadata(name="deep")
    text = json.dumps(metadata)[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    r = _send(world, "POST", "/users/current/workflows", OWNER, _crate_body(zip_crate(text)))
    assert "nested" in assert_problem(r, 400)["detail"]


# -- the OAuth2 token form ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [
        b"grant_type=client_credentials&client_id=ab%00cd&client_secret=x",
        b"grant_type=client_credentials&client_id=ab&client_secret=x%00y",
        b"grant_type=client_credentials&client_id=ab%ED%A0%80cd&client_secret=x",
        b"grant_type=client_credentials&client_id=" + b"a" * 5000 + b"&client_secret=x",
    ],
    ids=["nul-id", "nul-secret", "surrogate", "long"],
)
def test_bad_oauth2_form_values_are_a_400(world, form):
    r = world.http.post(
        "/oauth2/token", headers={"Content-Type": "application/x-www-form-urlencoded"}, body=form
    )
    body = assert_problem(r, 400)
    assert body["error"] == "invalid_request"


@pytest.mark.parametrize("path", ["/webhooks/jenkins", "/webhooks/gitlab"])
def test_webhooks_check_the_token_before_reading_the_body(world, path):
    from chalicelib.secrets import get_secrets

    get_secrets().put("webhooks/jenkins/token", "s3cret")
    get_secrets().put("webhooks/gitlab/secret", "s3cret")
    for raw in (b"{not json", b'{"name": "\\ud800"}'):
        r = world.http.post(path, headers={"Content-Type": "application/json"}, body=raw)
        assert_problem(r, 401)  # not 400: nothing is parsed for an unauthenticated caller
