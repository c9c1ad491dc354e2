"""GET /instances/{uuid}/history and GET /workflows/{uuid}/history: shape, values, times
(ISO-8601 with epoch companions), the `version` and `series` parameters, and the same
access rules as the resources they describe."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from chalicelib.models import utcnow
from tests.api.helpers import assert_problem
from tests.support import api_data
from tests.support.api_data import b64, crate

JENKINS = ("jenkins", "https://jenkins.example", "job/a/")
TRAVIS = ("travis", "https://travis.example", "o/r")


@pytest.fixture
def alice(client):
    return api_data.make_user("alice")


def submit(client, actor, version: str = "1", *, public: bool = True, uuid: str | None = None):
    body = {
        "rocrate": b64(crate(instances=[JENKINS, TRAVIS])),
        "version": version,
        "public": public,
    }
    if uuid:
        body["uuid"] = uuid
    r = api_data.submit(client, actor, body)
    assert r.status_code == 201, r.body
    return r.json_body["uuid"]


def build(build_id: str, status: str, hours_ago: float, duration: float | None = 60.0):
    from chalicelib.testing import BuildData

    started = utcnow() - timedelta(hours=hours_ago)
    done = status not in {"running", "waiting"}
    return BuildData(
        build_id=build_id,
        status=status,
        started_at=started,
        finished_at=started + timedelta(seconds=duration or 0) if done else None,
        duration=duration if done else None,
    )


def iso_matches(text: str, epoch: float) -> None:
    assert text.endswith("Z")
    assert datetime.fromisoformat(text).timestamp() == pytest.approx(epoch)


def test_instance_history(client, alice):
    wf = submit(client, alice)
    jenkins, travis = api_data.instance_uuids(wf)
    api_data.store_builds(
        jenkins,
        [
            build("1", "passed", 60 * 24, 50),
            build("2", "failed", 40 * 24, 70),
            build("3", "passed", 40 * 24 - 2, 80),  # recovered 2 h (and 10 s) later
            build("4", "failed", 20 * 24, 90),
            build("5", "running", 1),
        ],
    )
    r = client.http.get(f"/instances/{jenkins}/history")  # anonymous: a public workflow
    assert r.status_code == 200, r.body
    body = r.json_body
    assert body["meta"]["api_version"] == "0.15.0"
    assert body["meta"]["resource"] == f"/instances/{jenkins}/history"
    assert body["links"] == {
        "self": f"http://lm.test/instances/{jenkins}/history",
        "instance": f"http://lm.test/instances/{jenkins}",
    }
    assert body["instance"]["uuid"] == jenkins
    assert body["instance"]["service"]["type"] == "jenkins"
    assert body["instance"]["roc_instance"] == "#test1_1"
    iso_matches(body["generated_at"], body["generated_at_epoch"])
    h = body["history"]
    assert h["builds"]["total"] == 5
    assert h["last_passed"]["build_id"] == "3"
    assert h["last_passed"]["status"] == "passed"
    assert h["last_passed"]["instance_uuid"] == jenkins
    assert h["last_green_at"] == h["last_passed"]["at"]
    iso_matches(h["last_green_at"], h["last_green_at_epoch"])
    iso_matches(h["failing_since"], h["failing_since_epoch"])  # build 4 is failing
    week, month, quarter = (h["windows"][k] for k in ("7d", "30d", "90d"))
    assert (week["passed"], week["completed"], week["pass_rate"]) == (0, 0, None)
    assert (month["passed"], month["completed"], month["pass_rate"]) == (0, 1, 0.0)
    assert (quarter["passed"], quarter["completed"], quarter["pass_rate"]) == (2, 4, 0.5)
    assert quarter["recoveries"] == 1 and month["recoveries"] == 0
    assert quarter["mttr_seconds"] == pytest.approx(2 * 3600 + 10, abs=0.01)
    assert week["mttr_seconds"] is None and week["days"] == 7
    iso_matches(week["since"], week["since_epoch"])
    series = h["duration"]["series"]
    assert [p["build_id"] for p in series] == ["1", "2", "3", "4"]  # oldest first
    assert [p["duration_seconds"] for p in series] == [50, 70, 80, 90]
    for p in series:
        iso_matches(p["started_at"], p["started_at_epoch"])
        iso_matches(p["finished_at"], p["finished_at_epoch"])
    assert h["duration"]["recent_mean_seconds"] == 72.5
    assert h["duration"]["recent_count"] == 4 and h["duration"]["previous_count"] == 0
    assert h["duration"]["trend"] is None and h["duration"]["change_ratio"] is None

    # An instance without builds: counts are zero, everything else null.
    r = client.http.get(f"/instances/{travis}/history?series=5")
    h = r.json_body["history"]
    assert h["builds"] == {"total": 0, "last_build_at": None, "last_build_at_epoch": None}
    assert h["last_passed"] is None and h["last_green_at"] is None
    assert all(w["pass_rate"] is None for w in h["windows"].values())
    assert h["duration"]["series"] == []


def test_series_limits_the_durations(client, alice):
    wf = submit(client, alice)
    jenkins, _ = api_data.instance_uuids(wf)
    api_data.store_builds(jenkins, [build(str(i), "passed", 50 - i, 10 + i) for i in range(30)])
    r = client.http.get(f"/instances/{jenkins}/history?series=3")
    h = r.json_body["history"]
    assert [p["build_id"] for p in h["duration"]["series"]] == ["27", "28", "29"]
    assert h["duration"]["recent_mean_seconds"] == pytest.approx(sum(range(30, 40)) / 10)
    assert h["duration"]["previous_mean_seconds"] == pytest.approx(sum(range(20, 30)) / 10)
    assert h["duration"]["trend"] == "slower"
    for bad in ("0", "101", "x"):
        assert_problem(client.http.get(f"/instances/{jenkins}/history?series={bad}"), 400)


def test_workflow_history(client, alice):
    wf = submit(client, alice, "1")
    submit(client, alice, "2", uuid=wf)
    v1 = api_data.instance_uuids(wf, "1")
    v2 = api_data.instance_uuids(wf, "2")
    api_data.store_builds(v1[0], [build("1", "passed", 5), build("2", "failed", 3)])
    api_data.store_builds(v1[1], [build("10", "passed", 4)])
    api_data.store_builds(v2[0], [build("1", "failed", 2)])

    r = client.http.get(f"/workflows/{wf}/history")
    assert r.status_code == 200, r.body
    body = r.json_body
    assert body["workflow"]["uuid"] == wf and body["workflow"]["public"] is True
    assert body["links"]["workflow"] == f"http://lm.test/workflows/{wf}"
    assert [v["version"] for v in body["versions"]] == ["2", "1"]  # newest first
    assert [v["is_latest"] for v in body["versions"]] == [True, False]
    second, first = body["versions"]
    assert [i["uuid"] for i in first["instances"]] == v1
    assert first["history"]["windows"]["7d"]["passed"] == 2
    assert first["history"]["windows"]["7d"]["completed"] == 3
    assert first["history"]["last_passed"]["build_id"] == "10"
    assert first["history"]["last_passed"]["instance_uuid"] == v1[1]
    assert first["instances"][0]["history"]["windows"]["7d"]["pass_rate"] == 0.5
    assert first["instances"][1]["history"]["windows"]["7d"]["pass_rate"] == 1.0
    assert first["instances"][0]["suite_uuid"] == first["instances"][1]["suite_uuid"]
    assert second["history"]["windows"]["7d"]["pass_rate"] == 0.0
    assert second["history"]["failing_since"] is not None
    assert second["instances"][1]["history"]["builds"]["total"] == 0

    for version, expected in (("1", "1"), ("latest", "2"), ("2", "2")):
        r = client.http.get(f"/workflows/{wf}/history?version={version}")
        assert r.status_code == 200, r.body
        assert [v["version"] for v in r.json_body["versions"]] == [expected]
    assert_problem(client.http.get(f"/workflows/{wf}/history?version=9"), 404)
    assert_problem(client.http.get(f"/workflows/{wf}/history?series=0"), 400)


def test_unknown_resources_are_404(client):
    missing = "00000000-0000-4000-8000-000000000000"
    assert_problem(client.http.get(f"/instances/{missing}/history"), 404)
    assert_problem(client.http.get(f"/workflows/{missing}/history"), 404)


def test_private_workflows_follow_the_access_rules(client, alice):
    wf = submit(client, alice, public=False)
    instance = api_data.instance_uuids(wf)[0]
    urls = [f"/instances/{instance}/history", f"/workflows/{wf}/history"]
    bob = api_data.make_user("bob")
    no_scope = api_data.make_user("carol", scopes=["user.profile"])
    own_but_no_scope = api_data.make_user("alice", scopes=["user.profile"])
    for url in urls:
        assert_problem(client.http.get(url), 403)  # anonymous
        assert_problem(client.http.get(url, headers=bob.headers), 403)  # not hers
        assert_problem(client.http.get(url, headers=no_scope.headers), 403)
        assert_problem(client.http.get(url, headers=own_but_no_scope.headers), 403)
        assert client.http.get(url, headers=alice.headers).status_code == 200
        assert_problem(client.http.get(url, headers={"ApiKey": "nope"}), 401)


# --- the documented shape ------------------------------------------------------------------


def _json_schema(node):
    """OpenAPI 3.0 schema → JSON Schema: `nullable` becomes a `null` alternative."""
    if isinstance(node, list):
        return [_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def test_responses_match_the_openapi_document(client, alice):
    import jsonschema

    document = client.http.get("/openapi.json").json_body
    components = _json_schema(document["components"])
    wf = submit(client, alice)
    jenkins, _ = api_data.instance_uuids(wf)
    api_data.store_builds(jenkins, [build("1", "failed", 30), build("2", "passed", 20)])
    for path, operation in (
        (f"/instances/{jenkins}/history", ("/instances/{instance_uuid}/history", "get")),
        (f"/workflows/{wf}/history?version=1", ("/workflows/{wf_uuid}/history", "get")),
    ):
        documented = document["paths"].get(operation[0], {}).get(operation[1])
        if documented is None:
            pytest.skip(f"{operation[0]} is not in openapi.json yet")
        schema = documented["responses"]["200"]["content"]["application/json"]["schema"]
        body = client.http.get(path).json_body
        jsonschema.validate(body, {**_json_schema(schema), "components": components})
