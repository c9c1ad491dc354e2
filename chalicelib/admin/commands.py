"""The admin command groups: each registers its subcommands and their handlers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chalicelib.db import session_scope


@dataclass
class Output:
    data: Any
    text: str


def _table(rows: list[list[str]], header: list[str]) -> str:
    if not rows:
        return "(none)"
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


# --- db ---------------------------------------------------------------------------------


def _db_upgrade(args, _stdin) -> Output:
    from chalicelib import migrate

    if not migrate.known_revision(args.revision):
        raise migrate.MigrationError(f"unknown revision {args.revision!r}")
    before = migrate.current()
    after = migrate.upgrade(args.revision)
    return Output(
        {"from": before, "to": after, "head": migrate.head()},
        f"database upgraded: {before or 'empty'} -> {migrate.describe_current()}",
    )


def _db_downgrade(args, _stdin) -> Output:
    from chalicelib import migrate

    if not migrate.known_revision(args.revision):
        raise migrate.MigrationError(f"unknown revision {args.revision!r}")
    before = migrate.current()
    after = migrate.downgrade(args.revision)
    return Output(
        {"from": before, "to": after, "head": migrate.head()},
        f"database downgraded: {before or 'empty'} -> {after or 'empty (base)'}",
    )


def _db_current(args, _stdin) -> Output:
    from chalicelib import migrate

    rev = migrate.current()
    head = migrate.head()
    return Output(
        {"current": rev, "head": head, "at_head": rev == head}, migrate.describe_current()
    )


def register_db(groups, common) -> None:
    db = groups.add_parser("db", help="database schema migrations", parents=[common])
    sub = db.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("upgrade", help="migrate up to a revision (default: head)", parents=[common])
    p.add_argument("revision", nargs="?", default="head")
    p.set_defaults(handler=_db_upgrade)
    p = sub.add_parser(
        "downgrade", help="migrate down to REV (a revision, -1 or base)", parents=[common]
    )
    p.add_argument("revision", metavar="REV")
    p.set_defaults(handler=_db_downgrade)
    p = sub.add_parser("current", help="show the database's revision", parents=[common])
    p.set_defaults(handler=_db_current)


# --- registry ---------------------------------------------------------------------------


def _registry_text(info: dict) -> str:
    lines = [
        f"REGISTRY NAME:        {info['name']}",
        f"REGISTRY IDENTIFIER:  {info['identifier']}",
        f"REGISTRY UUID:        {info['uuid']}",
        f"REGISTRY TYPE:        {info['type']}",
        f"REGISTRY API URL:     {info['uri']}",
        f"REGISTRY CLIENT ID:   {info['client_id']}",
    ]
    if info.get("client_secret"):
        lines.append(f"REGISTRY CLIENT SECRET: {info['client_secret']}")
    lines += [
        f"CLIENT AUTH METHOD:   {info['client_auth_method']}",
        f"ALLOWED SCOPES:       {' '.join(info['scopes'])}",
        f"ALLOWED GRANT TYPES:  {' '.join(info['grant_types'])}",
        f"REDIRECT URIS:        {','.join(info['redirect_uris']) or '(none)'}",
        f"AUTHORIZE URL:        {info['authorize_url']}",
        f"ACCESS TOKEN URL:     {info['token_url']}",
        f"CALLBACK URL:         {info['callback_url']}",
    ]
    return "\n".join(lines)


def _registry_add(args, _stdin) -> Output:
    from chalicelib.services import registries

    with session_scope() as s:
        creds = registries.add_registry(
            s,
            name=args.name,
            type=args.type,
            client_id=args.client_id,
            client_secret=args.client_secret,
            api_url=args.api_url,
            client_name=args.client_name,
            redirect_uris=args.redirect_uris,
            auth_method=args.client_auth_method,
        )
        info = creds.as_dict()
    return Output(info, _registry_text(info))


def _registry_show(args, _stdin) -> Output:
    from chalicelib.services import registries

    with session_scope() as s:
        info = registries.credentials(registries.find_registry(s, args.name)).as_dict()
    return Output(info, _registry_text(info))


def _registry_list(args, _stdin) -> Output:
    from chalicelib.services import registries

    with session_scope() as s:
        items = [
            {
                "uuid": r.uuid,
                "name": r.name,
                "identifier": r.client_name,
                "type": r.type,
                "uri": r.uri,
                "client_id": r.oauth_client.client_id,
            }
            for r in registries.list_registries(s)
        ]
    rows = [[i["name"], i["identifier"], i["type"], i["uri"], i["uuid"]] for i in items]
    return Output(items, _table(rows, ["NAME", "IDENTIFIER", "TYPE", "URI", "UUID"]))


def _registry_update(args, _stdin) -> Output:
    from chalicelib.services import registries

    with session_scope() as s:
        creds = registries.update_registry(
            s,
            args.name,
            name=args.new_name,
            client_id=args.client_id,
            client_secret=args.client_secret,
            client_name=args.client_name,
            api_url=args.api_url,
            redirect_uris=args.redirect_uris,
            auth_method=args.client_auth_method,
            rotate_secret=args.rotate_client_secret,
        )
        info = creds.as_dict()
    return Output(info, _registry_text(info))


def _registry_delete(args, _stdin) -> Output:
    from chalicelib.services import registries

    with session_scope() as s:
        r = registries.delete_registry(s, args.name)
        info = {"deleted": True, "uuid": r.uuid, "name": r.name, "identifier": r.client_name}
    return Output(info, f"registry {info['name']!r} ({info['uuid']}) deleted")


def register_registry(groups, common) -> None:
    reg = groups.add_parser("registry", help="workflow registries (WorkflowHub)", parents=[common])
    sub = reg.add_subparsers(dest="command", metavar="COMMAND", required=True)
    methods = ["client_secret_post", "client_secret_basic"]

    p = sub.add_parser(
        "add", help="register a registry and create our OAuth2 client for it", parents=[common]
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("type", metavar="TYPE", help="registry type: seek")
    p.add_argument("client_id", metavar="CLIENT_ID", help="the registry's own OAuth app id")
    p.add_argument(
        "client_secret",
        metavar="CLIENT_SECRET",
        help="the registry's own OAuth app secret (kept in the parameter store)",
    )
    p.add_argument("api_url", metavar="API_URL", help="the registry's base URL")
    p.add_argument("--client-name", help="public identifier (default: snake_case(NAME))")
    p.add_argument("--redirect-uris", help="comma-separated redirect URIs of our client")
    p.add_argument("--client-auth-method", choices=methods, default="client_secret_post")
    p.set_defaults(handler=_registry_add)

    p = sub.add_parser(
        "show", help="show a registry and our client's credentials", parents=[common]
    )
    p.add_argument("name", metavar="NAME", help="name, identifier or uuid")
    p.set_defaults(handler=_registry_show)

    p = sub.add_parser("list", help="list registries", parents=[common])
    p.set_defaults(handler=_registry_list)

    p = sub.add_parser("update", help="change a registry", parents=[common])
    p.add_argument("name", metavar="NAME", help="name, identifier or uuid")
    p.add_argument("--name", dest="new_name", help="new name")
    p.add_argument("--client-id", help="the registry's OAuth app id")
    p.add_argument("--client-secret", help="the registry's OAuth app secret")
    p.add_argument("--client-name", help="new public identifier")
    p.add_argument("--api-url", help="the registry's base URL")
    p.add_argument("--redirect-uris", help="comma-separated redirect URIs of our client")
    p.add_argument("--client-auth-method", choices=methods)
    p.add_argument(
        "--rotate-client-secret",
        action="store_true",
        help="issue a new secret for our client (the old one stops working)",
    )
    p.set_defaults(handler=_registry_update)

    p = sub.add_parser(
        "delete", help="delete a registry, its client, tokens and secrets", parents=[common]
    )
    p.add_argument("name", metavar="NAME", help="name, identifier or uuid")
    p.set_defaults(handler=_registry_delete)


# --- user -------------------------------------------------------------------------------


def _user_dict(u) -> dict:
    return {
        "id": u.id,
        "username": u.username,
        "email": u.email,
        "has_password": u.password_hash is not None,
        "created": u.created.isoformat(),
    }


def _user_create(args, stdin) -> Output:
    from chalicelib.errors import BadRequestError
    from chalicelib.services import users

    password = None
    if args.password_stdin:
        if stdin is None:
            raise BadRequestError("--password-stdin given but no password on standard input")
        password = stdin.rstrip("\r\n")
    with session_scope() as s:
        info = _user_dict(users.create_user(s, args.username, password=password, email=args.email))
    return Output(info, f"user {info['username']!r} created (id {info['id']})")


def _user_list(args, _stdin) -> Output:
    from chalicelib.services import users

    with session_scope() as s:
        items = [_user_dict(u) for u in users.list_users(s)]
    rows = [[str(i["id"]), i["username"], i["email"] or "", i["created"]] for i in items]
    return Output(items, _table(rows, ["ID", "USERNAME", "EMAIL", "CREATED"]))


def register_user(groups, common) -> None:
    grp = groups.add_parser("user", help="users", parents=[common])
    sub = grp.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser("create", help="create a user", parents=[common])
    p.add_argument("username", metavar="USERNAME")
    p.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    p.add_argument("--email")
    p.set_defaults(handler=_user_create)
    p = sub.add_parser("list", help="list users", parents=[common])
    p.set_defaults(handler=_user_list)


# --- api-key ----------------------------------------------------------------------------


def _key_dict(k) -> dict:
    return {
        "prefix": k.prefix,
        "username": k.user.username,
        "scopes": sorted(k.scopes),
        "created": k.created.isoformat(),
        "last_used": k.last_used.isoformat() if k.last_used else None,
    }


def _apikey_create(args, _stdin) -> Output:
    from chalicelib.auth import apikeys
    from chalicelib.services import users

    with session_scope() as s:
        new = apikeys.create(s, users.get_user(s, args.username), args.scope)
        info = {**_key_dict(new.record), "key": new.key}
    text = (
        f"API key for {info['username']} (shown once, keep it safe):\n{info['key']}\n"
        f"scopes: {' '.join(info['scopes'])}"
    )
    return Output(info, text)


def _apikey_list(args, _stdin) -> Output:
    from chalicelib.auth import apikeys
    from chalicelib.services import users

    with session_scope() as s:
        user = users.get_user(s, args.username) if args.username else None
        items = [_key_dict(k) for k in apikeys.list_keys(s, user)]
    rows = [[i["prefix"] + "…", i["username"], i["created"], " ".join(i["scopes"])] for i in items]
    return Output(items, _table(rows, ["KEY", "USER", "CREATED", "SCOPES"]))


def _apikey_delete(args, _stdin) -> Output:
    from chalicelib.auth import apikeys

    with session_scope() as s:
        k = apikeys.delete(s, args.key_prefix)
        info = {"deleted": True, "prefix": k.prefix, "username": k.user.username}
    return Output(info, f"API key {info['prefix']}… of {info['username']} deleted")


def register_api_key(groups, common) -> None:
    grp = groups.add_parser("api-key", help="API keys", parents=[common])
    sub = grp.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser(
        "create", help="create an API key for a user (printed once)", parents=[common]
    )
    p.add_argument("username", metavar="USERNAME")
    p.add_argument(
        "--scope",
        action="append",
        metavar="S",
        help="a scope to grant (repeatable; default: every user scope)",
    )
    p.set_defaults(handler=_apikey_create)
    p = sub.add_parser("list", help="list API keys (prefixes only)", parents=[common])
    p.add_argument("username", metavar="USERNAME", nargs="?")
    p.set_defaults(handler=_apikey_list)
    p = sub.add_parser(
        "delete", help="delete the API key starting with KEY_PREFIX", parents=[common]
    )
    p.add_argument("key_prefix", metavar="KEY_PREFIX")
    p.set_defaults(handler=_apikey_delete)


# --- refresh ----------------------------------------------------------------------------


class _ProgressBar:
    """One line on a terminal, redrawn in place: how many instances are done, how many
    went wrong. Called from the refresh threads (serialised by the caller)."""

    WIDTH = 30

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.problems = 0
        self.drawn = False

    def __call__(self, done: int, total: int, outcome: Any) -> None:
        if outcome.outcome in ("error", "failed"):
            self.problems += 1
        filled = self.WIDTH * done // total if total else self.WIDTH
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self.stream.write(f"\rrefresh [{bar}] {done}/{total}  errors: {self.problems}")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _refresh_text(summary: dict) -> str:
    lines = [
        f"refreshed {summary['refreshed']} of {summary['selected']} instances "
        f"in {summary['seconds']:.1f} s"
    ]
    width = max((len(k) for k in summary["outcomes"]), default=0)
    lines += [f"  {k.ljust(width)}  {n}" for k, n in summary["outcomes"].items()]
    if summary["errors"]:
        lines.append("errors:")
        lines += [
            f"  {e['instance']} {e['name'] or ''} [{e['workflow']}]: {e['reason']}"
            for e in summary["errors"]
        ]
    if summary["skipped"]:
        lines.append("skipped (another refresh holds them):")
        lines += [
            f"  {s['instance']} {s['name'] or ''} [{s['workflow']}]" for s in summary["skipped"]
        ]
    return "\n".join(lines)


def _refresh(args, _stdin) -> Output:
    import sys

    from chalicelib.jobs import refresh

    stream = sys.stderr
    # A progress bar only for a person watching a terminal; logs and Lambda get the summary.
    bar = _ProgressBar(stream) if getattr(stream, "isatty", lambda: False)() else None
    try:
        summary = refresh.refresh_now(
            everything=args.all,
            instance_uuids=args.instance or (),
            workflow_uuids=args.workflow or (),
            progress=bar,
        )
    finally:
        if bar is not None:
            bar.close()
    return Output(summary, _refresh_text(summary))


def register_refresh(groups, common) -> None:
    p = groups.add_parser(
        "refresh",
        help="refresh test instances now (ignores next-check times, never races a worker)",
        description="Fetch the latest builds of the chosen test instances now. Instances "
        "another refresh is working on (leased) are skipped and listed.",
        parents=[common],
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every test instance")
    which.add_argument(
        "--instance", action="append", metavar="UUID", help="a test instance (repeatable)"
    )
    which.add_argument(
        "--workflow",
        action="append",
        metavar="UUID",
        help="every instance of every version of a workflow (repeatable)",
    )
    p.set_defaults(handler=_refresh)


# --- queue ------------------------------------------------------------------------------


def _queue_status(args, _stdin) -> Output:
    from chalicelib import queues

    items = [d.as_dict() for d in queues.depths()]
    if not items:
        return Output(items, "no queues configured: refreshes and deliveries run inline")
    rows = [
        [
            i["name"],
            str(i["waiting"]),
            str(i["in_flight"]),
            str(i["delayed"]),
            "-" if i["dead_letters"] is None else str(i["dead_letters"]),
        ]
        for i in items
    ]
    return Output(items, _table(rows, ["QUEUE", "WAITING", "IN FLIGHT", "DELAYED", "DEAD"]))


def _queue_redrive(args, _stdin) -> Output:
    from chalicelib import queues

    moved = queues.redrive(args.name, limit=args.limit)
    info = {"queue": args.name, "moved": moved}
    return Output(info, f"{moved} messages moved back from {args.name}'s dead-letter queue")


def register_queue(groups, common) -> None:
    from chalicelib.queues import NAMES

    grp = groups.add_parser("queue", help="the SQS queues and their dead letters", parents=[common])
    sub = grp.add_subparsers(dest="command", metavar="COMMAND", required=True)
    p = sub.add_parser(
        "status", help="messages waiting, in flight, delayed and dead, per queue", parents=[common]
    )
    p.set_defaults(handler=_queue_status)
    p = sub.add_parser(
        "redrive",
        help="move a queue's dead letters back to it (once their cause is fixed)",
        parents=[common],
    )
    p.add_argument("name", metavar="QUEUE", choices=NAMES, help=" or ".join(NAMES))
    p.add_argument("--limit", type=int, default=10_000, help="at most this many (10000)")
    p.set_defaults(handler=_queue_redrive)


# --- backup / restore -------------------------------------------------------------------


def _passphrase(args, stdin) -> str | None:
    from chalicelib.admin.backup import BackupError

    if not args.passphrase_stdin:
        return None
    if stdin is None:
        raise BackupError("--passphrase-stdin given but no passphrase on standard input")
    return stdin.rstrip("\r\n")


def _backup(args, stdin) -> Output:
    from pathlib import Path

    from chalicelib.admin import backup
    from chalicelib.config import get_settings

    path = Path(args.file or backup.default_filename(get_settings().stage))
    manifest = backup.create_backup(
        path, passphrase=_passphrase(args, stdin), crates=not args.no_crates, overwrite=args.force
    )
    rows = sum(t["rows"] for t in manifest["tables"].values())
    info = {
        "file": str(path),
        "revision": manifest["revision"],
        "dialect": manifest["dialect"],
        "tables": len(manifest["tables"]),
        "rows": rows,
        "crates": manifest["crates"]["count"],
        "secrets": manifest["secrets"]["count"],
        "secrets_encrypted": manifest["secrets"]["encrypted"],
    }
    clear = "" if info["secrets_encrypted"] else " IN CLEAR (file mode 0600: keep it private)"
    text = (
        f"backup written to {path}: {manifest['dialect']} database at {manifest['revision']} "
        f"({info['tables']} tables, {rows} rows), {info['crates']} crates, "
        f"{info['secrets']} secrets{clear}"
    )
    return Output(info, text)


def _restore(args, stdin) -> Output:
    from pathlib import Path

    from chalicelib.admin import backup

    report = backup.restore_backup(
        Path(args.file),
        passphrase=_passphrase(args, stdin),
        clean=args.clean,
        crates=not args.no_crates,
        secrets=not args.no_secrets,
    )
    text = (
        f"restored {report['file']} (made {report['created_at']}): {report['tables']} tables, "
        f"{report['rows']} rows (counts and checksums match), {report['crates']} crates, "
        f"{report['secrets']} secrets"
    )
    if report["needs_upgrade"]:
        text += f"\nthe schema is at {report['revision']}: run `db upgrade` (head {report['head']})"
    return Output(report, text)


def register_backup(groups, common) -> None:
    p = groups.add_parser(
        "backup",
        help="back up the database, the crates and the stage's secrets into one archive",
        description="Write a tar archive (mode 0600) with a pg_dump of DATABASE_URL (or a "
        "copy of the embedded SQLite database), every stored crate and the parameter store's "
        "keys of the stage. Runs where pg_dump is, not in the Lambda.",
        parents=[common],
    )
    p.add_argument("file", metavar="FILE", nargs="?", help="default: lifemonitor-STAGE-TIME.tar")
    p.add_argument(
        "--passphrase-stdin",
        action="store_true",
        help="encrypt the secrets with a passphrase read from standard input",
    )
    p.add_argument("--no-crates", action="store_true", help="leave the crates out")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    p.set_defaults(handler=_backup)

    p = groups.add_parser(
        "restore",
        help="restore a backup into DATABASE_URL, the crate store and the parameter store",
        description="Restore an archive made by `backup` into an empty database (or, with "
        "--clean, replace its contents), check every table's row count and checksum, put "
        "back the crates and the secrets (all but database/url).",
        parents=[common],
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument(
        "--passphrase-stdin",
        action="store_true",
        help="the passphrase of encrypted secrets, from standard input",
    )
    p.add_argument(
        "--clean", action="store_true", help="replace the contents of a non-empty database"
    )
    p.add_argument("--no-crates", action="store_true", help="do not restore the crates")
    p.add_argument("--no-secrets", action="store_true", help="do not restore the secrets")
    p.set_defaults(handler=_restore)


def register_oauth(groups, common) -> None:
    # Its own module (chalicelib/admin/oauth.py), which imports this one: loaded here.
    from chalicelib.admin.oauth import register_oauth as register

    register(groups, common)


REGISTRARS = [
    register_db,
    register_registry,
    register_user,
    register_api_key,
    register_oauth,
    register_refresh,
    register_queue,
    register_backup,
]
