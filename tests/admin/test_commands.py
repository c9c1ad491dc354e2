"""Admin commands through `chalicelib.admin.run` (and once through a real process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from chalicelib.admin import run
from chalicelib.config import PROJECT_ROOT, get_settings
from chalicelib.models import Base
from tests.support.migrations import newest_migration

HEAD, BEFORE_HEAD = newest_migration()

SEEK_ADD = [
    "registry",
    "add",
    "seek",
    "seek",
    "ID",
    "SECRET",
    "https://seek:3000",
    "--redirect-uris",
    "https://seek:3000",
]

COMMANDS = [
    [],
    ["db"],
    ["db", "upgrade"],
    ["db", "downgrade"],
    ["db", "current"],
    ["registry"],
    ["registry", "add"],
    ["registry", "show"],
    ["registry", "list"],
    ["registry", "update"],
    ["registry", "delete"],
    ["user"],
    ["user", "create"],
    ["user", "list"],
    ["api-key"],
    ["api-key", "create"],
    ["api-key", "list"],
    ["api-key", "delete"],
]


def _ok(*argv: str, stdin: str | None = None):
    result = run(list(argv), stdin=stdin)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    return result


def _json(*argv: str, stdin: str | None = None):
    result = _ok(*argv, "--json", stdin=stdin)
    data = json.loads(result.stdout)
    assert data == json.loads(json.dumps(result.data, default=str))
    return data


def _assert_usage_error(stderr: str) -> None:
    """The usage text (argparse may wrap it), then exactly one `usage error:` line."""
    assert stderr.endswith("\n")
    lines = stderr.splitlines()
    assert lines[0].startswith("usage: python -m chalicelib.admin"), stderr
    assert lines[-1].startswith("usage error: "), stderr
    assert all(not line.startswith("usage error") for line in lines[:-1]), stderr
    assert all(line.startswith(" ") for line in lines[1:-1]), stderr  # usage continuation


def _state() -> dict:
    """Every table's rows and the secrets file: what a failed command must not change."""
    from chalicelib.db import session_scope

    with session_scope() as s:
        rows = {
            t.name: sorted(map(repr, s.execute(select(t)).all()))
            for t in Base.metadata.sorted_tables
        }
        rows["#"] = {
            t.name: s.execute(select(func.count()).select_from(t)).scalar_one()
            for t in Base.metadata.sorted_tables
        }
    path = get_settings().secrets_file
    return {"rows": rows, "secrets": path.read_text() if path.exists() else None}


# --- help -------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a) or "(top)")
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help(argv, flag):
    result = run([*argv, flag])
    assert result.exit_code == 0
    assert result.stderr == ""
    assert result.stdout.startswith("usage: python -m chalicelib.admin")
    assert " ".join(["python -m chalicelib.admin", *argv]) in result.stdout.splitlines()[0]
    assert "--json" in result.stdout


def test_top_level_help_lists_groups():
    out = run(["--help"]).stdout
    for group in ("db", "registry", "user", "api-key"):
        assert f"    {group}" in out


@pytest.mark.parametrize(
    ("group", "commands"),
    [
        ("db", ["upgrade", "downgrade", "current"]),
        ("registry", ["add", "show", "list", "update", "delete"]),
        ("user", ["create", "list"]),
        ("api-key", ["create", "list", "delete"]),
    ],
)
def test_group_help_lists_commands(group, commands):
    out = run([group, "--help"]).stdout
    for command in commands:
        assert f"    {command}" in out, command


def test_help_wins_over_missing_arguments():
    result = run(["registry", "add", "only-a-name", "--help"])
    assert result.exit_code == 0
    assert "CLIENT_SECRET" in result.stdout


# --- usage errors (no database needed) -----------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nope"],
        ["registry"],
        ["registry", "add", "seek"],
        ["user", "create"],
        ["api-key", "delete"],
        ["db", "downgrade"],
        ["registry", "frobnicate"],
        ["user", "list", "--bogus"],
        [*SEEK_ADD, "--client-auth-method", "none"],
    ],
    ids=lambda a: " ".join(a) or "(none)",
)
def test_usage_errors_exit_2(argv):
    result = run(argv)
    assert result.exit_code == 2
    assert result.stdout == ""
    _assert_usage_error(result.stderr)


def test_arguments_are_stringified():
    result = run(["user", 5])
    assert result.exit_code == 2
    assert "invalid choice: '5'" in result.stderr


# --- db ---------------------------------------------------------------------------------


def test_newest_migration_is_read_from_the_files():
    assert HEAD.isdigit() and len(HEAD) == 4, HEAD  # the literal revision, e.g. "0002"
    assert HEAD >= "0002" and BEFORE_HEAD is not None and BEFORE_HEAD < HEAD


def test_db_current_at_head(db):
    # The literal newest revision: a command that echoed Alembic's head would not pass.
    assert _ok("db", "current").stdout == f"{HEAD} (head)\n"
    assert _json("db", "current") == {"current": HEAD, "head": HEAD, "at_head": True}


@pytest.fixture
def fresh_sqlite(monkeypatch, tmp_path):
    from chalicelib.db import dispose_engines

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    yield url
    dispose_engines()


def test_db_upgrade_downgrade_on_a_fresh_database(fresh_sqlite):
    assert _ok("db", "current").stdout == "(empty database: no migration applied)\n"
    assert _json("db", "current") == {"current": None, "head": HEAD, "at_head": False}
    assert _ok("db", "upgrade").stdout == f"database upgraded: empty -> {HEAD} (head)\n"
    assert _ok("db", "current").stdout == f"{HEAD} (head)\n"
    assert _json("db", "upgrade") == {"from": HEAD, "to": HEAD, "head": HEAD}
    assert _ok("user", "list").stdout == "(none)\n"
    assert _ok("db", "downgrade", "base").stdout == f"database downgraded: {HEAD} -> empty (base)\n"
    assert _json("db", "current")["current"] is None
    assert _json("db", "upgrade", "0001") == {"from": None, "to": "0001", "head": HEAD}
    assert _ok("db", "current").stdout == "0001\n"
    assert _json("db", "upgrade", "head") == {"from": "0001", "to": HEAD, "head": HEAD}
    assert _json("db", "downgrade", "-1") == {"from": HEAD, "to": BEFORE_HEAD, "head": HEAD}
    assert _json("db", "upgrade", HEAD)["to"] == HEAD


@pytest.mark.parametrize("command", ["upgrade", "downgrade"])
def test_db_unknown_revision(fresh_sqlite, command):
    _ok("db", "upgrade")
    result = run(["db", command, "nonexistent"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == "error: unknown revision 'nonexistent'\n"
    assert _ok("db", "current").stdout == f"{HEAD} (head)\n"
    failed = run(["db", command, "nonexistent", "--json"])
    assert failed.exit_code == 1
    assert json.loads(failed.stdout) == {"error": "error: unknown revision 'nonexistent'"}


@pytest.mark.parametrize(
    "argv",
    [
        ["registry", "list"],
        ["user", "list", "--json"],
        ["api-key", "list"],
        ["registry", "show", "x"],
        [*SEEK_ADD],
        ["user", "create", "bob"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_unmigrated_database_hints_at_db_upgrade(fresh_sqlite, argv):
    result = run(argv)
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: database: ")
    assert "db upgrade" in result.stderr
    assert get_settings().secrets_file.exists() is False


# --- registry ---------------------------------------------------------------------------


def test_registry_add_json_and_show_same_secret(db):
    added = _json(*SEEK_ADD)
    assert added["client_id"] and added["client_secret"]
    assert added["name"] == "seek" and added["identifier"] == "seek"
    assert added["registry_client_id"] == "ID"
    assert added["uri"] == "https://seek:3000"
    assert added["redirect_uris"] == ["https://seek:3000"]
    assert added["authorize_url"] == "http://lm.test/oauth2/authorize/seek"
    assert added["token_url"] == "http://lm.test/oauth2/token"
    assert added["callback_url"] == "http://lm.test/oauth2/authorized/seek"
    shown = _json("registry", "show", "seek")
    assert shown == added
    assert _json("registry", "show", added["uuid"])["client_secret"] == added["client_secret"]
    # The registry's own secret went to the parameter store, not the output.
    assert "SECRET" not in json.dumps(shown)
    secrets = json.loads(get_settings().secrets_file.read_text())
    assert secrets[f"/lifemonitor/test/registries/{added['uuid']}/client_secret"] == "SECRET"


def test_registry_add_text_output(db, monkeypatch):
    monkeypatch.setenv("EXTERNAL_SERVER_URL", "https://lm.example.org")
    out = _ok(*SEEK_ADD).stdout
    info = json.loads(_ok("registry", "show", "seek", "--json").stdout)
    lines = dict(line.split(":", 1) for line in out.splitlines())
    lines = {k.strip(): v.strip() for k, v in lines.items()}
    assert lines["REGISTRY CLIENT ID"] == info["client_id"]
    assert lines["REGISTRY CLIENT SECRET"] == info["client_secret"]
    assert lines["AUTHORIZE URL"] == "https://lm.example.org/oauth2/authorize/seek"
    assert lines["ACCESS TOKEN URL"] == "https://lm.example.org/oauth2/token"
    assert lines["CALLBACK URL"] == "https://lm.example.org/oauth2/authorized/seek"
    assert lines["REDIRECT URIS"] == "https://seek:3000"
    assert lines["CLIENT AUTH METHOD"] == "client_secret_post"
    assert set(lines["ALLOWED SCOPES"].split()) == set(info["scopes"])
    assert lines["ALLOWED GRANT TYPES"] == "client_credentials authorization_code refresh_token"
    assert _ok("registry", "show", "seek").stdout == out


def test_registry_list(db):
    assert _ok("registry", "list").stdout == "(none)\n"
    assert _json("registry", "list") == []
    _ok(*SEEK_ADD)
    _ok("registry", "add", "WorkflowHub", "seek", "wid", "wsecret", "https://wfh.example")
    items = _json("registry", "list")
    assert [(i["name"], i["identifier"]) for i in items] == [
        ("WorkflowHub", "workflow_hub"),
        ("seek", "seek"),
    ]
    assert all("client_secret" not in i for i in items)
    text = _ok("registry", "list").stdout.splitlines()
    assert text[0].split() == ["NAME", "IDENTIFIER", "TYPE", "URI", "UUID"]
    assert text[1].split()[:4] == ["WorkflowHub", "workflow_hub", "seek", "https://wfh.example"]
    assert len(text) == 3


def test_registry_update(db):
    added = _json(*SEEK_ADD)
    updated = _json(
        "registry",
        "update",
        "seek",
        "--name",
        "Seek Dev",
        "--client-name",
        "seekdev",
        "--api-url",
        "https://seek.example",
        "--client-id",
        "ID2",
        "--client-secret",
        "SECRET2",
        "--redirect-uris",
        "https://a.ex,https://b.ex",
        "--client-auth-method",
        "client_secret_basic",
    )
    assert updated["uuid"] == added["uuid"]
    assert updated["name"] == "Seek Dev"
    assert updated["identifier"] == "seekdev"
    assert updated["authorize_url"] == "http://lm.test/oauth2/authorize/seekdev"
    assert updated["callback_url"] == "http://lm.test/oauth2/authorized/seekdev"
    assert updated["uri"] == "https://seek.example"
    assert updated["registry_client_id"] == "ID2"
    assert updated["redirect_uris"] == ["https://a.ex", "https://b.ex"]
    assert updated["client_auth_method"] == "client_secret_basic"
    assert updated["client_secret"] == added["client_secret"]
    assert _json("registry", "show", "seekdev")["name"] == "Seek Dev"
    assert run(["registry", "show", "seek"]).exit_code == 1
    secrets = json.loads(get_settings().secrets_file.read_text())
    assert secrets[f"/lifemonitor/test/registries/{added['uuid']}/client_secret"] == "SECRET2"


def test_registry_update_rotates_the_client_secret(db):
    added = _json(*SEEK_ADD)
    rotated = _json("registry", "update", added["uuid"], "--rotate-client-secret")
    assert rotated["client_secret"] != added["client_secret"]
    assert _json("registry", "show", "seek")["client_secret"] == rotated["client_secret"]


def test_registry_delete(db):
    added = _json(*SEEK_ADD)
    before_other = _state()
    assert before_other["rows"]["#"]["registries"] == 1
    result = _ok("registry", "delete", "seek")
    assert result.stdout == f"registry 'seek' ({added['uuid']}) deleted\n"
    after = _state()
    assert after["rows"]["#"]["registries"] == 0
    assert after["rows"]["#"]["oauth2_clients"] == 0
    assert json.loads(after["secrets"]) == {}
    failed = run(["registry", "delete", "seek"])
    assert failed.exit_code == 1
    assert failed.stderr == "error: no registry named 'seek'\n"
    _ok(*SEEK_ADD)  # the name is free again
    assert _json("registry", "delete", "seek")["deleted"] is True


# --- user -------------------------------------------------------------------------------


def test_user_create_with_password_from_stdin(db):
    from chalicelib.auth.hashing import check_password
    from chalicelib.db import session_scope
    from chalicelib.services import users

    out = _ok(
        "user",
        "create",
        "bob",
        "--password-stdin",
        "--email",
        "bob@example.org",
        stdin="s3cret-pass\n",
    )
    assert out.stdout.startswith("user 'bob' created (id ")
    with session_scope() as s:
        bob = users.get_user(s, "bob")
        assert bob.email == "bob@example.org"
        assert check_password("s3cret-pass", bob.password_hash)  # newline stripped


def test_user_create_without_stdin_fails(db):
    before = _state()
    result = run(["user", "create", "bob", "--password-stdin"])
    assert result.exit_code == 1
    assert result.stderr == "error: --password-stdin given but no password on standard input\n"
    assert _state() == before


def test_user_create_and_list(db):
    created = _json("user", "create", "carol")
    assert created["username"] == "carol" and created["has_password"] is False
    _ok("user", "create", "alice", "--email", "a@example.org")
    users = _json("user", "list")
    assert [u["username"] for u in users] == ["alice", "carol"]
    assert users[0]["email"] == "a@example.org"
    text = _ok("user", "list").stdout.splitlines()
    assert text[0].split() == ["ID", "USERNAME", "EMAIL", "CREATED"]
    assert text[1].split()[1:3] == ["alice", "a@example.org"]


# --- api-key ----------------------------------------------------------------------------


def test_api_key_create_list_delete(db):
    from chalicelib.auth import apikeys
    from chalicelib.db import session_scope

    _ok("user", "create", "alice")
    created = _json("api-key", "create", "alice", "--scope", "workflow.read")
    assert created["scopes"] == ["workflow.read"]
    assert created["username"] == "alice"
    key = created["key"]
    assert created["prefix"] == key[:8]
    with session_scope() as s:
        assert apikeys.authenticate(s, key).scopes == {"workflow.read"}

    text = _ok("api-key", "create", "alice").stdout
    assert "shown once" in text
    all_scopes = text.splitlines()[-1]
    assert all_scopes.startswith("scopes: ") and "registry.info" in all_scopes
    assert "registry.workflow." not in all_scopes and "registry.user.workflow" not in all_scopes

    listed = _json("api-key", "list")
    assert len(listed) == 2
    assert all("key" not in k for k in listed)
    assert key not in _ok("api-key", "list").stdout
    assert _json("api-key", "list", "alice") == listed

    deleted = _ok("api-key", "delete", key[:8])
    assert deleted.stdout == f"API key {key[:8]}… of alice deleted\n"
    assert [k["prefix"] for k in _json("api-key", "list")] != [key[:8]]
    assert len(_json("api-key", "list")) == 1
    with session_scope() as s, pytest.raises(Exception, match="Invalid API key"):
        apikeys.authenticate(s, key)


def test_api_key_create_repeated_scopes(db):
    _ok("user", "create", "alice")
    created = _json(
        "api-key", "create", "alice", "--scope", "workflow.read", "--scope", "user.profile"
    )
    assert created["scopes"] == ["user.profile", "workflow.read"]


# --- failures: non-zero, one line, nothing changed ---------------------------------------


@pytest.fixture
def populated(db):
    from chalicelib.db import session_scope
    from chalicelib.services import users

    with session_scope() as s:
        users.create_user(s, "alice")
    _ok(*SEEK_ADD)
    return _state()


BAD_INPUT = {
    "unknown group": (["nope", "x"], 2),
    "missing args": (["registry", "add", "other"], 2),
    "bad auth method": ([*SEEK_ADD, "--client-auth-method", "x"], 2),
    "bad scope": (["api-key", "create", "alice", "--scope", "bogus"], 1),
    "registry scope": (["api-key", "create", "alice", "--scope", "registry.workflow.read"], 1),
    "unknown user": (["api-key", "create", "nobody"], 1),
    "unknown user list": (["api-key", "list", "nobody"], 1),
    "duplicate registry": (SEEK_ADD, 1),
    "duplicate identifier": (
        ["registry", "add", "Seek", "seek", "I", "S", "https://x.ex", "--client-name", "seek"],
        1,
    ),
    "bad registry type": (["registry", "add", "g", "galaxy", "I", "S", "https://g.ex"], 1),
    "bad registry url": (["registry", "add", "g", "seek", "I", "S", "g.example"], 1),
    "bad redirect uri": (
        ["registry", "add", "g", "seek", "I", "S", "https://g.ex", "--redirect-uris", "nope"],
        1,
    ),
    "bad client name": (
        ["registry", "add", "g", "seek", "I", "S", "https://g.ex", "--client-name", "Bad Name"],
        1,
    ),
    "unknown registry": (["registry", "show", "nope"], 1),
    "bad update": (
        ["registry", "update", "seek", "--client-secret", "new", "--api-url", "ftp://x"],
        1,
    ),
    "update to taken name": (
        ["registry", "update", "seek", "--client-name", "seek2", "--name", ""],
        1,
    ),
    "duplicate user": (["user", "create", "alice"], 1),
    "bad username": (["user", "create", ".x"], 1),
    "bad email": (["user", "create", "bob", "--email", "nope"], 1),
    "short password": (["user", "create", "bob", "--password-stdin"], 1),
    "short key prefix": (["api-key", "delete", "abc"], 1),
    "unknown key": (["api-key", "delete", "abcdefgh"], 1),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input(populated, case):
    argv, code = BAD_INPUT[case]
    result = run(argv, stdin="short\n" if case == "short password" else None)
    assert result.exit_code == code, result
    lines = result.stderr.splitlines()
    assert result.stderr.endswith("\n")
    if code == 2:
        _assert_usage_error(result.stderr)
    else:
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ")
    assert result.stdout == ""
    assert _state() == populated


@pytest.mark.parametrize("case", ["bad scope", "duplicate registry", "unknown registry"])
def test_bad_input_json(populated, case):
    argv, code = BAD_INPUT[case]
    result = run([*argv, "--json"])
    assert result.exit_code == code
    line = result.stderr.strip()
    assert "\n" not in line
    assert json.loads(result.stdout) == {"error": line}
    assert result.data is None
    assert _state() == populated


@pytest.mark.parametrize("argv", [["--json", "db", "current"], ["db", "--json", "current"]])
def test_json_flag_anywhere(db, argv):
    result = run(argv)
    assert result.exit_code == 0
    assert json.loads(result.stdout)["at_head"] is True


# --- a real process ---------------------------------------------------------------------


def _process(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chalicelib.admin", *argv],
        cwd=PROJECT_ROOT,
        env=dict(os.environ),
        input=stdin or "",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_process_help():
    proc = _process("--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: python -m chalicelib.admin")
    assert proc.stderr == ""


def test_process_usage_error():
    proc = _process("registry")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines()[-1].startswith("usage error: ")


def test_process_commands(db):
    assert os.environ["DATABASE_URL"] == db
    proc = _process("user", "create", "bob", "--password-stdin", "--json", stdin="long-enough-pw\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert json.loads(proc.stdout)["username"] == "bob"
    assert [u["username"] for u in _json("user", "list")] == ["bob"]
    proc = _process("registry", "show", "nope")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == "error: no registry named 'nope'\n"
