"""`admin refresh [--all | --instance UUID | --workflow UUID] [--json]`: what it refreshes
(next-check times ignored, leases honoured), its summary and progress bar, and its
one-line refusals."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.admin import handle_lambda_event, run
from chalicelib.models import utcnow
from chalicelib.testing import BuildData, CIError, FetchResult

MISSING = "00000000-0000-4000-8000-000000000000"


@dataclass
class FakeCI:
    """One passed build per resource, or the error set for it; records what was asked."""

    errors: dict[str, Exception] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def fetch_builds(self, service_url, instance, limit):
        self.calls.append(instance.resource)
        if instance.resource in self.errors:
            raise self.errors[instance.resource]
        started = datetime(2030, 1, 1, tzinfo=UTC)
        return FetchResult(builds=[BuildData(f"{instance.resource}-1", "passed", started)])


@pytest.fixture
def fake_ci(db):
    from chalicelib import testing

    adapter = FakeCI()
    testing.register("fake", lambda: adapter)
    yield adapter
    testing.unregister("fake")


def add_workflow(resources_per_version: list[list[str]], **fields) -> tuple[str, list[str]]:
    """A workflow with one version per list, each with one suite of these instances;
    returns (workflow uuid, instance uuids)."""
    from chalicelib.db import session_scope
    from chalicelib.models import (
        TestingService,
        TestInstance,
        TestSuite,
        Workflow,
        WorkflowVersion,
    )

    with session_scope() as s:
        service = s.query(TestingService).filter_by(url="https://fake.example").one_or_none()
        service = service or TestingService(type="fake", url="https://fake.example")
        workflow = Workflow(name="wf")
        instances = []
        for n, resources in enumerate(resources_per_version, 1):
            suite = TestSuite(workflow_version=WorkflowVersion(workflow=workflow, version=str(n)))
            instances += [
                TestInstance(suite=suite, resource=r, name=r, testing_service=service, **fields)
                for r in resources
            ]
        s.add_all(instances)
        s.flush()
        return workflow.uuid, [i.uuid for i in instances]


def instance(uuid: str):
    from chalicelib.db import session_scope
    from chalicelib.models import TestInstance

    with session_scope() as s:
        return s.query(TestInstance).filter_by(uuid=uuid).one()


def ok(*argv: str):
    result = run(["refresh", *argv])
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    return result


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [[], ["--all", "--instance", MISSING], ["--workflow"], ["--all", "--workflow", MISSING]],
    ids=["none", "all-and-instance", "no-uuid", "all-and-workflow"],
)
def test_usage_errors(argv):
    result = run(["refresh", *argv])
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("usage: python -m chalicelib.admin refresh")
    assert lines[-1].startswith("usage error: ")
    assert sum(line.startswith("usage error") for line in lines) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--instance", MISSING], f"error: unknown test instance: {MISSING}"),
        (["--workflow", MISSING], f"error: unknown workflow: {MISSING}"),
        (["--instance", "not-a-uuid"], "error: not a test instance UUID: 'not-a-uuid'"),
        (["--workflow", "42"], "error: not a workflow UUID: '42'"),
    ],
)
def test_bad_uuids_fail_with_one_line(fake_ci, argv, message):
    add_workflow([["a"]])
    result = run(["refresh", *argv])
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", message + "\n")
    result = run(["refresh", *argv, "--json"])
    assert result.exit_code == 1 and json.loads(result.stdout) == {"error": message}
    assert fake_ci.calls == []


def test_one_unknown_uuid_among_known_ones_refreshes_nothing(fake_ci):
    _, [known] = add_workflow([["a"]])
    result = run(["refresh", "--instance", known, "--instance", MISSING])
    assert result.exit_code == 1 and MISSING in result.stderr
    assert fake_ci.calls == []


# --- what is refreshed -------------------------------------------------------------------------


def test_instance_refreshes_it_now_whatever_its_next_check(fake_ci):
    later = utcnow() + timedelta(hours=3)
    _, [a, b] = add_workflow([["a", "b"]], next_check_at=later)
    data = json.loads(ok("--instance", a, "--json").stdout)
    assert fake_ci.calls == ["a"]
    assert data["selected"] == data["refreshed"] == 1
    assert data["outcomes"] == {"updated": 1}
    row = instance(a)
    assert row.latest_build_id is not None and row.lease_until is None
    assert row.next_check_at < later  # rescheduled from now
    assert instance(b).next_check_at == later  # untouched


def test_workflow_refreshes_every_version(fake_ci):
    wf, ids = add_workflow([["v1-a"], ["v2-a", "v2-b"]])
    add_workflow([["other"]])
    data = ok("--workflow", wf, "--json").data
    assert sorted(fake_ci.calls) == ["v1-a", "v2-a", "v2-b"]
    assert data["outcomes"] == {"updated": 3}
    assert all(instance(u).latest_build_id for u in ids)


def test_all_with_errors_and_leases(fake_ci):
    from chalicelib.db import session_scope
    from chalicelib.jobs import refresh

    _, [good, bad, busy] = add_workflow([["good", "bad", "busy"]])
    fake_ci.errors["bad"] = CIError("Jenkins (ci.example): answered 502")
    with session_scope() as s:  # a worker is on it
        s.query(refresh.TestInstance).filter_by(uuid=busy).update(
            {"lease_until": utcnow() + refresh.LEASE}
        )
    result = ok("--all")
    assert sorted(fake_ci.calls) == ["bad", "good"]  # never races the worker
    data = result.data
    assert data["outcomes"] == {"error": 1, "leased": 1, "updated": 1}
    assert data["errors"] == [
        {
            "instance": bad,
            "name": "bad",
            "workflow": "wf (1)",
            "outcome": "error",
            "reason": "Jenkins (ci.example): answered 502",
        }
    ]
    assert data["skipped"] == [{"instance": busy, "name": "busy", "workflow": "wf (1)"}]
    text = result.stdout
    assert text.startswith("refreshed 2 of 3 instances in ")
    assert "  error    1\n" in text and "  updated  1\n" in text and "  leased   1\n" in text
    assert f"errors:\n  {bad} bad [wf (1)]: Jenkins (ci.example): answered 502\n" in text
    assert f"skipped (another refresh holds them):\n  {busy} busy [wf (1)]\n" in text
    assert instance(bad).last_error == "Jenkins (ci.example): answered 502"
    assert instance(busy).latest_build_id is None
    assert instance(good).latest_build_id is not None and instance(good).last_error is None


def test_an_expired_lease_is_taken_over(fake_ci):
    from chalicelib.db import session_scope
    from chalicelib.jobs import refresh

    _, [stale] = add_workflow([["stale"]])
    with session_scope() as s:
        s.query(refresh.TestInstance).filter_by(uuid=stale).update(
            {"lease_until": utcnow() - timedelta(seconds=1)}
        )
    assert ok("--all", "--json").data["outcomes"] == {"updated": 1}


def test_nothing_to_refresh(fake_ci):
    result = ok("--all")
    assert result.data["selected"] == 0
    assert result.stdout.startswith("refreshed 0 of 0 instances")


def test_past_the_time_budget_instances_are_deferred(fake_ci):
    from chalicelib.jobs import refresh

    _, [a] = add_workflow([["a"]])
    summary = refresh.refresh_now(everything=True, time_budget=0)
    assert summary["outcomes"] == {"deferred": 1} and fake_ci.calls == []
    assert instance(a).lease_until is not None  # claimed again when the lease runs out


def test_through_the_admin_lambda(fake_ci):
    _, [a] = add_workflow([["a"]])
    out = handle_lambda_event({"args": ["refresh", "--instance", a, "--json"]})
    assert out["exit_code"] == 0 and out["result"]["outcomes"] == {"updated": 1}
    out = handle_lambda_event({"args": ["refresh"]})
    assert out["exit_code"] == 2


# --- progress --------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_only(fake_ci, monkeypatch):
    add_workflow([["a", "b", "c"]])
    fake_ci.errors["b"] = CIError("down")
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    result = run(["refresh", "--all"])
    assert result.exit_code == 0
    drawn = terminal.getvalue()
    assert drawn.startswith("\rrefresh [") and drawn.endswith("\n")
    frames = drawn.strip("\n").split("\r")[1:]
    assert len(frames) == 3
    assert frames[-1] == f"refresh [{'#' * 30}] 3/3  errors: 1"
    assert "#" * 10 + "." * 20 in frames[0]  # 1/3
    # Not a terminal (a pipe, a log, a Lambda): no bar, only the summary.
    plain = io.StringIO()
    monkeypatch.setattr("sys.stderr", plain)
    assert run(["refresh", "--all"]).exit_code == 0
    assert plain.getvalue() == ""


def test_help():
    result = run(["refresh", "--help"])
    assert result.exit_code == 0
    for flag in ("--all", "--instance UUID", "--workflow UUID", "--json"):
        assert flag in result.stdout
    assert "    refresh" in run(["--help"]).stdout
