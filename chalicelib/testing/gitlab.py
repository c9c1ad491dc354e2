"""GitLab CI adapter: a project's pipelines (newest first), one request per refresh.

Service URL: the GitLab instance, e.g. ``https://gitlab.com`` (API base ``{url}/api/v4``; a
URL already ending in ``/api/v4`` is used as is).

Accepted resource forms (leading/trailing ``/`` ignored; parsed per path segment):

* ``projects/<id>`` — a numeric project id;
* ``projects/<url-encoded path>`` — e.g. ``projects/group%2Fsub%2Fproject``;
* ``<group>/<subgroup…>/<project>`` — a project path (two or more segments);
* any of these followed by ``/pipelines``, or a path followed by the web UI's
  ``/-/pipelines``: ``group/project/-/pipelines``;
* the project's web URL on the same host, e.g. ``https://gitlab.com/group/project`` or
  ``https://gitlab.com/group/project/-/pipelines``.

A trailing ``pipelines`` segment is read as the suffix only when a valid project remains
(so ``group/pipelines`` is the project ``pipelines``); a project called ``pipelines`` in a
subgroup must be written with ``/-/pipelines`` or as ``projects/<encoded path>``. A
``projects/<x>`` resource whose ``<x>`` is neither numeric nor encoded is a project path
(group ``projects``).

``instance.parameters``: ``ref`` (or ``branch``) restricts pipelines to that branch or tag.
Token: parameter-store key ``ci/gitlab/<host>/token`` (see `token_key`), sent as
``PRIVATE-TOKEN``; public projects need none.

Status mapping (GitLab pipeline ``status`` → BuildStatus): ``success`` → passed, ``failed``
→ failed, ``canceled`` → aborted, ``skipped`` → aborted (nothing ran: neither a pass nor a
fail, so the status rule skips it instead of counting an error), ``running`` and
``canceling`` → running, ``created``/``waiting_for_resource``/``preparing``/``pending``/
``scheduled``/``manual`` → waiting, anything else → error.
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
    one_line,
    register,
    status_error,
)

log = logging.getLogger(__name__)

SERVICE_TYPE = "gitlab"
# Parameter-store key of a GitLab token, relative to the stage prefix; `<host>` is the
# service URL's host (``gitlab.com``; ``:port`` is written ``_port``).
TOKEN_KEY = "ci/gitlab/{host}/token"  # noqa: S105 - a key name, not a secret
API_PATH = "/api/v4"
DEFAULT_TIMEOUT = (5.0, 15.0)  # connect, read
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
MAX_PER_PAGE = 100  # GitLab's cap

STATUS_MAP = {
    "success": "passed",
    "failed": "failed",
    "canceled": "aborted",
    "skipped": "aborted",
    "running": "running",
    "canceling": "running",  # transient: becomes `canceled`; keep polling it soon
    "created": "waiting",
    "waiting_for_resource": "waiting",
    "preparing": "waiting",
    "pending": "waiting",
    "scheduled": "waiting",
    "manual": "waiting",
}
_SEGMENT = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class GitlabProject:
    ref: str  # numeric id or URL-encoded path, ready for `/projects/{ref}`
    path: str | None = None  # `group/sub/project` when known


# -- pure helpers -------------------------------------------------------------------------


def api_base(service_url: str) -> str:
    url = (service_url or "").strip().rstrip("/")
    if not url:
        raise CIError("GitLab CI: the testing service has no URL")
    if not url.startswith(("http://", "https://")):
        raise CIError(f"GitLab CI: service URL must be http(s): {url[:100]!r}")
    return url if url.endswith(API_PATH) else url + API_PATH


def _host_key(url: str) -> str:
    parts = urlsplit(url)
    netloc = (parts.hostname or "").lower()
    if parts.port:
        netloc += f"_{parts.port}"  # ':' is not allowed in parameter names
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", netloc) or "_"


def token_key(service_url: str) -> str:
    """Parameter-store key of the token for a GitLab host, e.g. ``ci/gitlab/gitlab.com/token``
    or ``ci/gitlab/127.0.0.1_8080/token``."""
    return TOKEN_KEY.format(host=_host_key(service_url))


def _path_project(segs: list[str], raw: str) -> GitlabProject:
    if len(segs) < 2:
        raise CIError(f"GitLab CI: invalid resource {raw[:200]!r} (expected group/project)")
    for seg in segs:
        if not _SEGMENT.match(seg) or seg in {".", "..", "-"}:
            raise CIError(f"GitLab CI: invalid project path in resource {raw[:200]!r}")
    path = "/".join(segs)
    return GitlabProject(ref=quote(path, safe=""), path=path)


def parse_resource(resource: str, service_url: str | None = None) -> GitlabProject:
    """Parse a resource into a project reference (forms in the module docstring)."""
    raw = (resource or "").strip()
    text = raw
    if text.startswith(("http://", "https://")):
        parts = urlsplit(text)
        if (
            service_url
            and (parts.hostname or "").lower() != (urlsplit(service_url).hostname or "").lower()
        ):
            raise CIError(f"GitLab CI: resource URL {raw[:200]!r} is not on the service host")
        text = parts.path
        prefix = urlsplit(service_url).path.rstrip("/") if service_url else ""
        if prefix and prefix != API_PATH and text.startswith(prefix + "/"):
            text = text[len(prefix) :]  # GitLab installed under a relative URL root
    segs = text.strip("/").split("/")
    if any(not s for s in segs):
        raise CIError(f"GitLab CI: invalid resource {raw[:200]!r} (empty path segment)")
    if len(segs) >= 2 and segs[-2:] == ["-", "pipelines"]:
        return _path_project(segs[:-2], raw)
    if segs[0] == "projects" and len(segs) in (2, 3) and (len(segs) == 2 or segs[2] == "pipelines"):
        ref = segs[1]
        if ref.isdigit():
            return GitlabProject(ref=ref)
        if "%" in ref:
            return _path_project(unquote(ref).split("/"), raw)
    if segs[-1] == "pipelines" and len(segs) >= 3:
        return _path_project(segs[:-1], raw)
    return _path_project(segs, raw)


def map_status(status: str | None) -> str:
    return STATUS_MAP.get((status or "").lower(), "error")


def parse_time(value: Any) -> datetime | None:
    """GitLab ISO-8601 (``2016-08-11T11:28:34.085Z`` or with an offset) → aware UTC."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def to_build(pipeline: dict) -> BuildData:
    """One pipeline (list or single-pipeline shape) → BuildData.

    The list endpoint has no ``started_at``/``finished_at``/``duration``: the start is then
    ``created_at`` (so a pending pipeline still sorts as the newest) and a finished
    pipeline's end is ``updated_at``; the duration is computed from those times."""
    pid = pipeline.get("id")
    if isinstance(pid, bool) or not isinstance(pid, int | str) or pid == "":
        raise ValueError("pipeline without an id")
    status = map_status(pipeline.get("status"))
    started = parse_time(pipeline.get("started_at")) or parse_time(pipeline.get("created_at"))
    finished = None
    duration = None
    if status in {"passed", "failed", "aborted", "error"}:
        finished = parse_time(pipeline.get("finished_at")) or parse_time(pipeline.get("updated_at"))
        value = pipeline.get("duration")
        if isinstance(value, int | float) and not isinstance(value, bool):
            duration = float(value)
        elif started and finished:
            duration = max(0.0, (finished - started).total_seconds())
    web_url = pipeline.get("web_url") if isinstance(pipeline.get("web_url"), str) else None
    sha = pipeline.get("sha") if isinstance(pipeline.get("sha"), str) else None
    links = {"origin": web_url} if web_url else {}
    return BuildData(
        build_id=str(pid),
        status=status,
        started_at=started,
        finished_at=finished,
        duration=duration,
        url=web_url,
        revision=sha[:128] if sha else None,
        links=links,
    )


def _sort_key(build: BuildData) -> tuple[int, str]:
    return (int(build.build_id), "") if build.build_id.isdigit() else (-1, build.build_id)


def _seconds_until(value: str | None) -> float | None:
    """``Retry-After`` (seconds or an HTTP date) → seconds from now."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, (parsedate_to_datetime(text) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None


def rate_limit_wait(response: http.HttpResponse) -> float | None:
    """How long GitLab asks us to wait: ``Retry-After``, else ``RateLimit-Reset`` (epoch)."""
    wait = _seconds_until(response.header("retry-after"))
    if wait is not None:
        return wait
    reset = (response.header("ratelimit-reset") or "").strip()
    if reset.isdigit():
        return max(0.0, int(reset) - datetime.now(UTC).timestamp())
    return _seconds_until(response.header("ratelimit-resettime"))


# -- the adapter ---------------------------------------------------------------------------


class GitlabAdapter(BaseAdapter):
    """`CIAdapter` for GitLab CI pipelines: one
    ``GET /projects/{id}/pipelines?per_page=N&order_by=id&sort=desc[&ref=]`` a refresh.
    Construct with smaller limits in tests."""

    label = "GitLab CI"
    default_timeout = DEFAULT_TIMEOUT
    default_max_bytes = DEFAULT_MAX_BYTES
    default_max_retry_wait = 2.0

    def _fetch_builds(self, service_url: str, instance: InstanceRef, limit: int) -> FetchResult:
        base = api_base(service_url)
        project = parse_resource(instance.resource, service_url)
        parameters = instance.parameters if isinstance(instance.parameters, dict) else {}
        params: dict[str, Any] = {
            "per_page": max(1, min(int(limit), MAX_PER_PAGE)),
            "order_by": "id",
            "sort": "desc",
        }
        ref = parameters.get("ref") or parameters.get("branch")
        if isinstance(ref, str) and ref:
            params["ref"] = ref
        headers = {"Accept": "application/json"}
        token = _token(service_url)
        if token:
            headers["PRIVATE-TOKEN"] = token
        if instance.etag:
            headers["If-None-Match"] = instance.etag
        url = f"{base}/projects/{project.ref}/pipelines"
        host = urlsplit(url).netloc
        response = self._fetch(url, headers, params, self.max_bytes)
        etag = response.header("etag")
        if response.status == 304:
            return FetchResult(builds=[], etag=etag or instance.etag, not_modified=True)
        if not response.ok:
            raise _status_error(response, host, token_key(service_url))
        body = self._json(response)
        if not isinstance(body, list):
            raise CIError(f"GitLab CI ({host}): unexpected answer, not a list of pipelines")
        builds = []
        for item in body:
            try:
                if not isinstance(item, dict):
                    raise ValueError("not an object")
                builds.append(to_build(item))
            except (ValueError, TypeError) as exc:
                log.warning("gitlab: skipping a malformed pipeline of %s: %s", project.ref, exc)
        builds.sort(key=_sort_key, reverse=True)
        return FetchResult(builds=builds, etag=etag)


def _token(service_url: str) -> str | None:
    from chalicelib.secrets import SecretError, get_secrets

    try:
        value = get_secrets().get(token_key(service_url))
    except (SecretError, ValueError) as exc:
        raise CIError(
            f"GitLab CI: cannot read the token from the parameter store: {one_line(exc, 150)}"
        ) from None
    return value.strip() if value else None


def _status_error(response: http.HttpResponse, host: str, key: str) -> CIError:
    detail = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            message = body.get("message") or body.get("error_description") or body.get("error")
            detail = one_line(message, 150) if message else ""
    except http.OutboundError:
        pass
    status = response.status
    limited = status == 429 or (status == 403 and response.header("ratelimit-remaining") == "0")
    return status_error(
        "GitLab CI",
        host,
        status,
        not_found="project not found (or private: check the token)",
        token_key=key,
        detail=detail,
        rate_limited=limited,
        retry_after=rate_limit_wait(response) if limited else None,
    )


register(SERVICE_TYPE, GitlabAdapter)
