"""The `oauth` admin group (LifeMonitor's `flask oauth …`): OAuth apps of our server
(create, list, revoke) and the login-provider tokens of users' identities (invalidate,
refresh). Thin handlers: the rules are in services/oauth_apps.py and services/identities.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from chalicelib.admin.commands import Output, _table
from chalicelib.db import session_scope

#: The user owning a new client when --username is not given, as LifeMonitor does.
DEFAULT_OWNER = "admin"
CODE_AUTH_METHODS = ["client_secret_post", "client_secret_basic", "none"]
CREDENTIALS_AUTH_METHODS = ["client_secret_post", "client_secret_basic"]


@dataclass
class PartialOutput(Output):
    """A report that is also a failure (some identities failed): printed on stdout as
    usual, with `exit_code` and a one-line `error` on stderr."""

    exit_code: int = 0
    error: str = ""


def _owner(session, username: str | None):
    from chalicelib.errors import NotFoundError
    from chalicelib.services import users

    if username:
        return users.get_user(session, username)
    try:
        return users.get_user(session, DEFAULT_OWNER)
    except NotFoundError:
        raise NotFoundError(
            f"there is no {DEFAULT_OWNER!r} user to own the client: give --username"
        ) from None


def _split(text: str) -> list[str]:
    """Scopes or redirect URIs: separated by commas and/or spaces."""
    return [item for item in text.replace(",", " ").split() if item]


def _client_info(
    client, secret: str | None = None, registry: str | None = None, *, created: bool = False
) -> dict:
    from chalicelib.auth import oauth2
    from chalicelib.config import get_settings

    settings = get_settings()
    grants = client.grant_types
    info = {
        "client_id": client.client_id,
        "client_name": client.client_name,
        "client_uri": client.client_metadata.get("client_uri"),
        "owner": client.user.username if client.user is not None else None,
        "registry": registry,
        "auth_method": client.token_endpoint_auth_method,
        "public": client.token_endpoint_auth_method == oauth2.PUBLIC_AUTH_METHOD,
        "scopes": sorted(client.scope.split()),
        "grant_types": grants,
        "redirect_uris": client.redirect_uris,
        "authorize_url": (
            settings.url_for("oauth2/authorize") if "authorization_code" in grants else None
        ),
        "token_url": settings.url_for("oauth2/token"),
    }
    if created:  # the secret exists in clear only now (None for a public client)
        info["client_secret"] = secret
    return info


def _client_text(info: dict) -> str:
    lines = [
        f"CLIENT NAME:          {info['client_name']}",
        f"CLIENT ID:            {info['client_id']}",
    ]
    if info["public"]:
        lines.append("CLIENT SECRET:        (none: a public client, PKCE required)")
    else:
        lines.append(f"CLIENT SECRET:        {info['client_secret']}")
        lines.append("                      (shown once: only its hash is kept)")
    lines += [
        f"OWNER:                {info['owner']}",
        f"CLIENT URI:           {info['client_uri'] or '(none)'}",
        f"CLIENT AUTH METHOD:   {info['auth_method']}",
        f"ALLOWED SCOPES:       {' '.join(info['scopes'])}",
        f"ALLOWED GRANT TYPES:  {' '.join(info['grant_types'])}",
    ]
    if info["authorize_url"]:
        lines += [
            f"REDIRECT URIS:        {','.join(info['redirect_uris'])}",
            f"AUTHORIZE URL:        {info['authorize_url']}",
        ]
    lines.append(f"ACCESS TOKEN URL:     {info['token_url']}")
    return "\n".join(lines)


def _create(args, create, **fields) -> Output:
    """A new app of either kind, owned by --username: its info with the secret, once."""
    with session_scope() as s:
        new = create(
            s,
            _owner(s, args.username),
            name=args.client_name,
            scopes=_split(args.scope),
            client_uri=args.client_uri,
            auth_method=args.auth_method,
            **fields,
        )
        info = _client_info(new.client, new.client_secret, created=True)
    return Output(info, _client_text(info))


def _create_code(args, _stdin) -> Output:
    from chalicelib.services import oauth_apps

    return _create(args, oauth_apps.create_app, redirect_uris=_split(args.redirect_uri))


def _create_credentials(args, _stdin) -> Output:
    from chalicelib.services import oauth_apps

    return _create(args, oauth_apps.create_client_credentials_app)


def _list(args, _stdin) -> Output:
    from chalicelib.services import oauth_apps

    with session_scope() as s:
        items = [_client_info(c, registry=r) for c, r in oauth_apps.list_all_apps(s)]
    rows = [
        [
            i["client_id"],
            i["client_name"],
            i["owner"] or (f"(registry {i['registry']})" if i["registry"] else "-"),
            ",".join(i["grant_types"]),
            i["auth_method"],
            " ".join(i["scopes"]),
        ]
        for i in items
    ]
    header = ["CLIENT ID", "NAME", "OWNER", "GRANTS", "AUTH METHOD", "SCOPES"]
    return Output(items, _table(rows, header))


def _revoke(args, _stdin) -> Output:
    from chalicelib.services import oauth_apps

    with session_scope() as s:
        info = {"deleted": True, **oauth_apps.delete_any_app(s, args.client_id)}
    return Output(
        info,
        f"OAuth app {info['client_name']!r} ({info['client_id']}) of {info['owner']} deleted, "
        "with its tokens",
    )


def _rotate(args, _stdin) -> Output:
    from chalicelib.services import oauth_apps

    with session_scope() as s:
        client, secret = oauth_apps.rotate_any_secret(s, args.client_id)
        info = _client_info(client, secret, created=True)
    return Output(
        info,
        f"new secret of {info['client_name']!r} ({info['client_id']}), shown once; its "
        f"tokens are revoked:\n{secret}",
    )


def _invalidate(args, _stdin) -> Output:
    from chalicelib.services import identities, users

    with session_scope() as s:
        counts = identities.invalidate_tokens(s, users.get_user(s, args.username))
    info = {"username": args.username, **counts}
    return Output(
        info,
        f"{counts['identities']} identities of {args.username} affected: "
        f"{counts['tokens']} provider tokens marked expired",
    )


def _refresh(args, _stdin) -> Output:
    from chalicelib.errors import BadRequestError
    from chalicelib.services import identities, users

    if args.all and not args.silent:
        raise BadRequestError(
            "--all refreshes every identity's tokens at every provider: add -y/--silent to confirm"
        )
    with session_scope() as s:
        user = users.get_user(s, args.username) if args.username else None
        chosen = identities.select_identities(
            s, user=user, identity_id=args.identity, everyone=args.all
        )
        outcomes = [o.as_dict() for o in identities.refresh_tokens(s, chosen)]
    counts = {k: sum(o["outcome"] == k for o in outcomes) for k in ("refreshed", "skipped")}
    failed = [o for o in outcomes if o["outcome"] == "failed"]
    info = {**counts, "failed": len(failed), "identities": outcomes}
    lines = [
        f"identity {o['identity']} ({o['provider']}, user {o['username']}): {o['outcome']}"
        + (f": {o['reason']}" if o["reason"] else "")
        for o in outcomes
    ]
    lines.append(
        f"{counts['refreshed']} refreshed, {counts['skipped']} skipped, {len(failed)} failed"
    )
    if not failed:
        return Output(info, "\n".join(lines))
    error = f"error: {len(failed)} of {len(outcomes)} identities could not be refreshed"
    return PartialOutput(info, "\n".join(lines), exit_code=1, error=error)


def register_oauth(groups, common) -> None:
    grp = groups.add_parser(
        "oauth", help="OAuth apps and users' login-provider tokens", parents=[common]
    )
    sub = grp.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "create-client-oauth-code",
        help="create an authorization-code OAuth app acting for the users who allow it",
        parents=[common],
    )
    p.add_argument("client_name", metavar="CLIENT_NAME")
    p.add_argument("client_uri", metavar="CLIENT_URI", help="the app's home page (http/https)")
    p.add_argument(
        "redirect_uri", metavar="REDIRECT_URI", help="redirect URI(s), separated by commas"
    )
    p.add_argument("scope", metavar="SCOPE", help="scopes, separated by spaces or commas")
    p.add_argument(
        "auth_method",
        metavar="AUTH_METHOD",
        nargs="?",
        default="client_secret_post",
        choices=CODE_AUTH_METHODS,
        help=f"{', '.join(CODE_AUTH_METHODS)} (none: a public client, PKCE, no secret); "
        "default client_secret_post",
    )
    p.add_argument("--username", help=f"the owner (default: the {DEFAULT_OWNER!r} user)")
    p.set_defaults(handler=_create_code)

    p = sub.add_parser(
        "create-client-credentials",
        help="create a client_credentials client whose tokens act as a user",
        parents=[common],
    )
    p.add_argument("client_name", metavar="CLIENT_NAME")
    p.add_argument("client_uri", metavar="CLIENT_URI", help="the client's home page (http/https)")
    p.add_argument(
        "scope", metavar="SCOPE", help="scopes (an API key's, no registry.*), spaces or commas"
    )
    p.add_argument(
        "auth_method",
        metavar="AUTH_METHOD",
        nargs="?",
        default="client_secret_post",
        choices=CREDENTIALS_AUTH_METHODS,
        help=f"{', '.join(CREDENTIALS_AUTH_METHODS)}; default client_secret_post",
    )
    p.add_argument(
        "--username", help=f"the user its tokens act as (default: the {DEFAULT_OWNER!r} user)"
    )
    p.set_defaults(handler=_create_credentials)

    p = sub.add_parser("list", help="list OAuth clients (never their secrets)", parents=[common])
    p.set_defaults(handler=_list)

    p = sub.add_parser("revoke", help="delete a user's OAuth app and its tokens", parents=[common])
    p.add_argument("client_id", metavar="CLIENT_ID")
    p.set_defaults(handler=_revoke)

    p = sub.add_parser(
        "rotate-secret",
        help="give a user's OAuth app a new secret (printed once; its tokens are revoked)",
        parents=[common],
    )
    p.add_argument("client_id", metavar="CLIENT_ID")
    p.set_defaults(handler=_rotate)

    p = sub.add_parser(
        "invalidate-tokens",
        help="mark a user's login-provider tokens expired (refreshed or re-login on next use)",
        parents=[common],
    )
    p.add_argument("username", metavar="USERNAME")
    p.set_defaults(handler=_invalidate)

    p = sub.add_parser(
        "refresh-tokens",
        help="refresh login-provider tokens at the providers now",
        description="Refresh the tokens of a user's identities (-u), of one identity (-i) "
        "or of every identity (-a, which needs -y). Exit status 1 if a provider failed.",
        parents=[common],
    )
    who = p.add_mutually_exclusive_group()
    who.add_argument("-u", "--username", help="that user's identities")
    who.add_argument("-a", "--all", action="store_true", help="every identity (needs -y)")
    p.add_argument("-i", "--identity", type=int, metavar="IDENTITY_ID", help="one identity")
    p.add_argument("-y", "--silent", action="store_true", help="do not ask to confirm --all")
    p.set_defaults(handler=_refresh)
