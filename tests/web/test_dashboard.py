"""The dashboard and the workflow page: the same access rules as the API."""

from __future__ import annotations

import pytest

from tests.support import api_data
from tests.support.api_data import b64, crate
from tests.web.helpers import Browser, header

JENKINS = ("jenkins", "https://jenkins.example", "job/a/")
GITHUB = ("github", "https://api.github.com", "repos/o/r/actions/workflows/ci.yml")


def submit(client, actor, name: str, *, public: bool) -> str:
    body = {
        "rocrate": b64(crate(name=name, instances=[JENKINS, GITHUB])),
        "version": "1",
        "public": public,
        "name": name,
    }
    r = api_data.submit(client, actor, body)
    assert r.status_code == 201, r.body
    return r.json_body["uuid"]


@pytest.fixture
def world(client):
    from chalicelib.db import session_scope
    from chalicelib.models import User

    alice = api_data.make_user("alice")
    bob = api_data.make_user("bob")
    with session_scope() as s:
        from chalicelib.auth.hashing import hash_password

        s.query(User).filter_by(username="alice").one().password_hash = hash_password(
            "correct horse"
        )
    wf_private = submit(client, alice, "alice-private", public=False)
    wf_public = submit(client, bob, "bob-public", public=True)
    jenkins, _github = api_data.instance_uuids(wf_private)
    api_data.store_builds(
        jenkins,
        [api_data.build("41", "failed", 30), api_data.build("42", "passed", 10)],
    )
    return {"private": wf_private, "public": wf_public}


def test_anonymous_dashboard_lists_public_workflows_only(client, world):
    b = Browser(client)
    r = b.get("/dashboard")
    assert r.status_code == 200
    page = b.text()
    assert "bob-public" in page and "alice-private" not in page
    assert "to see your own workflows" in page


def test_signed_in_dashboard_lists_own_and_public(client, world):
    b = Browser(client)
    b.login()
    page = b.get("/dashboard").body.decode()
    mine, public = page.split('id="public-title"')
    assert "alice-private" in mine and "bob-public" in public
    assert "all passing" in mine  # the stored builds' status


def test_workflow_page_shows_suites_instances_builds_and_ci_links(client, world):
    b = Browser(client)
    b.login()
    r = b.get(f"/workflow/{world['private']}")
    assert r.status_code == 200, r.body
    page = b.text()
    assert "alice-private" in page
    assert "https://jenkins.example/job/a/" in page  # the instance on its CI
    assert "https://github.com/o/r/actions/workflows/ci.yml" in page
    assert "https://ci.example/builds/42" in page and "https://ci.example/builds/41" in page
    assert "No build yet." in page  # the GitHub instance


def test_workflowhub_matrix_link(client, world):
    b = Browser(client)
    r = b.get(f"/workflow;uuid={world['public']}")
    assert r.status_code == 200 and "bob-public" in b.text()
    r = b.get(f"/workflow;uuid={world['public']};version=1")
    assert r.status_code == 200
    assert header(b.get("/workflow"), "Location") == "/dashboard"


def test_private_workflow_is_refused_to_others_as_a_page(client, world):
    b = Browser(client)
    r = b.get(f"/workflow/{world['private']}")
    assert r.status_code == 403
    assert header(r, "Content-Type").startswith("text/html")
    assert b.get("/workflow/00000000-0000-0000-0000-000000000000").status_code == 404
    assert b.get("/workflow/not a uuid").status_code == 404


def test_matrix_params():
    from chalicelib.web.dashboard import matrix_params

    assert matrix_params("/workflow;uuid=a-b;version=1.0") == {"uuid": "a-b", "version": "1.0"}
    assert matrix_params("/workflow") == {}
