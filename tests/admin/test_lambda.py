"""The `admin` Lambda, invoked through the Chalice test client."""

from __future__ import annotations

import json

import pytest

from chalicelib.models import Base


@pytest.fixture
def db(database_url, monkeypatch):
    """conftest's `db`, emptied afterwards with DELETE and a sequence reset: the same end
    state as its TRUNCATE ... RESTART IDENTITY, many times faster on these tiny tables."""
    from sqlalchemy import text

    from chalicelib.db import get_engine

    monkeypatch.setenv("DATABASE_URL", database_url)
    yield database_url
    engine = get_engine()
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT setval(oid, 1, false) FROM pg_class WHERE relkind = 'S'"))


def _invoke(client, payload) -> dict:
    result = client.lambda_.invoke("admin", payload).payload
    json.dumps(result)  # a Lambda's result must be JSON-serialisable
    return result


def test_registry_list_empty(client):
    out = _invoke(client, {"args": ["registry", "list", "--json"]})
    assert out == {"exit_code": 0, "stdout": "[]\n", "stderr": "", "result": []}


def test_registry_add_then_list(client):
    added = _invoke(
        client,
        {
            "args": [
                "registry",
                "add",
                "seek",
                "seek",
                "ID",
                "SECRET",
                "https://seek:3000",
                "--json",
            ]
        },
    )
    assert added["exit_code"] == 0, added
    assert added["result"]["client_secret"]
    assert json.loads(added["stdout"]) == added["result"]
    out = _invoke(client, {"args": ["registry", "list", "--json"]})
    assert out["exit_code"] == 0
    assert out["stderr"] == ""
    assert [r["name"] for r in out["result"]] == ["seek"]
    assert out["result"][0]["client_id"] == added["result"]["client_id"]
    assert json.loads(out["stdout"]) == out["result"]


def test_text_output_also_carries_the_result(client):
    out = _invoke(client, {"args": ["db", "current"]})
    assert out["exit_code"] == 0
    assert out["stdout"].endswith("(head)\n")
    assert out["result"] == {"current": "0004", "head": "0004", "at_head": True}


def test_help(client):
    out = _invoke(client, {"args": ["--help"]})
    assert out["exit_code"] == 0
    assert out["stdout"].startswith("usage: python -m chalicelib.admin")
    assert "result" not in out


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "payload must be"),
        (None, "payload must be"),
        ({"args": "registry list"}, "payload must be"),
        ({"args": "x"}, "payload must be"),
        ({"args": None}, "payload must be"),
        ({"args": [], "stdin": 5}, "'stdin' must be a string"),
        ({"args": ["user", "list"], "stdin": ["pw"]}, "'stdin' must be a string"),
    ],
)
def test_bad_payloads_exit_2(client, payload, message):
    out = _invoke(client, payload)
    assert out["exit_code"] == 2
    assert out["stdout"] == ""
    assert out["stderr"].startswith("usage error: ")
    assert message in out["stderr"]
    assert out["stderr"].count("\n") == 1
    assert "result" not in out


def test_usage_error_from_arguments(client):
    out = _invoke(client, {"args": []})
    assert out["exit_code"] == 2
    assert out["stderr"].splitlines()[-1].startswith("usage error: ")


def test_user_create_with_stdin(client):
    out = _invoke(
        client,
        {
            "args": ["user", "create", "bob", "--password-stdin", "--json"],
            "stdin": "a-long-password\n",
        },
    )
    assert out["exit_code"] == 0, out
    assert out["result"]["username"] == "bob"
    assert out["result"]["has_password"] is True

    from chalicelib.auth.hashing import check_password
    from chalicelib.db import session_scope
    from chalicelib.services import users

    with session_scope() as s:
        assert check_password("a-long-password", users.get_user(s, "bob").password_hash)


def test_user_create_without_stdin(client):
    out = _invoke(client, {"args": ["user", "create", "bob", "--password-stdin"]})
    assert out["exit_code"] == 1
    assert out["stderr"] == "error: --password-stdin given but no password on standard input\n"
    listed = _invoke(client, {"args": ["user", "list", "--json"]})
    assert listed["result"] == []


def test_command_failure(client):
    out = _invoke(client, {"args": ["registry", "show", "nope", "--json"]})
    assert out["exit_code"] == 1
    assert out["stderr"] == "error: no registry named 'nope'\n"
    assert json.loads(out["stdout"]) == {"error": "error: no registry named 'nope'"}
    assert "result" not in out
