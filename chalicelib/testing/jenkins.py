"""Jenkins adapter: the last builds of any job — folders and multibranch branches included —
in **one** request per refresh.

LifeMonitor asked for the job and then for each build (N+1 requests), resolved only the
last path segment of the job (folder jobs silently pointed at a root job) and never sent
credentials (contract §3.1, §12). Here:

* ``resource`` is the job's URL path below the service URL, as Jenkins shows it:
  ``job/tests``, ``job/folder/job/pipeline``, ``job/mbranch/job/main``,
  ``job/mbranch/job/feature%252Fx`` (a branch name with ``/``, as in the browser's URL).
  A path of bare names (``folder/pipeline``) is read as ``job/folder/job/pipeline``; a
  full URL below the service URL is accepted as well; ``view/<name>`` pairs are kept.
* One ``GET {job}/api/json?tree=builds[...]{0,N}`` returns the newest N builds with every
  field we read (number, building, result, timestamp, duration, revision).
* Optional credentials per server, from the parameter store (``USER_KEY`` / ``TOKEN_KEY``,
  see `credential_keys`), sent as HTTP Basic (a Jenkins user and API token).
* Logs: ``GET {job}/{n}/consoleText`` (`JenkinsAdapter.fetch_log`).

Status (contract §2): ``building`` → running; else ``result`` SUCCESS → passed, ABORTED →
aborted, FAILURE → failed, anything else (UNSTABLE, NOT_BUILT, null) → error. Times: the
``timestamp`` (ms) is `started_at`, ``duration`` (ms) becomes seconds. Build ids are the
build numbers, as strings. A build's `url` is its page below the *service URL* (Jenkins'
own ``url`` field uses its configured root URL, often wrong behind a proxy); `links` holds
``origin`` (the page), ``console`` and ``instance`` (the job page).
"""

from __future__ import annotations

import base64
import logging
import re
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlsplit

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
)
from chalicelib.testing.times import from_epoch_ms, ms_to_seconds

log = logging.getLogger(__name__)

SERVICE_TYPE = "jenkins"
# Parameter-store keys (relative to the stage prefix) of a server's credentials: a Jenkins
# user name and one of its API tokens. `<host>` is the service URL's host, lower-cased, with
# `_<port>` for an explicit port (`:` is not allowed in parameter names), e.g.
# `ci/jenkins/jenkins.example.org/user`, `ci/jenkins/ci.example.org_8443/token`.
USER_KEY = "ci/jenkins/{host}/user"
TOKEN_KEY = "ci/jenkins/{host}/token"  # noqa: S105 - a key name, not a secret
DEFAULT_TIMEOUT = (5.0, 15.0)  # connect, read
DEFAULT_MAX_BYTES = 5 * 1024 * 1024  # ten builds' tree is a few KB; more means a wrong URL
LOG_MAX_BYTES = 20 * 1024 * 1024  # consoleText cannot be ranged: the most we download
DEFAULT_LOG_BYTES = 131072  # LifeMonitor's default log page
MAX_BUILDS_FIELD = 100  # Jenkins' `builds` holds at most 100; `allBuilds` beyond that

# Every field a build needs, so one request suffices. `lastBuiltRevision` is the git
# plugin's BuildData action; change sets are the fallback for the revision.
BUILD_FIELDS = (
    "number,url,building,result,timestamp,duration,"
    "actions[lastBuiltRevision[SHA1]],changeSets[items[commitId]],changeSet[items[commitId]]"
)
RESULTS = {"SUCCESS": "passed", "ABORTED": "aborted", "FAILURE": "failed"}
_CONTAINER_HINTS = ("Folder", "MultiBranch", "OrganizationFolder")
_CONTAINERS = frozenset({"job", "view"})
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


# -- pure helpers ---------------------------------------------------------------------------


def api_base(service_url: str) -> str:
    url = (service_url or "").strip()
    if not url:
        raise CIError("Jenkins: the testing service has no URL")
    if not url.startswith(("http://", "https://")):
        raise CIError(f"Jenkins: service URL must be http(s): {url[:100]!r}")
    return url.rstrip("/")


def host_key(url: str) -> str:
    parts = urlsplit(url)
    netloc = (parts.hostname or "").lower()
    if parts.port:
        netloc += f"_{parts.port}"
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", netloc) or "_"


def credential_keys(service_url: str) -> tuple[str, str]:
    """(user key, token key) in the parameter store for a Jenkins server."""
    host = host_key(service_url)
    return USER_KEY.format(host=host), TOKEN_KEY.format(host=host)


def _encode_segment(segment: str) -> str:
    # The resource is a URL path: keep existing %-escapes (a multibranch branch `a/b` is
    # `a%252Fb` in Jenkins URLs), escape what a path cannot carry (spaces, `?`, `#`).
    escaped = quote(segment, safe="%!$&'()*+,;=:@-._~")
    return _LONE_PERCENT.sub("%25", escaped)


def parse_job_path(resource: str, service_url: str = "") -> str:
    """Resource → normalised job path ``job/a/job/b`` (no leading/trailing ``/``).
    Raises CIError for anything that is not a job path below the service URL."""
    raw = (resource or "").strip()
    path = raw
    if raw.startswith(("http://", "https://")):
        parts, base = urlsplit(raw), urlsplit(service_url or "")
        if base.netloc and parts.netloc.lower() != base.netloc.lower():
            raise CIError(
                f"Jenkins: job URL {raw[:200]!r} is not on the service {service_url[:100]!r}"
            )
        path = parts.path
        prefix = base.path.rstrip("/")
        if prefix and (path == prefix or path.startswith(prefix + "/")):
            path = path[len(prefix) :]
    segments = [s for s in path.strip("/").split("/")]
    if not raw or segments == [""] or any(not s for s in segments):
        raise CIError(f"Jenkins: invalid job path {raw[:200]!r} (expected job/<name>[/job/...])")
    if segments[0] not in _CONTAINERS:
        segments = [part for name in segments for part in ("job", name)]
    if (
        len(segments) % 2
        or segments[-2] != "job"
        or any(segments[i] not in _CONTAINERS for i in range(0, len(segments), 2))
    ):
        raise CIError(f"Jenkins: invalid job path {raw[:200]!r} (expected job/<name>[/job/...])")
    names = segments[1::2]
    if any(n in {".", ".."} for n in names):
        raise CIError(f"Jenkins: invalid job path {raw[:200]!r}")
    return "/".join(
        part if i % 2 == 0 else _encode_segment(part) for i, part in enumerate(segments)
    )


def tree_query(limit: int) -> str:
    """The `tree=` expression for the newest `limit` builds (`{0,N}` is Jenkins' range)."""
    n = max(1, int(limit))
    field = "builds" if n <= MAX_BUILDS_FIELD else "allBuilds"
    return f"{field}[{BUILD_FIELDS}]{{0,{n}}}"


def map_status(building: Any, result: Any) -> str:
    if building is True:
        return "running"
    return RESULTS.get(result if isinstance(result, str) else "", "error")


def _revision(build: dict) -> str | None:
    for action in build.get("actions") or []:
        revision = action.get("lastBuiltRevision") if isinstance(action, dict) else None
        sha = revision.get("SHA1") if isinstance(revision, dict) else None
        if isinstance(sha, str) and sha:
            return sha[:128]
    sets = build.get("changeSets")
    sets = sets if isinstance(sets, list) else [build.get("changeSet")]
    for change_set in sets:
        items = change_set.get("items") if isinstance(change_set, dict) else None
        for item in reversed(items or []):  # the newest change comes last
            commit = item.get("commitId") if isinstance(item, dict) else None
            if isinstance(commit, str) and commit:
                return commit[:128]
    return None


def to_build(build: dict, job_url: str) -> BuildData:
    """One build of the tree answer → BuildData; `job_url` ends with ``/``."""
    number = build.get("number")
    if isinstance(number, bool) or not isinstance(number, int):
        raise ValueError("build without a number")
    status = map_status(build.get("building"), build.get("result"))
    started = from_epoch_ms(build.get("timestamp"))
    duration = finished = None
    if status != "running":
        duration = ms_to_seconds(build.get("duration"))
        if started is not None and duration is not None:
            finished = started + timedelta(seconds=duration)
    url = f"{job_url}{number}/"
    return BuildData(
        build_id=str(number),
        status=status,
        started_at=started,
        finished_at=finished,
        duration=duration,
        url=url,
        revision=_revision(build),
        links={"origin": url, "console": f"{url}console", "instance": job_url},
    )


def _retry_after(response: http.HttpResponse) -> float | None:
    value = (response.header("retry-after") or "").strip()
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: rare for Jenkins; the scheduler's back-off applies


# -- the adapter ----------------------------------------------------------------------------


class JenkinsAdapter(BaseAdapter):
    """`CIAdapter` for Jenkins. Tests construct it with small timeouts and no retries."""

    label = "Jenkins"
    default_timeout = DEFAULT_TIMEOUT
    default_max_bytes = DEFAULT_MAX_BYTES
    default_max_retry_wait = 2.0

    # -- protocol -------------------------------------------------------------------------
    def fetch_log(
        self,
        service_url: str,
        instance: InstanceRef,
        build_id: str,
        max_bytes: int = DEFAULT_LOG_BYTES,
    ) -> str:
        """The head of the build's console output (``consoleText``), cut at `max_bytes`."""
        return self._guarded(self._fetch_log, service_url, instance, str(build_id), max_bytes)

    def external_link(self, service_url: str, resource: str) -> str:
        """The job's page (LifeMonitor's instance link)."""
        return f"{api_base(service_url)}/{parse_job_path(resource, service_url)}/"

    # -- internals ------------------------------------------------------------------------
    def _fetch_builds(self, service_url: str, instance: InstanceRef, limit: int) -> FetchResult:
        base = api_base(service_url)
        job_url = f"{base}/{parse_job_path(instance.resource, service_url)}/"
        response = self._get(
            service_url, f"{job_url}api/json", {"tree": tree_query(limit)}, self.max_bytes
        )
        body = self._json(response)
        if not isinstance(body, dict):
            raise CIError(f"Jenkins ({host_of(base)}): unexpected answer, not a JSON object")
        items = body.get("builds", body.get("allBuilds"))
        if not isinstance(items, list):
            kind = str(body.get("_class") or "")
            if any(hint in kind for hint in _CONTAINER_HINTS):
                raise CIError(
                    f"Jenkins: {instance.resource!r} is a folder or multibranch "
                    f"project ({kind.rsplit('.', 1)[-1]}), not a job: point at one "
                    "of its jobs or branches (job/<folder>/job/<name>)"
                )
            raise CIError(f"Jenkins ({host_of(base)}): unexpected answer, no builds list")
        builds = []
        for item in items:
            try:
                if not isinstance(item, dict):
                    raise ValueError("not an object")
                builds.append(to_build(item, job_url))
            except (ValueError, TypeError) as exc:
                log.warning("jenkins: skipping a malformed build of %s: %s", job_url, exc)
        builds.sort(key=lambda b: int(b.build_id), reverse=True)
        return FetchResult(builds=builds[: max(1, int(limit))])

    def _fetch_log(
        self, service_url: str, instance: InstanceRef, build_id: str, max_bytes: int
    ) -> str:
        if not build_id.isdigit():
            raise CIError(f"Jenkins: invalid build id {build_id[:50]!r}")
        job_url = f"{api_base(service_url)}/{parse_job_path(instance.resource, service_url)}/"
        response = self._get(service_url, f"{job_url}{build_id}/consoleText", None, LOG_MAX_BYTES)
        return response.content[: max(0, int(max_bytes))].decode("utf-8", errors="ignore")

    def _headers(self, service_url: str) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        auth = _credentials(service_url)
        if auth:
            pair = f"{auth[0]}:{auth[1]}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        return headers

    def _get(
        self, service_url: str, url: str, params: dict | None, max_bytes: int
    ) -> http.HttpResponse:
        host = host_of(url)
        headers = self._headers(service_url)
        response = self._fetch(url, headers, params, max_bytes)
        if response.ok:
            return response
        status = response.status
        if status == 404:
            raise CIError(f"Jenkins ({host}): not found: {urlsplit(url).path[:200]}")
        if status in (401, 403):
            user_key, token_key = credential_keys(service_url)
            hint = (
                "credentials rejected"
                if "Authorization" in headers
                else f"no credentials configured ({user_key}, {token_key})"
            )
            raise CIError(f"Jenkins ({host}): access denied ({status}, {hint})")
        retry_after = _retry_after(response) if status in (429, 503) else None
        raise CIError(f"Jenkins ({host}): answered {status}", retry_after=retry_after)


def _credentials(service_url: str) -> tuple[str, str] | None:
    from chalicelib.secrets import SecretError, get_secrets

    user_key, token_key = credential_keys(service_url)
    try:
        store = get_secrets()
        user, token = store.get(user_key), store.get(token_key)
    except (SecretError, ValueError) as exc:
        raise CIError(
            f"Jenkins: cannot read credentials from the parameter store: {one_line(exc, 150)}"
        ) from None
    if user and token:
        return user.strip(), token.strip()
    if user or token:
        # Half a credential is a configuration mistake; anonymous access may still work.
        log.warning(
            "jenkins: only one of %s and %s is set; sending no credentials", user_key, token_key
        )
    return None


register(SERVICE_TYPE, JenkinsAdapter)
