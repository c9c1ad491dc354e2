"""CI adapters behind one small protocol: each turns a CI's builds into `BuildData`.

Adapters register by service type (`jenkins`, `github`, `travis`, `gitlab`); the refresh
job asks `get_adapter(type)` for the one that serves an instance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from chalicelib.errors import BadRequestError


@dataclass(frozen=True)
class BuildData:
    """One build as a CI reports it, normalised: status enum, UTC times, seconds."""

    build_id: str
    status: str  # passed | failed | error | aborted | running | waiting
    started_at: datetime | None
    finished_at: datetime | None = None
    duration: float | None = None  # seconds
    url: str | None = None
    revision: str | None = None
    links: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FetchResult:
    builds: list[BuildData]  # newest first
    etag: str | None = None  # for the next conditional request
    not_modified: bool = False  # the CI answered 304: nothing changed


class InstanceRef(Protocol):
    resource: str
    etag: str | None
    parameters: dict


class CIAdapter(Protocol):
    """Fetch the most recent builds of one test instance."""

    def fetch_builds(self, service_url: str, instance: InstanceRef, limit: int) -> FetchResult: ...


def one_line(text: Any, limit: int = 300) -> str:
    """A reason for `last_error` and the status `reason`: one line, bounded."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def host_of(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).netloc or url


def status_error(
    label: str,
    host: str,
    status: int,
    *,
    not_found: str,
    token_key: str,
    detail: str = "",
    rate_limited: bool = False,
    retry_after: float | None = None,
) -> CIError:
    """A CI's non-2xx answer as one CIError, worded alike for every CI."""
    if rate_limited:
        return CIError(
            f"{label} ({host}): rate limited (HTTP {status})"
            + (f", retry after {retry_after:.0f} s" if retry_after is not None else ""),
            retry_after=retry_after,
        )
    if status == 404:
        reason = not_found
    elif status in (401, 403):
        reason = f"access denied; check the token in the parameter store at {token_key}"
    elif status >= 500:
        reason = "server error"
    else:
        reason = "unexpected answer"
    return CIError(
        one_line(f"{label} ({host}): HTTP {status}, {reason}" + (f" ({detail})" if detail else ""))
    )


class CIError(Exception):
    """A CI could not be read (unreachable, refused, rate-limited, malformed answer)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BaseAdapter:
    """What every adapter shares: its limits, and the promise that callers (the refresh)
    only ever see `CIError` — an adapter bug degrades one instance, never a batch.
    Subclasses set the class attributes and implement `_fetch_builds` (and `_fetch_log`
    where the CI serves logs)."""

    label = "CI"
    default_timeout: tuple[float, float] = (5.0, 15.0)  # connect, read
    default_max_bytes = 5 * 1024 * 1024
    # Longer waits go back to the scheduler as CIError.retry_after instead of sleeping
    # inside a worker that has other instances to refresh.
    default_max_retry_wait = 2.0

    def __init__(
        self,
        *,
        timeout: tuple[float, float] | None = None,
        retries: int = 1,
        max_retry_wait: float | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.timeout = timeout or self.default_timeout
        self.retries = retries
        self.max_retry_wait = (
            self.default_max_retry_wait if max_retry_wait is None else max_retry_wait
        )
        self.max_bytes = max_bytes or self.default_max_bytes

    def fetch_builds(self, service_url: str, instance: InstanceRef, limit: int) -> FetchResult:
        """The newest `limit` builds, newest first."""
        return self._guarded(self._fetch_builds, service_url, instance, limit)

    def _fetch_builds(self, service_url: str, instance: InstanceRef, limit: int) -> FetchResult:
        raise NotImplementedError

    def _fetch(
        self,
        url: str,
        headers: dict[str, str],
        params: dict | None = None,
        max_bytes: int | None = None,
    ):
        """GET through the guarded client with this adapter's limits; a transport failure
        becomes a CIError naming the host (and carrying any Retry-After)."""
        from chalicelib import http

        try:
            return http.request(
                "GET",
                url,
                headers=headers,
                params=params,
                timeout=self.timeout,
                max_bytes=max_bytes or self.max_bytes,
                retries=self.retries,
                max_retry_wait=self.max_retry_wait,
            )
        except http.OutboundError as exc:
            raise CIError(
                f"{self.label} ({host_of(url)}): {one_line(exc.reason)}",
                retry_after=exc.retry_after,
            ) from None

    def _json(self, response) -> Any:
        """The answer's JSON; a malformed or truncated body is a CIError."""
        from chalicelib import http

        try:
            return response.json()
        except http.OutboundError as exc:
            raise CIError(f"{self.label}: {one_line(exc.reason)}") from None

    def _guarded(self, fn, service_url: str, *args):
        try:
            return fn(service_url, *args)
        except CIError:
            raise
        except Exception as exc:
            import logging

            logging.getLogger(type(self).__module__).exception(
                "%s: unexpected failure reading %s", self.label, service_url
            )
            raise CIError(f"{self.label}: unexpected error ({type(exc).__name__})") from None


class UnsupportedServiceError(BadRequestError):
    title = "Testing service not supported"


_ADAPTERS: dict[str, Callable[[], CIAdapter]] = {}


def register(service_type: str, factory: Callable[[], CIAdapter]) -> None:
    _ADAPTERS[service_type] = factory


def unregister(service_type: str) -> None:
    _ADAPTERS.pop(service_type, None)


def supported_types() -> list[str]:
    return sorted(set(_ADAPTERS) | set(BUILTIN))


#: Built-in adapters, imported on first use (each module registers itself).
BUILTIN = ("jenkins", "github", "travis", "gitlab")


def _load_builtin(service_type: str) -> None:
    if service_type in BUILTIN and service_type not in _ADAPTERS:
        import importlib

        importlib.import_module(f"chalicelib.testing.{service_type}")


def get_adapter(service_type: str) -> CIAdapter:
    _load_builtin(service_type)
    factory = _ADAPTERS.get(service_type)
    if factory is None:
        raise UnsupportedServiceError(
            f"no CI adapter for service type {service_type!r}"
            + (f" (supported: {', '.join(supported_types())})" if _ADAPTERS else "")
        )
    return factory()
