"""`python -m emulators`: the WorkflowHub and Jenkins of the local stack."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

from emulators import __main__ as main
from emulators.seek import build_minimal_crate

ROOT = Path(__file__).resolve().parents[2]


def metadata(crate: bytes) -> dict:
    return json.loads(zipfile.ZipFile(io.BytesIO(crate)).read("ro-crate-metadata.json"))


def instances(crate: bytes) -> list[dict]:
    return [e for e in metadata(crate)["@graph"] if "TestInstance" in str(e.get("@type"))]


def test_point_instances_at_moves_only_the_named_host():
    crate = build_minimal_crate(
        service="jenkins", instance_url="http://jenkins:8080/", resource="job/test/"
    )
    moved = main.point_instances_at(crate, "http://127.0.0.1:1234")
    [instance] = instances(moved)
    assert instance["url"] == "http://127.0.0.1:1234/"
    assert instance["resource"] == "job/test/"
    other = build_minimal_crate(service="jenkins", instance_url="https://ci.example.org/")
    assert main.point_instances_at(other, "http://127.0.0.1:1234") == other
    members = zipfile.ZipFile(io.BytesIO(moved)).namelist()
    assert members == zipfile.ZipFile(io.BytesIO(crate)).namelist()


def test_local_workflowhub_serves_21_and_a_failing_workflow_pointed_at_jenkins():
    seek = main.local_workflowhub("http://127.0.0.1:9999/")
    assert [i["url"] for i in instances(seek.crate_bytes(21, 1))] == ["http://127.0.0.1:9999/"]
    assert seek.workflow(21).public
    [failing] = instances(seek.crate_bytes(main.FAILING_WORKFLOW_ID))
    assert failing["url"] == "http://127.0.0.1:9999/" and failing["resource"] == "job/failing/"


def test_local_jenkins_has_a_passing_and_a_failing_job():
    jenkins = main.local_jenkins()
    assert jenkins.jobs["job/test"].builds[0]["result"] == "SUCCESS"
    assert jenkins.jobs["job/failing"].builds[0]["result"] == "FAILURE"


def test_serves_on_the_given_port_until_terminated():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulators", "jenkins", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == f"Jenkins emulator on http://127.0.0.1:{port}"
        url = f"http://127.0.0.1:{port}/job/test/lastBuild/api/json"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert json.load(response)["result"] == "SUCCESS"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
