"""Workflow registries: registration (with our OAuth2 client for them), lookup, changes.

Each registry keeps two secrets in the parameter store, never in the database: the
registry's own OAuth app secret (we use it to log users in and call the registry) and the
secret of the OAuth2 client we issue to it (the database keeps only its hash; operators
can print it again with `registry show`, as LifeMonitor's `flask registry show` does).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from chalicelib.auth import oauth2
from chalicelib.auth import scopes as S
from chalicelib.config import get_settings
from chalicelib.errors import BadRequestError, ConflictError, NotFoundError
from chalicelib.models import REGISTRY_TYPES, OAuth2Client, Registry
from chalicelib.secrets import get_secrets

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

_CLIENT_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,127}$")


@dataclass(frozen=True)
class RegistryCredentials:
    """What an operator configures on the registry's side (contract §4, §7)."""

    registry: Registry
    client_id: str
    client_secret: str | None
    scopes: list[str]
    grant_types: list[str]
    redirect_uris: list[str]
    auth_method: str
    authorize_url: str
    token_url: str
    callback_url: str

    def as_dict(self) -> dict:
        r = self.registry
        return {
            "uuid": r.uuid,
            "name": r.name,
            "identifier": r.client_name,
            "type": r.type,
            "uri": r.uri,
            "registry_client_id": r.server_client_id,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "scopes": self.scopes,
            "grant_types": self.grant_types,
            "redirect_uris": self.redirect_uris,
            "client_auth_method": self.auth_method,
            "authorize_url": self.authorize_url,
            "token_url": self.token_url,
            "callback_url": self.callback_url,
        }


def snake_case(name: str) -> str:
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name.strip())
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise BadRequestError(f"API URL must be an absolute http(s) URL: {url!r}")
    return url.rstrip("/")


def _check_client_name(client_name: str) -> str:
    if not _CLIENT_NAME.match(client_name):
        raise BadRequestError(
            "client name must be lowercase letters, digits, '_' or '-' (it appears in URLs): "
            f"{client_name!r}"
        )
    from chalicelib.auth.providers import BUILT_IN_PROVIDERS

    if client_name in BUILT_IN_PROVIDERS:
        # /oauth2/login/<name> would mean two providers.
        raise BadRequestError(
            f"client name {client_name!r} is a built-in login provider's: choose another "
            "(--client-name)"
        )
    return client_name


def _split_uris(redirect_uris: str | list[str] | None) -> list[str]:
    if redirect_uris is None:
        return []
    if isinstance(redirect_uris, str):
        redirect_uris = redirect_uris.split(",")
    return [u.strip() for u in redirect_uris if u.strip()]


def credentials(registry: Registry, with_secret: bool = True) -> RegistryCredentials:
    settings = get_settings()
    client = registry.oauth_client
    secret = get_secrets().get(client.secret_key) if with_secret else None
    return RegistryCredentials(
        registry=registry,
        client_id=client.client_id,
        client_secret=secret,
        scopes=sorted(S.parse(client.scope)),
        grant_types=client.grant_types,
        redirect_uris=client.redirect_uris,
        auth_method=client.token_endpoint_auth_method,
        authorize_url=settings.url_for(f"oauth2/authorize/{registry.client_name}"),
        token_url=settings.url_for("oauth2/token"),
        callback_url=settings.url_for(f"oauth2/authorized/{registry.client_name}"),
    )


def add_registry(
    session: Session,
    *,
    name: str,
    type: str,
    client_id: str,
    client_secret: str,
    api_url: str,
    client_name: str | None = None,
    redirect_uris: str | list[str] | None = None,
    auth_method: str = "client_secret_post",
) -> RegistryCredentials:
    name = (name or "").strip()
    if not name:
        raise BadRequestError("registry name must not be empty")
    if type not in REGISTRY_TYPES:
        raise BadRequestError(
            f"unsupported registry type {type!r} (supported: {', '.join(REGISTRY_TYPES)})"
        )
    if not client_id or not client_secret:
        raise BadRequestError("the registry's OAuth client id and secret must not be empty")
    api_url = _check_url(api_url)
    client_name = _check_client_name(client_name or snake_case(name))
    if (
        session.query(Registry.id)
        .filter((Registry.name == name) | (Registry.client_name == client_name))
        .first()
    ):
        raise ConflictError(f"a registry named {name!r} or {client_name!r} already exists")
    new = oauth2.create_client(
        session,
        client_name=client_name,
        scope=S.REGISTRY_CLIENT,
        grant_types=oauth2.REGISTRY_GRANT_TYPES,
        response_types=oauth2.REGISTRY_RESPONSE_TYPES,
        redirect_uris=_split_uris(redirect_uris),
        auth_method=auth_method,
        client_uri=api_url,
    )
    registry = Registry(
        name=name,
        type=type,
        client_name=client_name,
        uri=api_url,
        server_client_id=client_id,
        oauth_client=new.client,
    )
    session.add(registry)
    session.flush()
    # Secrets last: if writing them fails the transaction rolls back and nothing remains.
    store = get_secrets()
    written: list[str] = []
    try:
        for key, value in (
            (registry.server_secret_key, client_secret),
            (new.client.secret_key, new.client_secret),
        ):
            store.put(key, value)
            written.append(key)
    except Exception:
        for key in written:  # the transaction rolls back; leave no secret behind either
            with contextlib.suppress(Exception):  # the original error is the one to report
                store.delete(key)
        raise
    return replace(credentials(registry, with_secret=False), client_secret=new.client_secret)


def find_registry(session: Session, ref: str) -> Registry:
    """By name, identifier (client_name) or uuid."""
    registry = (
        session.query(Registry)
        .filter((Registry.name == ref) | (Registry.client_name == ref) | (Registry.uuid == ref))
        .first()
    )
    if registry is None:
        raise NotFoundError(f"no registry named {ref!r}", resource_type="registry")
    return registry


def get_by_uuid(session: Session, uuid: str) -> Registry:
    registry = session.query(Registry).filter_by(uuid=uuid).one_or_none()
    if registry is None:
        raise NotFoundError(
            f"Registry '{uuid}' not found", resource_type="registry", resource_identifier=uuid
        )
    return registry


def list_registries(session: Session) -> list[Registry]:
    return session.query(Registry).order_by(Registry.name).all()


def update_registry(
    session: Session,
    ref: str,
    *,
    name: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    client_name: str | None = None,
    api_url: str | None = None,
    redirect_uris: str | list[str] | None = None,
    auth_method: str | None = None,
    rotate_secret: bool = False,
) -> RegistryCredentials:
    registry = find_registry(session, ref)
    client: OAuth2Client = registry.oauth_client
    if name is not None and name.strip() != registry.name:
        name = name.strip()
        if not name:
            raise BadRequestError("registry name must not be empty")
        if session.query(Registry.id).filter(Registry.name == name).first():
            raise ConflictError(f"a registry named {name!r} already exists")
        registry.name = name
    if client_name is not None and client_name != registry.client_name:
        # LifeMonitor ignored --client-name on update (contract §12); we apply it.
        _check_client_name(client_name)
        if session.query(Registry.id).filter(Registry.client_name == client_name).first():
            raise ConflictError(f"a registry with identifier {client_name!r} already exists")
        registry.client_name = client_name
        client.client_name = client_name
        client.client_metadata = {**client.client_metadata, "client_name": client_name}
    if api_url is not None:
        registry.uri = _check_url(api_url)
        client.client_metadata = {**client.client_metadata, "client_uri": registry.uri}
    if client_id is not None:
        if not client_id:
            raise BadRequestError("the registry's OAuth client id must not be empty")
        registry.server_client_id = client_id
    if redirect_uris is not None:
        uris = _split_uris(redirect_uris)
        for uri in uris:
            parts = urlsplit(uri)
            if parts.scheme not in {"http", "https"} or not parts.netloc:
                raise BadRequestError(f"redirect URI must be an absolute http(s) URL: {uri!r}")
        client.client_metadata = {**client.client_metadata, "redirect_uris": uris}
    if auth_method is not None:
        if auth_method not in oauth2.AUTH_METHODS:
            raise BadRequestError(
                f"client auth method must be one of {', '.join(oauth2.AUTH_METHODS)}"
            )
        client.client_metadata = {
            **client.client_metadata,
            "token_endpoint_auth_method": auth_method,
        }
    if client_secret is not None and not client_secret:
        raise BadRequestError("the registry's OAuth client secret must not be empty")
    session.flush()
    store = get_secrets()
    if client_secret is not None:
        store.put(registry.server_secret_key, client_secret)
    if rotate_secret:
        store.put(client.secret_key, oauth2.rotate_secret(session, client))
    return credentials(registry)


def delete_registry(session: Session, ref: str) -> Registry:
    """Removes the registry, its OAuth2 client (and so its tokens) and its secrets. The
    workflows it submitted stay; only their link to the registry goes."""
    registry = find_registry(session, ref)
    client = registry.oauth_client
    keys = [registry.server_secret_key, registry.service_token_key, client.secret_key]
    session.delete(registry)
    session.flush()
    oauth2.delete_client(session, client)
    store = get_secrets()
    for key in keys:
        store.delete(key)
    return registry


@dataclass(frozen=True)
class IndexItem:
    """A workflow as the registry lists it (RegistryIndexItem)."""

    identifier: str
    name: str | None
    latest_version: str | None
    versions: list[str]
    link: str


def index(registry: Registry) -> list[IndexItem]:
    """The registry's workflows, live (contract §1.2 row 3): what the service token sees."""
    from chalicelib.registries import seek

    client = seek.client_for(registry)
    return [
        IndexItem(
            identifier=str(d.get("id")),
            name=seek.workflow_title(d),
            latest_version=None,
            versions=[],
            link=client.workflow_url(d.get("id")),
        )
        for d in client.list_workflows()
    ]


def index_item(registry: Registry, identifier: str) -> IndexItem:
    from chalicelib.registries import seek

    client = seek.client_for(registry)
    data = client.get_workflow(identifier)
    latest = seek.latest_version(data)
    return IndexItem(
        identifier=str(data.get("id", identifier)),
        name=seek.workflow_title(data),
        latest_version=latest,
        versions=seek.workflow_versions(data),
        link=client.workflow_url(identifier, latest),
    )
