"""`app.py`: the Lambdas it defines, an import that touches nothing, and no Chalice error
shape on the wire."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAMBDAS = {"refresh", "worker", "admin", "notify", "housekeeping", "webhook_worker"}
# The views this file knows of; others are added as the API grows.
ROUTE_VIEWS = {
    "health",
    "openapi",
    "swagger_ui",
    "swagger_asset",
    "token",
    "list_registries",
    "current_registry",
    "get_registry",
}


@pytest.fixture
def bare_client(chalice_app):
    """The test client without the database, for answers that never reach it."""
    from chalice.test import Client

    with Client(chalice_app, stage_name="test", project_dir=str(ROOT)) as c:
        yield c


def test_handler_map_is_routes_plus_lambdas(chalice_app):
    views = {
        entry.view_name for methods in chalice_app.routes.values() for entry in methods.values()
    }
    assert views >= ROUTE_VIEWS
    assert set(chalice_app.handler_map) == views | LAMBDAS
    assert not views & LAMBDAS


def test_api_handler_is_the_app(chalice_app):
    import app

    assert app.app is chalice_app
    assert callable(chalice_app)  # `app.app` is the api_handler Lambda's entry point
    assert chalice_app.app_name == "lifemonitor"
    assert chalice_app.debug is False  # a debug app would put tracebacks in 500s


def test_refresh_is_a_five_minute_schedule(chalice_app):
    from chalice.app import ScheduledEventConfig

    [config] = [
        e
        for e in chalice_app.event_sources
        if isinstance(e, ScheduledEventConfig) and e.name == "refresh"
    ]
    assert config.handler_string == "app.refresh"
    assert config.schedule_expression.to_string() == "rate(5 minutes)"


def test_worker_reads_the_refresh_queue(chalice_app):
    from chalice.app import SQSEventConfig

    [config] = [
        e for e in chalice_app.event_sources if isinstance(e, SQSEventConfig) and e.name == "worker"
    ]
    assert config.queue == "lifemonitor-refresh"
    assert config.batch_size == 10
    assert config.maximum_batching_window_in_seconds == 5


def test_admin_is_a_pure_lambda(chalice_app):
    assert [f.name for f in chalice_app.pure_lambda_functions] == ["admin"]


def test_every_lambda_has_a_config_entry():
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    assert set(config["lambda_functions"]) == LAMBDAS | {"api_handler"}
    assert config["lambda_functions"]["refresh"].get("reserved_concurrency") == 1


def test_unknown_lambda_is_not_invokable(bare_client):
    from chalice.test import FunctionNotFoundError

    with pytest.raises(FunctionNotFoundError):
        bare_client.lambda_.invoke("api_handler_that_does_not_exist")


def test_refresh_lambda_runs_inline_without_a_queue(client):
    result = client.lambda_.invoke(
        "refresh",
        client.events.generate_cw_event(
            source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
        ),
    )
    assert result.payload["mode"] == "inline"
    assert result.payload["claimed"] == 0


def test_worker_lambda_with_no_records(bare_client):
    result = bare_client.lambda_.invoke("worker", bare_client.events.generate_sqs_event([]))
    assert result.payload == {"batchItemFailures": []}


def test_admin_lambda_answers(client):
    result = client.lambda_.invoke("admin", {"args": ["registry", "list", "--json"]})
    assert isinstance(result.payload, dict)
    assert result.payload.get("exit_code") == 0, result.payload


# --- import side effects -----------------------------------------------------------------------

_IMPORT_PROBE = textwrap.dedent(
    """
    import json, socket, sys
    connects = []
    _orig_connect = socket.socket.connect
    def _connect(self, address):
        connects.append(repr(address))
        return _orig_connect(self, address)
    socket.socket.connect = _connect
    socket.create_connection = lambda *a, **k: connects.append(repr(a)) or (_ for _ in ()).throw(
        OSError("no connections at import"))

    import chalicelib.config as config
    settings_reads = []
    _orig_build = config._build
    def _build(env):
        settings_reads.append(1)
        return _orig_build(env)
    config._build = _build

    import app

    db = sys.modules.get("chalicelib.db")
    print(json.dumps({
        "connects": connects,
        "settings_reads": len(settings_reads),
        "engines": len(db._engines) if db else 0,
        "handlers": sorted(app.app.handler_map),
        "heavy": sorted(m for m in ("sqlalchemy", "pg8000", "boto3", "authlib")
                        if m in sys.modules),
    }))
    """
)


def test_import_opens_no_connection_and_reads_no_settings():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LM_", "DATABASE_"))}
    env.update(
        {
            "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x",
            "LM_SECRETS_BACKEND": "bogus",
            "EXTERNAL_SERVER_URL": "not a url",
            "LM_TOKEN_EXPIRES_IN": "soon",
            "PYTHONPATH": str(ROOT),
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["connects"] == []
    assert report["settings_reads"] == 0
    assert report["engines"] == 0
    assert set(report["handlers"]) >= LAMBDAS
    # Cold start: the database driver and AWS SDK load on first use, not at import.
    assert report["heavy"] == []


def test_invalid_settings_surface_on_first_request_not_at_import(client, monkeypatch):
    """A bad environment is a 500 on use, not an import-time crash."""
    with monkeypatch.context() as m:
        m.setenv("EXTERNAL_SERVER_URL", "ftp://wrong")
        r = client.http.get("/registries")
    assert r.status_code == 500
    assert b"ftp://wrong" not in r.body


def test_invalid_settings_answer_problem_json(client, monkeypatch):
    with monkeypatch.context() as m:
        m.setenv("EXTERNAL_SERVER_URL", "ftp://wrong")
        r = client.http.get("/registries")
    assert r.status_code == 500
    assert "Code" not in r.json_body
    assert r.json_body["title"] == "Internal Error"


# --- Chalice's {"Code", "Message"} never leaks -----------------------------------------------


def assert_no_chalice_shape(r) -> None:
    assert r.status_code >= 400
    payload = r.json_body
    assert "Code" not in payload and "Message" not in payload, payload
    assert "message" not in payload  # API Gateway's own {"message": ...}
    assert {"type", "title", "status", "detail", "instance", "extra_info"} <= set(payload)
    ctype = {k.lower(): v for k, v in r.headers.items()}["content-type"]
    assert ctype.startswith("application/problem+json")


@pytest.mark.parametrize(
    ("method", "path", "headers", "body"),
    [
        ("GET", "/nope", {}, b""),
        ("POST", "/nope", {"Authorization": "Bearer x"}, b""),
        ("DELETE", "/health", {}, b""),
        ("PUT", "/registries", {}, b""),
        ("POST", "/registries/current", {}, b""),
        ("POST", "/oauth2/token", {"Content-Type": "application/json"}, b"{}"),
        ("POST", "/oauth2/token", {"Content-Type": "text/plain"}, b"x"),
        ("GET", "/registries/current", {}, b""),
        ("GET", "/ui/x", {}, b""),
    ],
)
def test_chalice_error_shape_never_leaks(bare_client, method, path, headers, body):
    assert_no_chalice_shape(bare_client.http.request(method, path, headers=headers, body=body))


def test_chalice_error_shape_never_leaks_on_database_errors(client):
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for method, path, headers, body in [
        ("POST", "/oauth2/token", form, b""),
        ("GET", "/registries/x", {}, b""),
        ("GET", "/registries", {"ApiKey": "x"}, b""),
    ]:
        assert_no_chalice_shape(client.http.request(method, path, headers=headers, body=body))


@pytest.mark.parametrize(
    "exc_name",
    [
        "BadRequestError",
        "UnauthorizedError",
        "ForbiddenError",
        "NotFoundError",
        "ConflictError",
        "TooManyRequestsError",
        "ChaliceViewError",
    ],
)
def test_chalice_view_errors_are_reshaped(bare_client, monkeypatch, exc_name):
    import chalice

    from chalicelib.services import health

    exc_type = getattr(chalice, exc_name)

    def fail():
        raise exc_type("view said no")

    monkeypatch.setattr(health, "check", fail)
    r = bare_client.http.get("/health")
    assert r.status_code == exc_type.STATUS_CODE
    payload = r.json_body
    assert "Code" not in payload and "Message" not in payload
    assert payload["status"] == exc_type.STATUS_CODE
    if exc_type.STATUS_CODE < 500:
        assert payload["detail"] == "view said no"
    else:
        assert "view said no" not in r.body.decode()


def test_notify_and_housekeeping_schedules_run(chalice_app, client):
    from chalice.app import ScheduledEventConfig

    rates = {
        e.name: e.schedule_expression.to_string()
        for e in chalice_app.event_sources
        if isinstance(e, ScheduledEventConfig)
    }
    assert rates["notify"] == "rate(1 minute)" and rates["housekeeping"] == "rate(1 hour)"
    event = client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
    )
    result = client.lambda_.invoke("notify", event)
    assert result.payload["email"] == {"sent": 0, "failed": 0, "skipped": 0}
    assert result.payload["webhooks"] == {"claimed": 0, "sent": 0}
    result = client.lambda_.invoke("housekeeping", event)
    assert result.payload == {"stale": 0, "cleanup": 0, "registration_jobs": 0}


def test_webhook_worker_with_no_records(bare_client):
    result = bare_client.lambda_.invoke("webhook_worker", bare_client.events.generate_sqs_event([]))
    assert result.payload == {"batchItemFailures": []}
