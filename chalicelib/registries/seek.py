"""WorkflowHub (SEEK) JSON:API client (contract §4), over the one outbound HTTP client.

Differences from LifeMonitor, on purpose:

* no availability probe (`GET <registry>` with a 1 s timeout) before every call (§12): the
  call itself tells us whether the registry is up, and `chalicelib.http` retries transient
  failures with back-off;
* a registry-level **service token** from the parameter store replaces LifeMonitor's
  anonymous fallback (§10), so registry submissions also work for non-public workflows;
* every failure is a domain error (`chalicelib.errors`), rendered as problem+json, whose
  reason names the registry host and never the token.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote, urlsplit

from chalicelib import http
from chalicelib.errors import (
    ForbiddenError,
    LifeMonitorError,
    NotFoundError,
    ServiceUnavailableError,
    UnprocessableError,
)

log = logging.getLogger(__name__)

JSONAPI = "application/vnd.api+json"
MAX_JSON_BYTES = 10 * 1024 * 1024  # a JSON:API document; the /workflows index can be long
MAX_CRATE_BYTES = 50 * 1024 * 1024
# SEEK policy access levels at which anyone (anonymous too) may download the crate.
_DOWNLOADABLE = frozenset({"download", "edit", "manage"})


# -- errors ----------------------------------------------------------------------------------


class RegistryError(LifeMonitorError):
    """Any failure talking to a workflow registry. Concrete errors also subclass the
    matching domain error, so the API renders them with the right status."""

    def __init__(
        self, detail: str | None = None, *, host: str | None = None, **extra_info: Any
    ) -> None:
        if host:
            extra_info.setdefault("registry", host)
        super().__init__(detail, **extra_info)
        self.host = host


class RegistryNotFoundError(RegistryError, NotFoundError):
    """404 from the registry (workflow, version or crate unknown there)."""

    def __init__(
        self, detail: str | None = None, *, title: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(detail, **kwargs)
        if title:
            self.title = title  # instance attribute: "RO-Crate not found" for downloads


class RegistryForbiddenError(RegistryError, ForbiddenError):
    """401/403 from the registry: the credential used may not see the resource."""


class RegistryUnavailableError(RegistryError, ServiceUnavailableError):
    """Timeouts, connection errors, 5xx, unexpected statuses, malformed bodies, and
    registry URLs the SSRF guard refuses."""


class RegistryResponseTooLargeError(RegistryError, UnprocessableError):
    """The crate (or document) is larger than we accept."""

    title = "RO-Crate too large"


# -- JSON:API helpers (shapes of seek/api_examples) -------------------------------------------


def workflow_uuid(data: dict) -> str | None:
    """`meta.uuid`: LifeMonitor adopts it as its own workflow uuid (contract §4)."""
    value = (data.get("meta") or {}).get("uuid")
    return str(value) if value else None


def workflow_title(data: dict) -> str | None:
    value = (data.get("attributes") or {}).get("title")
    return str(value) if value is not None else None


def workflow_versions(data: dict) -> list[str]:
    """`attributes.versions[].version` as strings (SEEK sends integers; our versions are
    strings, and so are the ones WorkflowHub sends us)."""
    versions = (data.get("attributes") or {}).get("versions") or []
    return [
        str(v["version"]) for v in versions if isinstance(v, dict) and v.get("version") is not None
    ]


def latest_version(data: dict) -> str | None:
    """`attributes.latest_version`, else `attributes.version` (what LifeMonitor read),
    else the highest listed version."""
    attributes = data.get("attributes") or {}
    for key in ("latest_version", "version"):
        if attributes.get(key) is not None:
            return str(attributes[key])
    versions = workflow_versions(data)
    if not versions:
        return None
    return max(versions, key=lambda v: (v.isdigit(), int(v) if v.isdigit() else 0, v))


def submitter_id(data: dict) -> str | None:
    """`relationships.submitter.data[0].id` (a list in SEEK; absent in index items)."""
    rel = ((data.get("relationships") or {}).get("submitter") or {}).get("data")
    if isinstance(rel, list):
        rel = rel[0] if rel else None
    if isinstance(rel, dict) and rel.get("id") is not None:
        return str(rel["id"])
    return None


def project_ids(data: dict) -> list[str]:
    rel = ((data.get("relationships") or {}).get("projects") or {}).get("data") or []
    return [str(p["id"]) for p in rel if isinstance(p, dict) and p.get("id") is not None]


def visibility(data: dict) -> str | None:
    """`attributes.policy.access` (no_access, view, download, edit, manage), or None when
    SEEK did not include the policy (it shows it only to those who may manage)."""
    policy = (data.get("attributes") or {}).get("policy")
    if isinstance(policy, dict) and policy.get("access"):
        return str(policy["access"])
    return None


def is_public(data: dict) -> bool | None:
    """Whether anyone may download the workflow (crate); None when the policy is unknown."""
    access = visibility(data)
    return None if access is None else access in _DOWNLOADABLE


# -- client ----------------------------------------------------------------------------------


class SeekClient:
    """Read access to one SEEK/WorkflowHub instance with one credential (or none)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        token_type: str = "Bearer",  # noqa: S107 - an auth scheme, not a secret
        timeout: tuple[float, float] = (5, 20),
        *,
        retries: int = 2,
        max_crate_bytes: int = MAX_CRATE_BYTES,
        auth_source: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.host = urlsplit(self.base_url).hostname or self.base_url
        self._token = token or None  # kept private: never in reprs, logs or errors
        self.token_type = token_type
        self.timeout = timeout
        self.retries = retries
        self.max_crate_bytes = max_crate_bytes
        # Which credential client_for chose: "user", "service" or "anonymous".
        self.auth_source = auth_source or ("anonymous" if self._token is None else "token")

    def __repr__(self) -> str:
        return f"SeekClient({self.base_url!r}, auth={self.auth_source})"

    @property
    def authenticated(self) -> bool:
        return self._token is not None

    # -- URLs -----------------------------------------------------------------------------
    def workflow_url(self, identifier: str | int, version: str | int | None = None) -> str:
        """The human link; no `?version` for None or "latest" (as LifeMonitor)."""
        url = f"{self.base_url}/workflows/{_segment(identifier)}"
        if version is None or str(version) in ("", "latest"):
            return url
        return f"{url}?version={quote(str(version), safe='')}"

    def crate_url(self, identifier: str | int, version: str | int) -> str:
        return (
            f"{self.base_url}/workflows/{_segment(identifier)}/ro_crate"
            f"?version={quote(str(version), safe='')}"
        )

    # -- calls ----------------------------------------------------------------------------
    def list_workflows(self) -> list[dict]:
        """`GET /workflows?format=json`: the workflows this credential can see (index items
        carry only id, type, `attributes.title` and `links`)."""
        body = self._get_json("/workflows", {"format": "json"}, what="workflow list")
        data = body.get("data")
        if not isinstance(data, list):
            raise self._malformed("workflow list", "'data' is not a list")
        return [item for item in data if isinstance(item, dict)]

    def get_workflow(self, identifier: str | int, version: str | int | None = None) -> dict:
        """`GET /workflows/{id}?format=json[&version=v]` → the JSON:API `data` object."""
        params: dict[str, Any] = {"format": "json"}
        if version is not None and str(version) != "latest":
            params["version"] = str(version)
        what = f"workflow {identifier}" + (f" version {version}" if "version" in params else "")
        return self._get_data(f"/workflows/{_segment(identifier)}", params, what=what)

    def current_user(self) -> dict:
        """`GET /people/current` → the person behind the token. SEEK answers 404 "No user
        logged in" without a (valid) user; that is an authorization failure for us."""
        try:
            return self._get_data("/people/current", None, what="current user")
        except RegistryNotFoundError:
            raise RegistryForbiddenError(
                f"{self.host}: no user logged in ({self.auth_source} credentials)",
                host=self.host,
            ) from None

    def get_person(self, person_id: str | int) -> dict:
        return self._get_data(f"/people/{_segment(person_id)}", None, what=f"person {person_id}")

    def download_crate(self, identifier: str | int, version: str | int) -> bytes:
        """`GET /workflows/{id}/ro_crate?version=v` → the zip bytes (size-limited)."""
        what = f"RO-Crate of workflow {identifier} version {version}"
        response = self._get(
            f"/workflows/{_segment(identifier)}/ro_crate",
            {"version": str(version)},
            what=what,
            max_bytes=self.max_crate_bytes,
            crate=True,
        )
        return response.content

    # -- internals ------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        # As LifeMonitor sends them (without its odd `Accept-Charset: ISO-8859-1`: JSON is
        # UTF-8). Content-Type on a GET is what SEEK's API layer expects from LM.
        headers = {"Accept": JSONAPI, "Content-Type": JSONAPI}
        if self._token is not None:
            headers["Authorization"] = f"{self.token_type} {self._token}"
        return headers

    def _get(
        self,
        path: str,
        params: dict[str, Any] | None,
        *,
        what: str,
        max_bytes: int = MAX_JSON_BYTES,
        crate: bool = False,
    ) -> http.HttpResponse:
        url = self.base_url + path
        try:
            response = http.request(
                "GET",
                url,
                headers=self._headers(),
                params=params,
                timeout=self.timeout,
                max_bytes=max_bytes,
                retries=self.retries,
            )
        except http.ResponseTooLargeError:
            raise RegistryResponseTooLargeError(
                f"{self.host}: {what} is larger than {max_bytes} bytes", host=self.host
            ) from None
        except http.OutboundError as exc:
            # The reason comes from chalicelib.http: host and cause, never headers.
            raise RegistryUnavailableError(
                f"registry {self.host} not reachable for {what}: {exc.reason}", host=self.host
            ) from None
        if response.ok:
            return response
        self._raise_for_status(response, what, crate=crate)
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise_for_status(self, response: http.HttpResponse, what: str, *, crate: bool) -> None:
        status = response.status
        reason = _error_detail(response)
        suffix = f" ({status}{': ' + reason if reason else ''})"
        log.info("registry %s answered %s for %s", self.host, status, what)
        if status == 404:
            raise RegistryNotFoundError(
                f"{self.host}: {what} not found{suffix}",
                title="RO-Crate not found" if crate else "Resource not found",
                host=self.host,
            )
        if status in (401, 403):
            raise RegistryForbiddenError(
                f"{self.host}: not allowed to read {what} with {self.auth_source} "
                f"credentials{suffix}",
                host=self.host,
            )
        raise RegistryUnavailableError(
            f"{self.host}: unexpected answer for {what}{suffix}", host=self.host
        )

    def _get_json(self, path: str, params: dict[str, Any] | None, *, what: str) -> dict:
        response = self._get(path, params, what=what)
        try:
            body = response.json()
        except http.OutboundError:
            raise self._malformed(what, "not JSON") from None
        if not isinstance(body, dict):
            raise self._malformed(what, "not a JSON object")
        return body

    def _get_data(self, path: str, params: dict[str, Any] | None, *, what: str) -> dict:
        data = self._get_json(path, params, what=what).get("data")
        if not isinstance(data, dict):
            raise self._malformed(what, "no 'data' object")
        return data

    def _malformed(self, what: str, why: str) -> RegistryUnavailableError:
        return RegistryUnavailableError(
            f"{self.host}: malformed JSON:API body for {what}: {why}", host=self.host
        )


def _segment(value: str | int) -> str:
    """One URL path segment: an identifier can never add path components or a query."""
    text = str(value)
    if not text or text in (".", ".."):
        raise RegistryNotFoundError(f"invalid registry identifier {text!r}")
    return quote(text, safe="")


def _error_detail(response: http.HttpResponse) -> str | None:
    """The first JSON:API error's detail (SEEK spells it `details` on 403), shortened."""
    try:
        errors = response.json().get("errors")
        first = errors[0]
        text = first.get("detail") or first.get("details") or first.get("title")
    except Exception:  # any non-conforming body: no detail, same status
        return None
    if not isinstance(text, str):
        return None
    text = " ".join(text.split())
    return text[:200]


# -- token choice ------------------------------------------------------------------------------


def client_for(
    registry: Any, user_token: str | None = None, *, timeout: tuple[float, float] = (5, 20)
) -> SeekClient:
    """A client for `registry` (a `Registry`: `uri`, `service_token_key`) with the best
    credential (contract §4, improved): the user's registry token if given, else the
    registry's service token from the parameter store, else anonymous."""
    from chalicelib.secrets import get_secrets

    if user_token:
        return SeekClient(registry.uri, user_token, timeout=timeout, auth_source="user")
    service_token = get_secrets().get(registry.service_token_key)
    if service_token:
        return SeekClient(registry.uri, service_token, timeout=timeout, auth_source="service")
    return SeekClient(registry.uri, None, timeout=timeout, auth_source="anonymous")
