"""The one outbound HTTP client: every URL we fetch (crate links, registries, CI servers)
goes through here.

* **Address guard.** http(s) only; the host is resolved and every connection — the first
  one and each redirect's — is made to an address that was checked at connect time (no
  private, loopback, link-local, multicast or reserved addresses; no DNS-rebinding window:
  we connect to the very IP we checked, keeping the hostname for TLS and `Host`).
  `ALLOW_PRIVATE_URLS=1` lifts the address rule for development and tests; deployed stages
  refuse it (config.py).
* **Credentials stay with their origin.** A redirect that changes scheme, host or port
  drops `Authorization`, `PRIVATE-TOKEN`, cookies and every other credential header (as
  browsers and `requests`' own session do); they are not sent again on later hops.
* **Limits.** Connect/read timeouts, a cap on the body size, a cap on redirects.
* **Retries** for idempotent requests on connection errors and 429/502/503/504, with
  exponential back-off and jitter (tenacity), honouring a short `Retry-After`.
* One pooled `requests.Session` per container (keep-alive across warm invocations); no
  proxies or netrc from the environment.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

log = logging.getLogger(__name__)

USER_AGENT = "LifeMonitor-serverless/0.1 (+https://github.com/crs4/life_monitor)"
DEFAULT_TIMEOUT = (5.0, 20.0)  # connect, read (seconds)
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
MAX_REDIRECTS = 5
RETRY_STATUSES = frozenset({429, 502, 503, 504})
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})


class OutboundError(Exception):
    """A fetch failed; `reason` is safe to show to the caller."""

    def __init__(
        self, reason: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


class BlockedURLError(OutboundError):
    """The URL's scheme or address is not allowed."""


class ResponseTooLargeError(OutboundError):
    pass


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    content: bytes
    url: str  # after redirects
    history: list[str] = field(default_factory=list)

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def json(self) -> Any:
        import json

        try:
            return json.loads(self.content)
        except ValueError as exc:
            raise OutboundError(f"malformed JSON from {_host(self.url)}: {exc}") from None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


# Header names that carry a credential, besides any name containing one of CREDENTIAL_WORDS.
CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "private-token", "job-token", "apikey"}
)
CREDENTIAL_WORDS = ("token", "auth", "secret", "api-key", "apikey", "password")


def _is_credential(name: str) -> bool:
    lowered = name.lower()
    return lowered in CREDENTIAL_HEADERS or any(w in lowered for w in CREDENTIAL_WORDS)


def _without_credentials(headers: dict[str, str] | None) -> dict[str, str] | None:
    if not headers:
        return headers
    return {k: v for k, v in headers.items() if not _is_credential(k)}


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    default = {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port or default


def _same_origin(a: str, b: str) -> bool:
    return _origin(a) == _origin(b)


def redact(url: str) -> str:
    """A URL as shown to readers: no credentials, query or fragment (any may hold a token).
    Anything that is not an http(s) URL is returned unchanged."""
    if "?" not in url and "#" not in url and "@" not in url:
        return url  # nothing to cut (the common case: lists show thousands of origins)
    from urllib.parse import urlunsplit

    parts = urlsplit(url)
    if parts.scheme.lower() not in {"http", "https"}:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _host(url: str) -> str:
    return urlsplit(url).hostname or url


def _private_allowed() -> bool:
    from chalicelib.config import get_settings

    return get_settings().allow_private_urls


# IPv6 ranges Python still calls global: 6to4 (2002::/16, tunnels to any IPv4 address,
# private ones included) and the deprecated site-local fec0::/10.
BLOCKED_V6 = (ipaddress.ip_network("2002::/16"), ipaddress.ip_network("fec0::/10"))


def address_allowed(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        elif any(addr in net for net in BLOCKED_V6):
            return False
    return addr.is_global and not (addr.is_multicast or addr.is_reserved)


def check_url(url: str) -> None:
    """Scheme and host checks done before any connection (addresses are checked at
    connect time, see `_GuardedConnectionMixin`)."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise BlockedURLError(f"only http(s) URLs can be fetched, not {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise BlockedURLError(f"URL has no host: {url!r}")
    if parts.username or parts.password:
        raise BlockedURLError("URLs with credentials are not fetched; use a header instead")


def resolve_allowed(host: str, port: int) -> list[tuple]:
    """getaddrinfo, keeping only allowed addresses (all of them with ALLOW_PRIVATE_URLS)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OutboundError(f"cannot resolve {host}: {exc.strerror}") from None
    if _private_allowed():
        return infos
    allowed = [i for i in infos if address_allowed(i[4][0])]
    if not allowed:
        raise BlockedURLError(
            f"{host} resolves to a private, loopback or reserved address; not fetched"
        )
    return allowed


class _GuardedConnectionMixin:
    """urllib3 connection that connects only to checked addresses."""

    def _new_conn(self):  # urllib3 2.x hook
        host = self._dns_host  # what urllib3 would resolve
        last: Exception | None = None
        for family, socktype, proto, _name, sockaddr in resolve_allowed(host, self.port):
            sock = socket.socket(family, socktype, proto)
            try:
                # urllib3 passes a float, or a sentinel meaning "the socket default".
                timeout = self.timeout if isinstance(self.timeout, int | float) else None
                sock.settimeout(timeout)
                for opt in self.socket_options or []:
                    sock.setsockopt(*opt)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
        from urllib3.exceptions import NewConnectionError

        raise NewConnectionError(self, f"cannot connect to {host}: {last}")


def _build_session():
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class GuardedHTTPConnection(_GuardedConnectionMixin, HTTPConnection):
        pass

    class GuardedHTTPSConnection(_GuardedConnectionMixin, HTTPSConnection):
        pass

    class GuardedHTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    class GuardedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {
                "http": GuardedHTTPPool,
                "https": GuardedHTTPSPool,
            }

    session = requests.Session()
    session.trust_env = False  # no proxies/netrc from the environment: we decide
    adapter = GuardedAdapter(pool_connections=16, pool_maxsize=32, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


_sessions: dict[bool, Any] = {}
_session_lock = threading.Lock()


def get_session():
    """One pooled session per container — and per address policy, so a connection
    opened while private addresses were allowed is never reused once they are not."""
    allow = _private_allowed()
    with _session_lock:
        session = _sessions.get(allow)
        if session is None:
            session = _sessions[allow] = _build_session()
    return session


def reset() -> None:
    with _session_lock:
        for session in _sessions.values():
            session.close()
        _sessions.clear()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            from datetime import UTC, datetime

            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None


def request(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    data: Any = None,
    json: Any = None,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    retries: int = 2,
    max_retry_wait: float = 10.0,
    allow_redirects: bool = True,
) -> HttpResponse:
    """Fetch `url` through the guard. Raises OutboundError (never a requests exception).
    Non-2xx answers are returned, not raised: callers map statuses to their meaning."""
    method = method.upper()
    attempts = retries + 1 if method in IDEMPOTENT else 1
    from tenacity import (
        RetryError,
        Retrying,
        retry_if_exception,
        stop_after_attempt,
        wait_exponential_jitter,
    )

    def retryable(exc: BaseException) -> bool:
        return (
            isinstance(exc, OutboundError)
            and not isinstance(exc, BlockedURLError | ResponseTooLargeError)
            and (exc.status is None or exc.status in RETRY_STATUSES)
            and (exc.retry_after is None or exc.retry_after <= max_retry_wait)
        )

    def wait(state) -> float:
        exc = state.outcome.exception()
        base = wait_exponential_jitter(multiplier=0.2, jitter=0.2, max=max_retry_wait)(state)
        if isinstance(exc, OutboundError) and exc.retry_after is not None:
            return max(base, exc.retry_after)
        return base

    last_response: list[HttpResponse] = []

    def once() -> HttpResponse:
        response = _request_once(
            method,
            url,
            headers=headers,
            params=params,
            data=data,
            json=json,
            timeout=timeout,
            max_bytes=max_bytes,
            allow_redirects=allow_redirects,
        )
        if response.status in RETRY_STATUSES and attempts > 1:
            last_response[:] = [response]
            raise OutboundError(
                f"{_host(url)} answered {response.status}",
                status=response.status,
                retry_after=_retry_after(response.header("retry-after")),
            )
        return response

    try:
        for attempt in Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait,
            retry=retry_if_exception(retryable),
            reraise=False,
        ):
            with attempt:
                return once()
    except RetryError as exc:
        # Out of attempts on a retryable status: hand the last answer to the caller.
        if last_response:
            return last_response[0]
        raise exc.last_attempt.exception() from None
    except OutboundError as exc:
        if exc.status is not None and last_response:
            return last_response[0]
        raise
    raise AssertionError("unreachable")  # pragma: no cover


def _request_once(
    method, url, *, headers, params, data, json, timeout, max_bytes, allow_redirects
) -> HttpResponse:
    import requests

    session = get_session()
    history: list[str] = []
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        check_url(current)
        try:
            resp = session.request(
                method,
                current,
                headers=headers,
                params=params,
                data=data,
                json=json,
                timeout=timeout,
                stream=True,
                allow_redirects=False,
            )
        except requests.exceptions.ConnectionError as exc:
            blocked = _find_cause(exc, BlockedURLError)
            if blocked is not None:
                raise blocked from None
            resolve = _find_cause(exc, OutboundError)
            if resolve is not None:
                raise resolve from None
            raise OutboundError(f"cannot connect to {_host(current)}") from None
        except requests.exceptions.Timeout:
            raise OutboundError(f"{_host(current)} timed out") from None
        except requests.exceptions.RequestException as exc:
            raise OutboundError(
                f"request to {_host(current)} failed: {type(exc).__name__}"
            ) from None
        try:
            if allow_redirects and resp.is_redirect and resp.headers.get("location"):
                history.append(current)
                target = urljoin(current, resp.headers["location"])
                if not _same_origin(current, target):
                    # Never hand a credential to another origin (nor back to ours later:
                    # the chain went through a host we do not trust with it).
                    headers = _without_credentials(headers)
                current = target
                if resp.status_code in (301, 302, 303) and method not in IDEMPOTENT:
                    method, data, json = "GET", None, None
                params = None  # already part of the redirect target
                continue
            content = _read_limited(resp, max_bytes, current)
            return HttpResponse(
                status=resp.status_code,
                headers={k.lower(): v for k, v in resp.headers.items()},
                content=content,
                url=current,
                history=history,
            )
        finally:
            resp.close()
    raise OutboundError(f"too many redirects (more than {MAX_REDIRECTS}) from {_host(url)}")


def _read_limited(resp, max_bytes: int, url: str) -> bytes:
    import requests

    declared = resp.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ResponseTooLargeError(f"response from {_host(url)} exceeds {max_bytes} bytes")
    chunks, size = [], 0
    try:
        for chunk in resp.iter_content(64 * 1024):
            size += len(chunk)
            if size > max_bytes:
                raise ResponseTooLargeError(f"response from {_host(url)} exceeds {max_bytes} bytes")
            chunks.append(chunk)
    except requests.exceptions.RequestException:
        raise OutboundError(f"connection to {_host(url)} broke while reading") from None
    return b"".join(chunks)


def _find_cause(exc: BaseException, kind: type) -> BaseException | None:
    seen = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen or current is None:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return current
        stack += [current.__cause__, current.__context__, *getattr(current, "args", ())[:2]]
        stack = [s for s in stack if isinstance(s, BaseException)]
    return None


def get(url: str, **kwargs: Any) -> HttpResponse:
    return request("GET", url, **kwargs)
