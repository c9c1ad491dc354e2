"""Badges (issue 11): a shields.io flat SVG that parses and rasterises for every status,
and an endpoint JSON accepted by the shields.io endpoint schema; public workflows only,
cache headers, nothing written."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from tests.support import api_data

SVG = "{http://www.w3.org/2000/svg}"
# The shields.io endpoint badge schema (https://shields.io/badges/endpoint-badge): the
# required keys and the types of the optional ones we may send.
SHIELDS_ENDPOINT_SCHEMA = {
    "type": "object",
    "required": ["schemaVersion", "label", "message"],
    "properties": {
        "schemaVersion": {"const": 1},
        "label": {"type": "string"},
        "message": {"type": "string", "minLength": 1},
        "color": {"type": "string"},
        "labelColor": {"type": "string"},
        "isError": {"type": "boolean"},
        "namedLogo": {"type": "string"},
        "logoSvg": {"type": "string"},
        "logoColor": {"type": "string"},
        "logoWidth": {"type": "integer"},
        "style": {"enum": ["flat", "flat-square", "plastic", "for-the-badge", "social"]},
        "cacheSeconds": {"type": "integer", "minimum": 300},
    },
    "additionalProperties": False,
}
SHIELDS_COLOURS = {
    "brightgreen",
    "green",
    "yellow",
    "yellowgreen",
    "orange",
    "red",
    "blue",
    "lightgrey",
    "grey",
    "gray",
    "success",
    "important",
    "critical",
    "informational",
    "inactive",
}

TWO = [("jenkins", "https://ci.example/", "job/a/"), ("jenkins", "https://ci.example/", "job/b/")]
CASES = {
    # name: (statuses of the two instances' builds, expected message, colour)
    "all_passing": (["passed", "passed"], "passing", "brightgreen"),
    "some_passing": (["passed", "failed"], "some passing", "yellow"),
    "all_failing": (["failed", "error"], "failing", "red"),
    "not_available": ([None, None], "unknown", "lightgrey"),
}


def header(r, name):
    return {k.lower(): v for k, v in r.headers.items()}.get(name.lower())


@pytest.fixture
def workflows(client):
    alice = api_data.make_user("alice")
    out = {}
    for name, (statuses, *_) in CASES.items():
        data = api_data.crate(name, instances=TWO)
        body = {"rocrate": api_data.b64(data), "version": "1", "public": True}
        r = api_data.submit(client, alice, body)
        assert r.status_code == 201, r.body
        wf = r.json_body["uuid"]
        for instance, status in zip(api_data.instance_uuids(wf), statuses, strict=True):
            if status:
                api_data.store_builds(instance, [api_data.build("1", status)])
        out[name] = wf
    private = api_data.submit(
        client, alice, {"rocrate": api_data.b64(api_data.crate("secret")), "version": "1"}
    ).json_body["uuid"]
    return alice, out, private


def check_svg(body: bytes, message: str, colour_hex: str) -> None:
    import resvg_py

    root = ET.fromstring(body)  # noqa: S314 - our own SVG, under test
    assert root.tag == f"{SVG}svg" and root.get("height") == "20"
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert texts == ["LifeMonitor", "LifeMonitor", message, message]
    fills = [r.get("fill") for r in root.iter(f"{SVG}rect")]
    assert "#555" in fills and colour_hex in fills
    png = bytes(resvg_py.svg_to_bytes(svg_string=body.decode()))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")  # it renders


@pytest.mark.parametrize("case", list(CASES))
def test_workflow_badges_for_each_status(client, workflows, case):
    import jsonschema

    from chalicelib.services.badges import COLOURS

    _, wfs, _ = workflows
    _, message, colour = CASES[case]
    r = client.http.get(f"/workflows/{wfs[case]}/badge.svg")
    assert r.status_code == 200
    assert header(r, "Content-Type").startswith("image/svg+xml")
    assert "max-age=300" in header(r, "Cache-Control")
    check_svg(r.body, message, COLOURS[colour])
    r = client.http.get(f"/workflows/{wfs[case]}/badge.json")
    assert r.status_code == 200 and "max-age" in header(r, "Cache-Control")
    body = r.json_body
    jsonschema.validate(body, SHIELDS_ENDPOINT_SCHEMA)
    assert body["color"] in SHIELDS_COLOURS
    assert (body["label"], body["message"], body["color"]) == ("LifeMonitor", message, colour)
    # The same for the version asked by name.
    r = client.http.get(f"/workflows/{wfs[case]}/versions/1/badge.json")
    assert r.json_body["message"] == message


def test_suite_and_instance_badges(client, workflows):
    import jsonschema

    _, wfs, _ = workflows
    wf = wfs["some_passing"]
    suites = client.http.get(f"/workflows/{wf}/suites").json_body["items"]
    r = client.http.get(f"/suites/{suites[0]['uuid']}/badge.json")
    assert r.json_body["message"] == "some passing"
    passed, failed = api_data.instance_uuids(wf)
    for instance, message in ((passed, "passing"), (failed, "failing")):
        r = client.http.get(f"/instances/{instance}/badge.json")
        jsonschema.validate(r.json_body, SHIELDS_ENDPOINT_SCHEMA)
        assert r.json_body["message"] == message
        r = client.http.get(f"/instances/{instance}/badge.svg")
        check_svg(r.body, message, "#4c1" if message == "passing" else "#e05d44")


def test_stale_instance_badge(client, workflows):
    from chalicelib.db import session_scope
    from chalicelib.models import TestInstance, utcnow

    _, wfs, _ = workflows
    instance = api_data.instance_uuids(wfs["all_passing"])[0]
    with session_scope() as s:
        s.query(TestInstance).filter_by(uuid=instance).one().stale_since = utcnow()
    r = client.http.get(f"/instances/{instance}/badge.svg")
    check_svg(r.body, "stale", "#fe7d37")
    r = client.http.get(f"/workflows/{wfs['all_passing']}/badge.json")
    assert r.json_body["message"] == "passing, stale"


def test_private_and_missing_workflows_have_no_badge(client, workflows):
    alice, _, private = workflows
    for path in (f"/workflows/{private}/badge.svg", f"/workflows/{private}/badge.json"):
        # Even for the owner: a badge is meant to be embedded publicly.
        r = client.http.get(path, headers=alice.headers)
        assert r.status_code == 404
        assert header(r, "Content-Type").startswith("application/problem+json")
    r = client.http.get("/workflows/00000000-0000-0000-0000-000000000000/badge.svg")
    assert r.status_code == 404
    assert client.http.get(f"/workflows/{private}/versions/9/badge.json").status_code == 404


def test_badges_write_nothing(client, workflows):
    from sqlalchemy import event

    from chalicelib.db import get_engine

    _, wfs, _ = workflows
    writes = []

    def record(conn, cursor, statement, *args):
        if statement.lstrip().split()[0].upper() in {"INSERT", "UPDATE", "DELETE"}:
            writes.append(statement)

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", record)
    try:
        for kind in ("svg", "json"):
            assert (
                client.http.get(f"/workflows/{wfs['all_passing']}/badge.{kind}").status_code == 200
            )
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert writes == []


def test_endpoint_json_is_what_shields_reads(client, workflows):
    _, wfs, _ = workflows
    body = json.loads(client.http.get(f"/workflows/{wfs['all_failing']}/badge.json").body)
    assert body["schemaVersion"] == 1 and body["cacheSeconds"] >= 300
