"""The WorkflowHub emulator serves SEEK's real shapes: statuses, content types, bodies,
crates, and public/private access — from the shared fixtures, or generated without them."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest
import requests

from emulators.seek import DEFAULT_PASSWORD, WorkflowHubEmulator, build_minimal_crate

JSONAPI = "application/vnd.api+json"
HEADERS = {"Accept": JSONAPI}


# One server per module (stopping one costs the server's 0.5 s poll); reset between tests.
@pytest.fixture(scope="module")
def _real_server():
    with WorkflowHubEmulator() as emu:
        yield emu


@pytest.fixture(scope="module")
def _generated_server():
    with WorkflowHubEmulator(use_real_fixtures=False) as emu:
        yield emu


@pytest.fixture
def real(shared_fixtures, _real_server):
    assert _real_server.has_real_fixtures
    _real_server.reset()
    return _real_server


@pytest.fixture
def generated(_generated_server):
    _generated_server.reset()
    return _generated_server


def get(emu, path, token=None, **kwargs):
    headers = {**HEADERS, **kwargs.pop("headers", {})}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(emu.url + path, headers=headers, timeout=5, **kwargs)


def example(shared_fixtures, name):
    return json.loads((shared_fixtures / "seek" / "api_examples" / name).read_text())


def crate_metadata(content: bytes) -> dict:
    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        assert zf.testzip() is None
        name = next(n for n in zf.namelist() if n.startswith("ro-crate-metadata.json"))
        return json.loads(zf.read(name))


# -- real fixtures ---------------------------------------------------------------------------


def test_catalogue_follows_index_json(real, shared_fixtures):
    index = json.loads((shared_fixtures / "seek/lifemonitor-test-instance/index.json").read_text())
    assert sorted(real.workflows) == ["20", "21", "22", "23", "24"]
    for w in index["workflows"]:
        wf = real.workflow(w["id"])
        assert real.uuid_of(w["id"]) == w["uuid"]
        assert wf.public == (w["policy_access_type"] >= 2)
        # the served crate is the uploaded content blob, unchanged
        blob = w["content_blob"]
        assert hashlib.md5(real.crate_bytes(w["id"])).hexdigest() == blob["md5sum"]  # noqa: S324
    assert real.public_ids() == ["21"]
    assert real.private_ids() == ["20", "22", "23", "24"]


def test_index_has_real_shape_and_hides_private(real, shared_fixtures):
    r = get(real, "/workflows", params={"format": "json"})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith(JSONAPI)
    body = r.json()
    assert set(example(shared_fixtures, "workflowsResponse.json")) <= set(body)
    item_keys = set(example(shared_fixtures, "workflowsResponse.2020-01.json")["data"][0])
    assert all(set(item) == item_keys for item in body["data"])
    assert [w["id"] for w in body["data"]] == ["21"]
    assert body["data"][0]["attributes"]["title"] == "sort-and-change-case"

    real.tokens["tok"] = 2
    body = get(real, "/workflows", token="tok").json()
    assert [w["id"] for w in body["data"]] == ["20", "21", "22", "23", "24"]


def test_workflow_detail_has_real_shape(real, shared_fixtures):
    r = get(real, "/workflows/21", params={"format": "json"})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith(JSONAPI)
    data = r.json()["data"]
    ref = example(shared_fixtures, "workflowResponse.json")["data"]
    assert set(ref) == set(data)
    # anonymous callers do not see the policy (SEEK shows it to managers only)
    assert set(ref["attributes"]) - {"policy"} == set(data["attributes"])
    assert set(ref["meta"]) == set(data["meta"])
    assert set(ref["relationships"]) == set(data["relationships"])
    assert data["meta"]["uuid"] == real.uuid_of(21) == "478b43f0-8650-0139-d67a-0242ac1b0005"
    assert data["meta"]["base_url"] == real.url
    assert data["links"]["self"] == "/workflows/21?version=1"
    assert data["attributes"]["versions"] == [
        {
            "version": 1,
            "revision_comments": None,
            "url": f"{real.url}/workflows/21?version=1",
            "doi": None,
        }
    ]
    assert data["attributes"]["workflow_class"]["key"] == "galaxy"
    assert data["relationships"]["submitter"]["data"] == [{"id": "2", "type": "people"}]
    blob = data["attributes"]["content_blobs"][0]
    assert blob["md5sum"] == "91c49819e0f69ca5c7f94437c4e775d9"
    assert blob["original_filename"] == "ro-crate-galaxy-sortchangecase.crate.zip"

    real.tokens["owner"] = 2
    data = get(real, "/workflows/21", token="owner").json()["data"]
    assert data["attributes"]["policy"]["access"] == "download"


def test_public_crate_downloads_as_a_valid_zip(real, shared_fixtures):
    r = get(real, "/workflows/21/ro_crate", params={"version": "1"})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/zip"
    assert 'filename="workflow-21-1.crate.zip"' in r.headers["Content-Disposition"]
    fixture = shared_fixtures / "seek/lifemonitor-test-instance/workflow-21.crate.zip"
    assert r.content == fixture.read_bytes()
    metadata = crate_metadata(r.content)
    assert any(e.get("@type") == "TestSuite" for e in metadata["@graph"])
    # no version: the latest
    assert get(real, "/workflows/21/ro_crate").content == r.content


def test_private_workflow_refused_without_token_served_with_it(real):
    r = get(real, "/workflows/22", params={"format": "json"})
    assert r.status_code == 403
    assert r.json() == {
        "errors": [{"title": "Forbidden", "details": "You may not view workflow:22"}]
    }
    r = get(real, "/workflows/22/ro_crate", params={"version": "1"})
    assert r.status_code == 403
    assert r.json()["errors"][0]["details"] == "You may not download workflow:22"

    real.tokens.update({"owner": 2, "admin": 1, "other": 3})
    for token in ("owner", "admin"):
        r = get(real, "/workflows/22/ro_crate", token=token, params={"version": "1"})
        assert r.status_code == 200, token
        assert crate_metadata(r.content)["@graph"][1]["name"] == (
            "sort-and-change-case-invalid-service-type"
        )
        assert get(real, "/workflows/22", token=token).status_code == 200
    # a known user who is neither the contributor nor an admin
    assert get(real, "/workflows/22", token="other").status_code == 403
    # a token the registry does not know
    r = get(real, "/workflows/22", token="nope")
    assert r.status_code == 401
    assert r.json()["errors"][0]["title"] == "Unauthorized"


def test_not_found_bodies(real):
    r = get(real, "/workflows/999", params={"format": "json"})
    assert r.status_code == 404
    assert r.json() == {
        "errors": [{"title": "Not found", "detail": "Couldn't find Workflow with 'id'=[999]"}]
    }
    assert get(real, "/workflows/999/ro_crate", params={"version": "1"}).status_code == 404
    assert get(real, "/workflows/21/ro_crate", params={"version": "7"}).status_code == 404
    assert get(real, "/workflows/21", params={"version": "7"}).status_code == 404


def test_people(real, shared_fixtures):
    r = get(real, "/people/current")
    assert r.status_code == 404
    assert r.json() == {"errors": [{"title": "No user logged in"}]}

    real.tokens["tok"] = 2
    r = get(real, "/people/current", token="tok")
    assert r.status_code == 200
    data = r.json()["data"]
    ref = example(shared_fixtures, "personResponse.json")["data"]
    assert set(ref) == set(data)
    assert set(data["attributes"]) <= set(ref["attributes"])
    assert data["id"] == "2"
    assert data["attributes"]["title"] == "First User"
    assert (
        data["attributes"]["mbox_sha1sum"]
        == hashlib.sha1(  # noqa: S324
            b"mailto:user1@seek.lifemonitor"
        ).hexdigest()
    )
    assert data["relationships"]["projects"]["data"][0] == {"id": "2", "type": "projects"}
    assert get(real, "/people/1").json()["data"]["attributes"]["title"] == "Admin User"
    assert get(real, "/people/99").status_code == 404
    assert [p["id"] for p in get(real, "/people").json()["data"]] == ["1", "2", "3"]


def test_json_only_when_asked(real):
    r = get(real, "/workflows", headers={"Accept": "text/html"})
    assert r.status_code == 406
    assert r.json()["errors"][0]["title"] == "Not Acceptable"
    assert (
        get(
            real, "/workflows", headers={"Accept": "text/html"}, params={"format": "json"}
        ).status_code
        == 200
    )
    assert get(real, "/workflows/21.json", headers={"Accept": "text/html"}).status_code == 200
    # the crate ignores Accept (LifeMonitor asks for it with the JSON:API type)
    assert get(real, "/workflows/21/ro_crate").status_code == 200


def test_converted_crates_can_be_served(real):
    converted = real.converted_crates()
    assert len(converted) == 2
    real.set_crate(21, 1, converted[-1])
    assert get(real, "/workflows/21/ro_crate").content == converted[-1].read_bytes()


# -- generated catalogue (always runs) --------------------------------------------------------


def test_generated_catalogue_without_fixtures(generated, tmp_path):
    assert not generated.has_real_fixtures
    assert generated.public_id == "1" and generated.private_id == "2"
    body = get(generated, "/workflows", params={"format": "json"}).json()
    assert [w["id"] for w in body["data"]] == ["1"]

    data = get(generated, "/workflows/1", params={"format": "json"}).json()["data"]
    assert data["meta"]["uuid"] == generated.uuid_of(1)
    assert data["attributes"]["latest_version"] == 1

    r = get(generated, "/workflows/1/ro_crate", params={"version": "1"})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/zip"
    graph = {e["@id"]: e for e in crate_metadata(r.content)["@graph"]}
    assert graph["./"]["mentions"] == [{"@id": "#test1"}]
    instance = graph["#test1_1"]
    assert instance["runsOn"]["@id"] == "https://w3id.org/ro/terms/test#GithubService"
    assert instance["url"] == "https://api.github.com"

    assert get(generated, "/workflows/2/ro_crate").status_code == 403
    generated.tokens["tok"] = 2
    assert get(generated, "/workflows/2/ro_crate", token="tok").status_code == 200

    # a missing fixture folder gives the same generated catalogue, with stable uuids
    with WorkflowHubEmulator(fixtures_dir=tmp_path) as other:
        assert not other.has_real_fixtures
        assert other.uuid_of(1) == generated.uuid_of(1)


def test_generated_crate_is_reproducible():
    assert build_minimal_crate() == build_minimal_crate()
    assert build_minimal_crate("a") != build_minimal_crate("b")


def test_added_workflow_with_versions(generated):
    generated.add_workflow(7, "multi", {1: build_minimal_crate("v1"), 2: build_minimal_crate("v2")})
    data = get(generated, "/workflows/7").json()["data"]
    assert [v["version"] for v in data["attributes"]["versions"]] == [1, 2]
    assert data["attributes"]["latest_version"] == 2
    assert (
        get(generated, "/workflows/7", params={"version": "1"}).json()["data"]["attributes"][
            "version"
        ]
        == 1
    )
    r = get(generated, "/workflows/7/ro_crate", params={"version": "1"})
    assert crate_metadata(r.content)["@graph"][1]["name"] == "v1"


def test_faults_apply(generated):
    generated.fault(r"^/workflows/1$", status=500, body={"errors": [{"title": "boom"}]}, times=1)
    assert get(generated, "/workflows/1").status_code == 500
    assert get(generated, "/workflows/1").status_code == 200
    assert len(generated.requests_to(r"^/workflows/1$")) == 2


def test_builtin_error_bodies_match_the_fixtures(shared_fixtures):
    from emulators.seek import _BUILTIN_ERRORS, ERROR_STATUS

    files = sorted((shared_fixtures / "seek" / "errors").glob("*.json"))
    assert {f.stem for f in files} == set(_BUILTIN_ERRORS)
    for f in files:
        assert json.loads(f.read_text()) == _BUILTIN_ERRORS[f.stem], f.name
        assert f.stem.split(".", 1)[0] in ERROR_STATUS


# -- creating workflows: SEEK's two-step upload ----------------------------------------------

BASIC_USER1 = ("user1", DEFAULT_PASSWORD)


def post_body(title="uploaded", project="2", **attributes) -> dict:
    return {
        "data": {
            "type": "workflows",
            "attributes": {
                "title": title,
                "workflow_class": {"key": "galaxy"},
                "content_blobs": [
                    {"original_filename": "up.crate.zip", "content_type": "application/zip"}
                ],
                "policy": {"access": "download", "permissions": []},
                **attributes,
            },
            "relationships": {"projects": {"data": [{"id": project, "type": "projects"}]}},
        }
    }


def post(emu, body, auth=BASIC_USER1, **kwargs):
    headers = {"Accept": "application/json", "Content-Type": JSONAPI, **kwargs.pop("headers", {})}
    data = body if isinstance(body, bytes) else json.dumps(body)
    return requests.post(
        emu.url + "/workflows", data=data, headers=headers, auth=auth, timeout=5, **kwargs
    )


def test_post_then_put_adds_a_workflow(generated):
    r = post(generated, post_body(description="two steps"))
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    identifier = data["id"]
    assert identifier == "3"  # after the generated 1 and 2
    blob = data["attributes"]["content_blobs"][0]
    # No content yet, as workflowPostResponse.json shows it.
    assert (blob["size"], blob["md5sum"], blob["url"]) == (None, None, None)
    assert blob["link"] == f"{generated.url}/workflows/3/content_blobs/31"
    assert data["attributes"]["latest_version"] == 1
    assert data["attributes"]["description"] == "two steps"
    assert data["attributes"]["policy"]["access"] == "download"
    assert data["relationships"]["submitter"]["data"] == [{"id": "2", "type": "people"}]
    # Listed and shown, but no crate until the PUT.
    assert "3" in [w["id"] for w in get(generated, "/workflows").json()["data"]]
    assert get(generated, "/workflows/3/ro_crate").status_code == 404
    assert "3" not in generated.workflows

    crate = build_minimal_crate("uploaded")
    r = requests.put(blob["link"], data=crate, auth=BASIC_USER1, timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain") and r.text == str(len(crate))
    assert generated.workflow(3).title == "uploaded" and not generated.uploads
    assert get(generated, "/workflows/3/ro_crate").content == crate  # public download
    shown = get(generated, "/workflows/3").json()["data"]["attributes"]["content_blobs"][0]
    assert shown["size"] == len(crate)
    assert shown["md5sum"] == hashlib.md5(crate).hexdigest()  # noqa: S324
    assert shown["original_filename"] == "up.crate.zip"

    # The blob has content now: SEEK answers 400 with an empty object.
    r = requests.put(blob["link"], data=b"again", auth=BASIC_USER1, timeout=5)
    assert (r.status_code, r.json()) == (400, {})


def test_post_response_has_the_shape_of_seeks_example(real, shared_fixtures):
    ref = example(shared_fixtures, "workflowPostResponse.json")["data"]
    data = post(real, post_body()).json()["data"]
    assert set(data) == set(ref)
    assert set(data["attributes"]) == set(ref["attributes"])
    assert set(data["attributes"]["content_blobs"][0]) == set(ref["attributes"]["content_blobs"][0])
    assert set(data["meta"]) == set(ref["meta"])
    assert data["id"] == "25"  # after the fixtures' 20-24


def test_post_refusals(generated):
    # No credentials, a wrong password, an unknown token: 401 with SEEK's body.
    for auth in (None, ("user1", "wrong"), ("nobody", DEFAULT_PASSWORD)):
        r = post(generated, post_body(), auth=auth)
        assert r.status_code == 401, auth
        assert r.json()["errors"][0]["title"] == "Unauthorized"
    r = post(generated, post_body(), auth=None, headers={"Authorization": "Token nope"})
    assert r.status_code == 401
    # A project the caller is not in: 403 in the errors/forbidden structure.
    r = post(generated, post_body(project="1"))
    assert r.status_code == 403
    assert r.json() == {
        "errors": [{"title": "Forbidden", "details": "You may not add workflows to project:1"}]
    }
    # 422: SEEK's json_api_errors (a pointer and a detail).
    for body, pointer in (
        (post_body(title=""), "/data/attributes/title"),
        (post_body(content_blobs=[]), "/data/attributes/content_blobs"),
        (post_body(workflow_class={"key": "nope"}), "/data/attributes/workflow_class"),
    ):
        r = post(generated, body)
        assert r.status_code == 422, pointer
        assert r.json()["errors"][0]["source"]["pointer"] == pointer
    r = post(generated, b"{not json")
    assert r.status_code == 422 and "data:type" in r.json()["errors"][0]["detail"]
    assert not generated.uploads


def test_put_refusals_use_seeks_content_blob_bodies(generated):
    link = post(generated, post_body()).json()["data"]["attributes"]["content_blobs"][0]["link"]
    generated.passwords["admin"] = "admin-pw"
    # Not the contributor (nor an admin), or nobody: 403, ContentBlobsController's body.
    generated.people["3"] = {**generated.people["2"], "login": "user2"}
    for auth in (("user2", DEFAULT_PASSWORD), None):
        r = requests.put(link, data=b"x", auth=auth, timeout=5)
        assert r.status_code == 403, auth
        assert r.json() == {
            "title": "Forbidden",
            "detail": "You are not authorized to download the asset linked to content_blob:31",
        }
    r = requests.put(link.replace("/31", "/99"), data=b"x", auth=BASIC_USER1, timeout=5)
    assert r.status_code == 404 and "content blob was not found" in r.json()["detail"]
    r = requests.put(
        f"{generated.url}/workflows/77/content_blobs/771", data=b"x", auth=BASIC_USER1, timeout=5
    )
    assert r.status_code == 404 and r.json()["detail"] == "The asset could not be found"
    assert "3" in generated.uploads  # still waiting
    # An admin may upload it.
    assert requests.put(link, data=b"x", auth=("admin", "admin-pw"), timeout=5).status_code == 200


def test_basic_and_token_credentials_read_private_workflows(generated):
    assert get(generated, "/workflows/2").status_code == 403
    r = requests.get(generated.url + "/workflows/2", headers=HEADERS, auth=BASIC_USER1, timeout=5)
    assert r.status_code == 200
    generated.tokens["t"] = 2
    r = get(generated, "/workflows/2", headers={"Authorization": "Token t"})
    assert r.status_code == 200
