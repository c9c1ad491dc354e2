"""The admin function as the deploy's migration custom resource (chalicelib/admin/cfn.py):
it migrates, answers CloudFormation's pre-signed URL over real HTTP, and never fails a
rollback or a stack deletion."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from chalicelib.admin import handle_lambda_event


class _Recorder(BaseHTTPRequestHandler):
    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append(
            {"path": self.path, "headers": dict(self.headers), "body": json.loads(body)}
        )
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def response_url():
    """A stand-in for CloudFormation's pre-signed S3 URL, on a free loopback port."""
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/cfn-response?X-Amz-Signature=abc", server
    server.shutdown()
    server.server_close()


def cfn_event(url: str, kind: str, **extra) -> dict:
    return {
        "RequestType": kind,
        "ResponseURL": url,
        "StackId": "arn:aws:cloudformation:eu-west-1:123456789012:stack/lifemonitor-dev/x",
        "RequestId": "req-1",
        "ResourceType": "Custom::LifeMonitorSchema",
        "LogicalResourceId": "Migrate",
        "ResourceProperties": {"ServiceToken": "arn:...:admin", "Migrations": "abc"},
        **extra,
    }


class Context:
    log_stream_name = "2026/12/03/[$LATEST]abc"


@pytest.fixture
def fresh_db(tmp_path, monkeypatch, target_url):
    monkeypatch.setenv("DATABASE_URL", target_url)
    yield target_url


@pytest.fixture
def target_url(tmp_path):
    """An empty database of its own (migrated by the test, then dropped)."""
    import os

    from tests.conftest import postgres_server, worker_id

    server = postgres_server()
    if server is None:
        yield f"sqlite:///{tmp_path / 'cfn.db'}"
        return
    name = f"lm_cfn_{worker_id()}_{os.getpid()}"
    url = server.create_database(name)
    yield url
    from chalicelib.db import dispose_engines

    dispose_engines()
    server.drop_database(name)


def test_create_migrates_to_head_and_answers_success(fresh_db, response_url):
    from chalicelib import migrate

    url, server = response_url
    assert migrate.current() is None
    sent = handle_lambda_event(cfn_event(url, "Create"), Context())
    assert migrate.current() == migrate.head()
    (request,) = server.requests
    assert request["path"] == "/cfn-response?X-Amz-Signature=abc"
    # The pre-signed URL is signed for an empty content type.
    assert request["headers"].get("Content-Type", "") == ""
    body = request["body"]
    assert body == sent
    assert body["Status"] == "SUCCESS"
    assert body["PhysicalResourceId"] == "lifemonitor-schema"
    assert (body["StackId"], body["RequestId"], body["LogicalResourceId"]) == (
        "arn:aws:cloudformation:eu-west-1:123456789012:stack/lifemonitor-dev/x",
        "req-1",
        "Migrate",
    )
    assert body["Data"] == {"Revision": migrate.head()}


def test_update_keeps_the_physical_id_and_is_idempotent(fresh_db, response_url):
    url, server = response_url
    handle_lambda_event(cfn_event(url, "Create"), Context())
    event = cfn_event(url, "Update", PhysicalResourceId="lifemonitor-schema")
    sent = handle_lambda_event(event, Context())
    assert sent["Status"] == "SUCCESS" and sent["PhysicalResourceId"] == "lifemonitor-schema"
    assert len(server.requests) == 2


def test_a_newer_schema_than_the_code_is_left_alone(fresh_db, response_url):
    """A rollback re-sends the old properties to old code: no downgrade, no failure."""
    from sqlalchemy import text

    from chalicelib import migrate
    from chalicelib.db import get_engine

    url, _server = response_url
    migrate.upgrade("head")
    with get_engine().begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    sent = handle_lambda_event(cfn_event(url, "Update", PhysicalResourceId="x"), Context())
    assert sent["Status"] == "SUCCESS"
    assert "newer than this code" in sent["Reason"]
    assert migrate.current() == "9999"


def test_delete_never_touches_the_schema(fresh_db, response_url):
    from chalicelib import migrate

    url, _server = response_url
    migrate.upgrade("head")
    sent = handle_lambda_event(cfn_event(url, "Delete", PhysicalResourceId="p"), Context())
    assert sent["Status"] == "SUCCESS" and sent["PhysicalResourceId"] == "p"
    assert migrate.current() == migrate.head()


def test_a_failed_migration_is_reported_with_the_log_stream(monkeypatch, tmp_path, response_url):
    url, server = response_url
    # A database that cannot be reached: the migration fails, CloudFormation must hear it.
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody:x@127.0.0.1:1/nothing")
    monkeypatch.setenv("LM_DB_TIMEOUT", "2")
    sent = handle_lambda_event(cfn_event(url, "Create"), Context())
    assert sent["Status"] == "FAILED"
    assert "(log stream 2026/12/03/[$LATEST]abc)" in sent["Reason"]
    assert len(json.dumps(sent)) < 4096
    assert server.requests[0]["body"]["Status"] == "FAILED"


def test_ordinary_payloads_still_run_commands():
    out = handle_lambda_event({"args": ["--help"]})
    assert out["exit_code"] == 0 and "db" in out["stdout"]
