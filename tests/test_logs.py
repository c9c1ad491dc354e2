"""Structured JSON logs with the request id, and no credentials in any log output.

`chalicelib.logs.configure()` installs one stdout handler on the root logger per process;
the `log_output` fixture points that handler (and Chalice's own `app.log` handler) at a
buffer for the test, so what the service would print is what we read."""

from __future__ import annotations

import base64
import io
import json
import logging
from pathlib import Path

import pytest

from tests.api.helpers import form

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ROOT = Path(__file__).resolve().parents[1]


def _plain_stream_handlers(logger: logging.Logger) -> list[logging.StreamHandler]:
    # pytest's LogCaptureHandler subclasses StreamHandler: leave it alone.
    return [h for h in logger.handlers if type(h) is logging.StreamHandler]


class LogOutput:
    def __init__(self) -> None:
        self.buffer = io.StringIO()

    @property
    def text(self) -> str:
        return self.buffer.getvalue()

    def lines(self) -> list[str]:
        return [line for line in self.text.splitlines() if line.strip()]

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.lines()]


@pytest.fixture
def log_output(chalice_app):
    from chalicelib import logs

    logs.configure()
    root = logging.getLogger()
    ours = [
        h
        for h in _plain_stream_handlers(root)
        if any(isinstance(f, logs._ContextFilter) for f in h.filters)
    ]
    assert len(ours) == 1, root.handlers
    output = LogOutput()
    handlers = ours + _plain_stream_handlers(chalice_app.log)
    previous = [h.setStream(output.buffer) for h in handlers]
    try:
        yield output
    finally:
        for handler, stream in zip(handlers, previous, strict=True):
            handler.setStream(stream)


@pytest.fixture(params=["INFO", "DEBUG"])
def log_level(request):
    root = logging.getLogger()
    level = root.level
    root.setLevel(request.param)
    yield request.param
    root.setLevel(level)


@pytest.fixture
def bare_client(chalice_app):
    """The test client without the database, for answers that never reach it."""
    from chalice.test import Client

    with Client(chalice_app, stage_name="test", project_dir=str(ROOT)) as c:
        yield c


def header(response, name: str) -> str | None:
    return {k.lower(): v for k, v in response.headers.items()}.get(name.lower())


# --- JSON lines with the request id ----------------------------------------------------------


def test_access_log_is_json_with_request_id(bare_client, log_output):
    r = bare_client.http.get("/openapi.json?x=1")
    assert r.status_code == 200
    records = log_output.records()  # every line parses as JSON
    [access] = [rec for rec in records if rec.get("path") == "/openapi.json"]
    assert access["request_id"] == header(r, "X-Request-Id")
    assert access["level"] == "INFO"
    assert access["service"] == "lifemonitor"
    assert access["http_method"] == "GET"
    assert access["status"] == 200
    assert isinstance(access["duration_ms"], int | float)
    assert access["principal"] == "anonymous"
    assert access["message"] == "GET /openapi.json -> 200"


def test_each_request_logs_its_own_id(bare_client, log_output):
    first = bare_client.http.get("/openapi.json", headers={"X-Request-Id": "req-one"})
    second = bare_client.http.get("/ui/nope.js", headers={"X-Request-Id": "req-two"})
    assert header(first, "X-Request-Id") == "req-one"
    assert header(second, "X-Request-Id") == "req-two"
    by_path = {rec["path"]: rec for rec in log_output.records() if "path" in rec}
    assert by_path["/openapi.json"]["request_id"] == "req-one"
    assert by_path["/ui/nope.js"]["request_id"] == "req-two"
    assert by_path["/ui/nope.js"]["status"] == 404


def test_logs_inside_a_request_carry_its_id(bare_client, log_output, monkeypatch):
    """A module logger used by a view logs the same id as the access line."""
    from chalicelib.services import health

    def check():
        logging.getLogger("chalicelib.services.health").warning("looking at the database")
        return {"status": "healthy", "version": "x", "checks": {}}

    monkeypatch.setattr(health, "check", check)
    r = bare_client.http.get("/health")
    rid = header(r, "X-Request-Id")
    records = log_output.records()
    inner = [rec for rec in records if rec["message"] == "looking at the database"]
    assert inner and inner[0]["request_id"] == rid
    assert inner[0]["level"] == "WARNING"


def test_logs_outside_requests_have_no_request_id(log_output):
    logging.getLogger("chalicelib.jobs").info("scheduled work")
    [record] = log_output.records()
    assert record["message"] == "scheduled work"
    assert record.get("request_id") is None


def test_request_id_is_reset_after_the_request(bare_client, log_output):
    bare_client.http.get("/openapi.json", headers={"X-Request-Id": "req-gone"})
    logging.getLogger("chalicelib").info("after")
    after = [rec for rec in log_output.records() if rec["message"] == "after"]
    assert after and after[0].get("request_id") is None


def test_forged_request_id_cannot_inject_log_lines(bare_client, log_output):
    forged = 'x"}\n{"level":"ERROR","message":"forged'
    bare_client.http.get("/openapi.json", headers={"X-Request-Id": forged})
    records = log_output.records()
    assert not any(rec.get("message") == "forged" for rec in records)
    assert all(rec.get("request_id") != forged for rec in records)


def test_unhandled_error_is_logged_as_json(bare_client, log_output, monkeypatch):
    from chalicelib.services import health

    def explode():
        raise RuntimeError("kaboom")

    monkeypatch.setattr(health, "check", explode)
    r = bare_client.http.get("/health")
    assert r.status_code == 500
    records = log_output.records()  # raises on a non-JSON line
    errors = [rec for rec in records if rec["level"] == "ERROR"]
    assert errors and all(rec["request_id"] == header(r, "X-Request-Id") for rec in errors)


# --- redaction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("client_secret=s3cr3t", "client_secret=[REDACTED]"),
        ("a=1&client_secret=s3cr3t&b=2", "a=1&client_secret=[REDACTED]&b=2"),
        ('{"access_token": "abc.def", "x": 1}', '{"access_token": "[REDACTED]", "x": 1}'),
        ("refresh_token=r1", "refresh_token=[REDACTED]"),
        ("Authorization: Bearer abc123", "Authorization: Bearer [REDACTED]"),
        ("authorization: Basic Zm9vOmJhcg==", "authorization: Basic [REDACTED]"),
        ("ApiKey: k-123", "ApiKey: [REDACTED]"),
        ("api_key=k-123", "api_key=[REDACTED]"),
        ("PASSWORD='hunter2'", "PASSWORD='[REDACTED]'"),
        ("{'token': 'tok'}", "{'token': '[REDACTED]'}"),
    ],
)
def test_redact(text, expected):
    from chalicelib.logs import redact

    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "GET /registries -> 200",
        "grant_type=client_credentials&scope=registry.info",
        "principal oauth2 client=abc",
        "tokens: 3 issued",
    ],
)
def test_redact_leaves_ordinary_text(text):
    from chalicelib.logs import redact

    assert redact(text) == text


def test_filter_redacts_message_and_string_args(log_output):
    log = logging.getLogger("chalicelib.auth")
    log.warning("request body: client_secret=SEKRIT-A&grant_type=client_credentials")
    log.warning("header %s", "Authorization: Bearer SEKRIT-B")
    text = log_output.text
    assert "SEKRIT" not in text
    assert text.count("[REDACTED]") == 2
    assert len(log_output.records()) == 2


@pytest.mark.parametrize("case", ["placeholder", "dict-arg", "mapping-args", "exception"])
def test_filter_redacts_formatted_output(log_output, capsys, case):
    log = logging.getLogger("chalicelib.auth")
    if case == "placeholder":
        log.warning("client_secret=%s", "SEKRIT-C")
    elif case == "dict-arg":
        log.warning("headers %s", {"Authorization": "Bearer SEKRIT-D"})
    elif case == "mapping-args":
        log.warning("%(body)s", {"body": "client_secret=SEKRIT-E"})
    else:
        try:
            raise ValueError("access_token=SEKRIT-F")
        except ValueError:
            log.exception("token check failed")
    captured = capsys.readouterr()
    everything = log_output.text + captured.out + captured.err
    assert log_output.records(), "nothing was logged"
    assert "SEKRIT" not in everything


def test_no_credentials_in_logs_after_token_flow(
    client, registry, api_key, log_output, log_level, capsys, caplog
):
    """WorkflowHub's token call, its authenticated calls, a user's API key call and a few
    failures: neither the client secret, the access token nor the API key is printed."""
    from chalicelib.auth import scopes as S

    basic = base64.b64encode(f"{registry.client_id}:{registry.client_secret}".encode())
    r = client.http.post(
        "/oauth2/token",
        headers=FORM,
        body=form(
            client_id=registry.client_id,
            client_secret=registry.client_secret,
            grant_type="client_credentials",
            scope=S.WORKFLOWHUB_REQUEST,
        ),
    )
    assert r.status_code == 200, r.body
    token = r.json_body["access_token"]
    r2 = client.http.post(
        "/oauth2/token",
        headers={**FORM, "Authorization": f"Basic {basic.decode()}"},
        body=form(grant_type="client_credentials"),
    )
    assert r2.status_code == 200, r2.body
    token2 = r2.json_body["access_token"]
    for bearer in (token, token2):
        r = client.http.get("/registries/current", headers={"Authorization": f"Bearer {bearer}"})
        assert r.status_code == 200, r.body
    assert client.http.get("/registries/current", headers={"ApiKey": api_key}).status_code == 403
    assert client.http.get("/registries", headers={"ApiKey": api_key}).status_code == 200
    # Failures log too: a wrong secret, a mangled token, a mangled key.
    client.http.post(
        "/oauth2/token",
        headers=FORM,
        body=form(
            client_id=registry.client_id,
            client_secret=registry.client_secret + "x",
            grant_type="client_credentials",
        ),
    )
    client.http.get("/registries/current", headers={"Authorization": f"Bearer {token}x"})
    client.http.get("/registries", headers={"ApiKey": api_key + "x"})

    captured = capsys.readouterr()
    outputs = {
        "service log": log_output.text,
        "stdout": captured.out,
        "stderr": captured.err,
        "records": caplog.text,
    }
    assert log_output.records(), "nothing was logged"
    secrets = {
        "client secret": registry.client_secret,
        "access token": token,
        "second access token": token2,
        "api key": api_key,
        "basic credentials": basic.decode(),
    }
    for where, text in outputs.items():
        for what, secret in secrets.items():
            assert secret not in text, f"{what} found in {where}"
    # The caller is still identifiable without its credentials.
    principals = {rec.get("principal") for rec in log_output.records()}
    assert f"oauth2 client={registry.client_id}" in principals
    assert "api_key user=alice" in principals
