"""Optional paging of workflow lists (issue 9): `limit` and an opaque `cursor`, with
`links.next`; clients that send neither get the whole list, as from LifeMonitor."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from tests.api.helpers import assert_problem
from tests.support import api_data


def _submit_many(client, api_key, count: int) -> list[str]:
    names = []
    for n in range(count):
        body = {"version": "1", "name": f"w{n}", "public": True}
        body["rocrate"] = api_data.b64(api_data.crate(f"w{n}"))
        r = client.http.post(
            "/users/current/workflows",
            headers={"ApiKey": api_key, "Content-Type": "application/json"},
            body=json.dumps(body),
        )
        assert r.status_code == 201, r.body
        names.append(r.json_body["uuid"])
    return names


def test_pages_follow_links_next_to_the_whole_list(client, api_key):
    made = _submit_many(client, api_key, 5)
    whole = client.http.get("/workflows?status=true")
    assert whole.status_code == 200
    assert "next" not in whole.json_body["links"]
    assert [i["uuid"] for i in whole.json_body["items"]] == made

    seen, path, pages = [], "/workflows?status=true&limit=2", 0
    while path:
        r = client.http.get(path)
        assert r.status_code == 200, r.body
        body = r.json_body
        assert len(body["items"]) <= 2
        assert all(i["status"]["aggregate_test_status"] for i in body["items"])
        seen += [i["uuid"] for i in body["items"]]
        pages += 1
        nxt = body["links"].get("next")
        if nxt:
            assert nxt.startswith("http://lm.test/workflows?") and "status=true" in nxt
            parts = urlsplit(nxt)
            path = f"{parts.path}?{parts.query}"
        else:
            path = None
    assert seen == made and pages == 3


def test_user_list_pages_too(client, api_key):
    made = _submit_many(client, api_key, 3)
    r = client.http.get("/users/current/workflows?limit=1", headers={"ApiKey": api_key})
    assert r.status_code == 200
    assert [i["uuid"] for i in r.json_body["items"]] == made[:1]
    assert "cursor=" in r.json_body["links"]["next"]


def test_bad_paging_parameters_are_400(client):
    for query, field in (("cursor=not-ours", "cursor"), ("limit=0", None), ("limit=x", None)):
        problem = assert_problem(client.http.get(f"/workflows?{query}"), 400)
        if field:
            assert problem["extra_info"].get("field") == field


def test_a_page_reads_only_its_rows(client, api_key, monkeypatch):
    """The limit applies to the rows read, not to what the response shows."""
    from chalicelib.services import workflows

    _submit_many(client, api_key, 4)
    read: list[int] = []
    original = workflows._query_rows

    def spy(*args, **kwargs):
        rows = original(*args, **kwargs)
        read.append(len(rows))
        return rows

    monkeypatch.setattr(workflows, "_query_rows", spy)
    r = client.http.get("/workflows?limit=1")
    assert r.status_code == 200 and len(r.json_body["items"]) == 1
    assert read == [2]  # the page and one more, to know that a next page exists
