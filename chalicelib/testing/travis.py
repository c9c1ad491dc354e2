"""Travis CI (API v3) adapter: one request per refresh, builds newest first.

Service URL → API base:

* ``https://travis-ci.com`` / ``.org`` and their ``api.``, ``app.`` and ``www.`` hosts →
  ``https://api.travis-ci.com`` / ``https://api.travis-ci.org``;
* any other URL (Travis Enterprise, an emulator) is the API base as given.

Accepted resource forms (leading/trailing ``/`` and one trailing ``/builds`` segment are
ignored; parsing is per path segment — LifeMonitor's character-set strip of ``/(builds)?``
corrupted slugs ending in b, u, i, l, d or s):

* ``github/<owner>/<repo>`` — the Travis web path (a 3-segment resource starting with
  ``github`` is always read this way);
* ``repo/<id>`` — a numeric Travis repository id, or an already encoded ``owner%2Frepo``;
* ``<owner>/<repo>`` — a slug.

Token: parameter-store key ``ci/travis/<host>/token`` (see `token_key`), sent as
``Authorization: token <t>``. ``instance.parameters`` may carry ``branch`` (filters builds by
branch name) and ``site_url`` (web UI base for links on non-hosted Travis installations).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from chalicelib import http
from chalicelib.testing import (
    BaseAdapter,
    BuildData,
    CIError,
    FetchResult,
    InstanceRef,
    host_of,
    one_line,
    register,
    status_error,
)

log = logging.getLogger(__name__)

SERVICE_TYPE = "travis"
# Parameter-store key of a Travis token, relative to the stage prefix. `<host>` is the
# host of the API base (api.travis-ci.com) — the service URL's own host is tried second.
TOKEN_KEY = "ci/travis/{host}/token"  # noqa: S105 - a key name, not a secret
API_VERSION = "3"
HOSTED_TLDS = ("com", "org")
DEFAULT_TIMEOUT = (5.0, 15.0)  # connect, read
DEFAULT_MAX_BYTES = 5 * 1024 * 1024  # ten builds are ~30 KB; anything near this is wrong
LOG_MAX_BYTES = 20 * 1024 * 1024  # one job's log, JSON-wrapped
MAX_LIMIT = 100  # Travis caps `limit` at 100

WAITING_STATES = frozenset({"created", "received", "queued"})
# A build may be listed as "passed" etc. only once it has finished; those are mapped here.
FINISHED_STATES = {"passed": "passed", "failed": "failed", "canceled": "aborted"}
VCS_PREFIXES = frozenset({"github"})
_SEGMENT = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class TravisRepo:
    """A parsed resource: the `/repo/{ref}` path reference and, when known, the slug."""

    ref: str  # numeric id or URL-encoded slug (owner%2Frepo), ready for the path
    slug: str | None = None


# -- pure helpers -------------------------------------------------------------------------


def _hosted_tld(url: str) -> str | None:
    host = (urlsplit(url).hostname or "").lower()
    for tld in HOSTED_TLDS:
        base = f"travis-ci.{tld}"
        if host == base or host in {f"api.{base}", f"app.{base}", f"www.{base}"}:
            return tld
    return None


def api_base(service_url: str) -> str:
    """The API v3 base for a service URL (hosted Travis by host, anything else as given)."""
    url = (service_url or "").strip()
    if not url:
        raise CIError("Travis CI: the testing service has no URL")
    tld = _hosted_tld(url)
    if tld:
        return f"https://api.travis-ci.{tld}"
    if not url.startswith(("http://", "https://")):
        raise CIError(f"Travis CI: service URL must be http(s): {url[:100]!r}")
    return url.rstrip("/")


def site_url(service_url: str, parameters: dict | None = None) -> str:
    """The web UI base used for build links."""
    custom = (parameters or {}).get("site_url")
    if isinstance(custom, str) and custom.startswith(("http://", "https://")):
        return custom.rstrip("/")
    tld = _hosted_tld(service_url)
    if tld:
        # travis-ci.org is read-only since 2021 but keeps its pages on its own host.
        return "https://app.travis-ci.com" if tld == "com" else "https://travis-ci.org"
    base = service_url.strip().rstrip("/")
    # Travis Enterprise serves its API under /api on the web host.
    return base[: -len("/api")] if base.endswith("/api") else base


def _host_key(url: str) -> str:
    parts = urlsplit(url)
    netloc = (parts.hostname or "").lower()
    if parts.port:
        netloc += f"_{parts.port}"  # ':' is not allowed in parameter names
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", netloc) or "_"


def token_key(url: str) -> str:
    """Parameter-store key of the token for a URL's host, e.g.
    ``ci/travis/api.travis-ci.com/token`` or ``ci/travis/127.0.0.1_8080/token``."""
    return TOKEN_KEY.format(host=_host_key(url))


def parse_resource(resource: str) -> TravisRepo:
    """Parse a resource into a repo reference (see the module docstring for the forms)."""
    raw = (resource or "").strip()
    segs = raw.strip("/").split("/")
    if any(not s for s in segs):
        raise CIError(f"Travis CI: invalid resource {raw[:200]!r} (empty path segment)")
    # `repo/<id>` and `github/<owner>/<repo>` are matched before the bare slug so that a
    # trailing `builds` is only ever read as a suffix where the form allows it.
    if len(segs) in (2, 3) and segs[0] == "repo" and (len(segs) == 2 or segs[2] == "builds"):
        ref = segs[1]
        if ref.isdigit():
            return TravisRepo(ref=ref)
        decoded = unquote(ref)
        if "%" in ref and decoded.count("/") == 1:
            return _slug_repo(*decoded.split("/"), raw=raw)
    if segs[0] in VCS_PREFIXES and (len(segs) == 3 or (len(segs) == 4 and segs[3] == "builds")):
        return _slug_repo(segs[1], segs[2], raw=raw)
    if len(segs) == 2 or (len(segs) == 3 and segs[2] == "builds"):
        return _slug_repo(segs[0], segs[1], raw=raw)
    raise CIError(
        f"Travis CI: unsupported resource {raw[:200]!r} "
        "(expected github/<owner>/<repo>, repo/<id> or <owner>/<repo>)"
    )


def _slug_repo(owner: str, name: str, *, raw: str) -> TravisRepo:
    for part in (owner, name):
        if not _SEGMENT.match(part) or part in {".", ".."}:
            raise CIError(f"Travis CI: invalid repository slug in resource {raw[:200]!r}")
    slug = f"{owner}/{name}"
    return TravisRepo(ref=quote(slug, safe=""), slug=slug)


def map_status(state: str | None, finished_at: Any) -> str:
    """Travis build → BuildStatus. A build that has not finished (``finished_at`` null or
    empty) is running — LifeMonitor crashed on ``len(None)`` here — unless it is still
    queued, or was canceled (a build canceled before it started may never get a finish
    time, and must not be polled as running forever)."""
    state = (state or "").lower()
    if state in WAITING_STATES:
        return "waiting"
    if state == "canceled":
        return "aborted"
    if not finished_at or state == "started":
        return "running"
    return FINISHED_STATES.get(state, "error")


def parse_time(value: Any) -> datetime | None:
    """``%Y-%m-%dT%H:%M:%SZ`` (or any ISO-8601 instant) → aware UTC datetime; else None."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        parsed = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _duration(build: dict, started: datetime | None, finished: datetime | None) -> float | None:
    # Wall-clock time where both ends are known, as for the other CIs: Travis' own
    # `duration` (the UI's "Ran for") adds up the jobs' times, which overstates parallel
    # jobs. It is the fallback.
    if started and finished:
        return max(0.0, (finished - started).total_seconds())
    value = build.get("duration")
    if isinstance(value, int | float) and not isinstance(value, bool) and finished:
        return float(value)
    return None


def to_build(build: dict, site: str, api: str, fallback_slug: str | None) -> BuildData:
    """One API v3 build (standard representation) → BuildData; `site` is the web UI base,
    `api` the API base (``@href`` values are relative to it)."""
    build_id = build.get("id")
    if isinstance(build_id, bool) or not isinstance(build_id, int | str) or build_id == "":
        raise ValueError("build without an id")
    started = parse_time(build.get("started_at"))
    finished_raw = build.get("finished_at")
    finished = parse_time(finished_raw)
    status = map_status(build.get("state"), finished_raw)
    repo = build.get("repository") if isinstance(build.get("repository"), dict) else {}
    slug = repo.get("slug") if isinstance(repo.get("slug"), str) else fallback_slug
    commit = build.get("commit") if isinstance(build.get("commit"), dict) else {}
    sha = commit.get("sha") if isinstance(commit.get("sha"), str) else None
    url = f"{site}/{slug}/builds/{build_id}" if slug else None
    links: dict[str, str] = {}
    if url:
        links["origin"] = url
        links["instance"] = f"{site}/{slug}/builds"
    if isinstance(build.get("@href"), str) and build["@href"].startswith("/"):
        links["api"] = api + build["@href"]
    done = status not in {"running", "waiting"}
    return BuildData(
        build_id=str(build_id),
        status=status,
        started_at=started,
        finished_at=finished if done else None,
        duration=_duration(build, started, finished) if done else None,
        url=url,
        revision=sha[:128] if sha else None,
        links=links,
    )


def _sort_key(build: BuildData) -> tuple[int, str]:
    return (int(build.build_id), "") if build.build_id.isdigit() else (-1, build.build_id)


# -- the adapter ---------------------------------------------------------------------------


class TravisAdapter(BaseAdapter):
    """`CIAdapter` for Travis CI. Construct with smaller limits in tests."""

    label = "Travis CI"
    default_timeout = DEFAULT_TIMEOUT
    default_max_bytes = DEFAULT_MAX_BYTES
    default_max_retry_wait = 2.0

    # -- protocol ------------------------------------------------------------------------
    def fetch_log(
        self, service_url: str, instance: InstanceRef, build_id: str, max_bytes: int = 131072
    ) -> str:
        """The build's job logs, concatenated in job order, cut at `max_bytes` (UTF-8)."""
        return self._guarded(self._fetch_log, service_url, instance, str(build_id), max_bytes)

    # -- internals -----------------------------------------------------------------------
    def _fetch_builds(self, service_url: str, instance: InstanceRef, limit: int) -> FetchResult:
        base = api_base(service_url)
        repo = parse_resource(instance.resource)
        parameters = instance.parameters if isinstance(instance.parameters, dict) else {}
        params: dict[str, Any] = {
            "limit": max(1, min(int(limit), MAX_LIMIT)),
            "sort_by": "number:desc",
        }
        branch = parameters.get("branch")
        if isinstance(branch, str) and branch:
            params["branch.name"] = branch
        headers = self._headers(service_url, base)
        if instance.etag:
            headers["If-None-Match"] = instance.etag
        response = self._get(f"{base}/repo/{repo.ref}/builds", headers, params, self.max_bytes)
        etag = response.header("etag")
        if response.status == 304:
            return FetchResult(builds=[], etag=etag or instance.etag, not_modified=True)
        body = self._json(response)
        items = body.get("builds") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise CIError(f"Travis CI ({host_of(base)}): unexpected answer, no builds list")
        site = site_url(service_url, parameters)
        builds = []
        for item in items:
            try:
                if not isinstance(item, dict):
                    raise ValueError("not an object")
                builds.append(to_build(item, site, base, repo.slug))
            except (ValueError, TypeError) as exc:
                # One odd entry must not hide the others.
                log.warning("travis: skipping a malformed build in %s: %s", repo.ref, exc)
        builds.sort(key=_sort_key, reverse=True)
        return FetchResult(builds=builds, etag=etag)

    def _fetch_log(
        self, service_url: str, instance: InstanceRef, build_id: str, max_bytes: int
    ) -> str:
        if not build_id.isdigit():
            raise CIError(f"Travis CI: invalid build id {build_id[:50]!r}")
        base = api_base(service_url)
        headers = self._headers(service_url, base)
        jobs_body = self._json(
            self._get(f"{base}/build/{build_id}/jobs", headers, None, self.max_bytes)
        )
        jobs = jobs_body.get("jobs") if isinstance(jobs_body, dict) else None
        if not isinstance(jobs, list):
            raise CIError(f"Travis CI ({host_of(base)}): unexpected answer, no jobs list")
        limit = max(0, int(max_bytes))
        out = bytearray()
        for job in jobs:
            if len(out) >= limit:
                break  # the caller pages through the head; later jobs are not needed
            job_id = str(job.get("id")) if isinstance(job, dict) else ""
            if not job_id.isdigit():
                continue  # never put an unchecked value into a request path
            body = self._json(self._get(f"{base}/job/{job_id}/log", headers, None, LOG_MAX_BYTES))
            content = body.get("content") if isinstance(body, dict) else None
            if isinstance(content, str):
                out += content.encode()
        return bytes(out[:limit]).decode("utf-8", errors="ignore")

    def _headers(self, service_url: str, base: str) -> dict[str, str]:
        headers = {"Travis-API-Version": API_VERSION, "Accept": "application/json"}
        token = _token(service_url, base)
        if token:
            headers["Authorization"] = f"token {token}"
        return headers

    def _get(
        self, url: str, headers: dict[str, str], params: dict | None, max_bytes: int
    ) -> http.HttpResponse:
        host = host_of(url)
        response = self._fetch(url, headers, params, max_bytes)
        if response.ok or response.status == 304:
            return response
        raise _status_error(response, host, token_key(url))


def _token(service_url: str, base: str) -> str | None:
    from chalicelib.secrets import SecretError, get_secrets

    keys = dict.fromkeys([token_key(base), token_key(service_url)])  # ordered, no duplicates
    try:
        store = get_secrets()
        for key in keys:
            value = store.get(key)
            if value:
                return value.strip()
    except (SecretError, ValueError) as exc:
        raise CIError(
            f"Travis CI: cannot read the token from the parameter store: {one_line(exc, 150)}"
        ) from None
    return None


def _rate_limit_wait(response: http.HttpResponse) -> float | None:
    retry = (response.header("retry-after") or "").strip()
    if retry:
        try:
            return max(0.0, float(retry))
        except ValueError:
            from email.utils import parsedate_to_datetime

            try:
                return max(0.0, (parsedate_to_datetime(retry) - datetime.now(UTC)).total_seconds())
            except (TypeError, ValueError):
                pass
    reset = response.header("x-ratelimit-reset")
    if reset and reset.strip().isdigit():
        return max(0.0, int(reset.strip()) - datetime.now(UTC).timestamp())
    return None


def _status_error(response: http.HttpResponse, host: str, key: str) -> CIError:
    """A non-2xx answer → CIError carrying Travis' own error text when there is one."""
    detail = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            kind, message = body.get("error_type"), body.get("error_message")
            detail = ": ".join(str(p) for p in (kind, message) if p)
    except http.OutboundError:
        pass
    status = response.status
    remaining = response.header("x-ratelimit-remaining")
    limited = status == 429 or (
        status == 403 and (remaining == "0" or bool(response.header("retry-after")))
    )
    return status_error(
        "Travis CI",
        host,
        status,
        not_found="repository or build not found (or no access)",
        token_key=key,
        detail=detail,
        rate_limited=limited,
        retry_after=_rate_limit_wait(response) if limited else None,
    )


register(SERVICE_TYPE, TravisAdapter)
