"""GitHub Actions adapter: a workflow's run attempts as builds, at the smallest rate cost.

Identification (contract §3.2): the service URL is the API base — ``https://api.github.com``
when it is empty, ``https://github.com`` or ``https://api.github.com``; any other URL is
used as given (GitHub Enterprise: ``https://ghe.example.org/api/v3``). ``resource`` is
``repos/{owner}/{repo}/actions/workflows/{file name or id}``, optionally as a full URL
(``https://api.github.com/repos/...``, or the web page ``https://github.com/{o}/{r}/actions/
workflows/{file}``); anything else is `InvalidResourceError` (a CIError).

Requests per refresh:

* **One** conditional ``GET .../actions/workflows/{wf}/runs?per_page=N`` with
  ``If-None-Match: <instance.etag>``. A 304 returns ``FetchResult(not_modified=True)`` and,
  with a token, costs no rate budget (GitHub does not count authorised 304s). The workflow
  file name goes straight into the runs URL: no repository or workflow look-ups
  (LifeMonitor spent two more requests there).
* Each build is a run *attempt* (``<run_id>_<attempt>``). The list shows a run's latest
  attempt only; earlier attempts need ``GET .../runs/{id}/attempts/{n}`` each. Only those
  that land among the newest `limit` builds are fetched; a finished attempt never changes,
  so fetched ones are kept in a per-container cache, and attempts the caller already
  stored are skipped when the instance exposes ``known_build_ids`` (optional). They are
  fetched only while ``X-RateLimit-Remaining`` allows; when some are left out, the ETag is
  not advanced (`etag=None`), so the next refresh asks again.

Rate limits: a 403/429 with ``X-RateLimit-Remaining: 0``, a ``Retry-After``, or a
secondary-limit message raises ``CIError(retry_after=seconds)`` (from ``Retry-After`` or
``X-RateLimit-Reset``), and the token's budget is marked spent in this container until
then, so later instances fail fast without a request; any other 403 is a plain CIError.

Token: parameter-store key ``ci/github/<host>/token`` (`token_key`; ``<host>`` of the API
base, e.g. ``api.github.com``, then of the service URL), sent as ``Authorization: Bearer``.

``instance.parameters`` (both optional, both applied by GitHub *and* re-checked here):

* ``branch``: only runs of that branch (``head_branch``), e.g. ``{"branch": "main"}``;
* ``created``: a creation-time window in GitHub's search syntax — ``>=2024-01-01``,
  ``<2024-02-01T10:00:00Z``, ``2024-01-01..2024-02-01`` (inclusive), ``2024-01-01..*`` —
  what LifeMonitor derived per workflow version from the versions' creation times.

Status (contract §2): ``in_progress`` → running; ``queued``, ``waiting``, ``requested``,
``pending`` → waiting (LifeMonitor logged these as unknown and reported ``error``, a bug:
a queued run is not a failure); then ``conclusion`` success → passed, cancelled → aborted,
failure → failed, anything else (timed_out, skipped, neutral, action_required, stale, null)
→ error. Times: ``run_started_at`` (else ``created_at``) → `started_at`; for completed
attempts ``updated_at`` → `finished_at`; duration in seconds.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Container
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

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
from chalicelib.testing.times import parse_iso, parse_iso_or_none, seconds_between

log = logging.getLogger(__name__)

SERVICE_TYPE = "github"
# Parameter-store key of a GitHub token, relative to the stage prefix. `<host>` is the API
# base's host (`api.github.com`), then the service URL's (`github.com`); `_<port>` stands
# for an explicit port, since `:` is not allowed in parameter names.
TOKEN_KEY = "ci/github/{host}/token"  # noqa: S105 - a key name, not a secret
DEFAULT_API = "https://api.github.com"
PUBLIC_HOSTS = frozenset({"github.com", "www.github.com", "api.github.com"})
API_VERSION = "2022-11-28"
DEFAULT_TIMEOUT = (5.0, 11.0)  # connect, read (LifeMonitor's timeout was 11 s)
DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # 100 runs are ~1.5 MB
MAX_PER_PAGE = 100
DEFAULT_RATE_WAIT = 60.0  # a rate-limit answer that does not say how long to wait
ATTEMPT_CACHE_SIZE = 4096

RUNNING_STATUSES = frozenset({"in_progress"})
WAITING_STATUSES = frozenset({"queued", "waiting", "requested", "pending"})
CONCLUSIONS = {"success": "passed", "cancelled": "aborted", "failure": "failed"}

_NAME = r"[A-Za-z0-9_.\-]+"
_RESOURCE = re.compile(
    rf"^(?:https?://[^/?#]+(?:/api/v3)?/)?/?(?:repos/)?(?P<owner>{_NAME})/(?P<repo>{_NAME})"
    rf"/actions/workflows/(?P<workflow>{_NAME})/?$"
)
_WINDOW_BOUND = re.compile(r"^(>=|<=|>|<)?(.+)$")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class InvalidResourceError(CIError):
    """The resource is not a GitHub workflow reference (a configuration error)."""


@dataclass(frozen=True)
class WorkflowRef:
    owner: str
    repo: str
    workflow: str  # numeric id or file name

    @property
    def path(self) -> str:
        return f"repos/{self.owner}/{self.repo}/actions/workflows/{self.workflow}"


# -- pure helpers ---------------------------------------------------------------------------


def api_base(service_url: str) -> str:
    url = (service_url or "").strip()
    if not url:
        return DEFAULT_API
    if not url.startswith(("http://", "https://")):
        raise CIError(f"GitHub: service URL must be http(s): {url[:100]!r}")
    if (urlsplit(url).hostname or "").lower() in PUBLIC_HOSTS:
        return DEFAULT_API
    return url.rstrip("/")


def _host_key(url: str) -> str:
    parts = urlsplit(url)
    netloc = (parts.hostname or "").lower()
    if parts.port:
        netloc += f"_{parts.port}"
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", netloc) or "_"


def token_key(url: str) -> str:
    """Parameter-store key of the token for a URL's host: ``ci/github/api.github.com/token``."""
    return TOKEN_KEY.format(host=_host_key(url))


def parse_resource(resource: str) -> WorkflowRef:
    raw = (resource or "").strip()
    m = _RESOURCE.match(raw)
    if not m or any(v in {".", ".."} for v in m.groupdict().values()):
        raise InvalidResourceError(
            f"Unexpected format of link to Github Workflow: {raw[:200]!r} (expected "
            "repos/<owner>/<repo>/actions/workflows/<file name or id>)"
        )
    return WorkflowRef(m["owner"], m["repo"], m["workflow"])


def _bound(text: str, *, upper: bool, inclusive: bool) -> tuple[datetime, bool]:
    """A window end → (instant, inclusive). A date as an inclusive upper end means the
    whole day, as in GitHub's search; as an exclusive lower end, after that day."""
    value = parse_iso(text)
    if value is None:
        raise ValueError("empty bound")
    if _DATE_ONLY.match(text.strip()) and upper == inclusive:
        # `<=day` ends before the next day; `>day` starts with it.
        return value + timedelta(days=1), not upper
    return value, inclusive


def parse_created(window: str) -> Callable[[datetime], bool]:
    """GitHub's ``created`` syntax → predicate on a run's creation time; ValueError if bad."""
    text = window.strip()
    if ".." in text:
        low_text, high_text = (part.strip() for part in text.split("..", 1))
        low = None if low_text in {"", "*"} else _bound(low_text, upper=False, inclusive=True)
        high = None if high_text in {"", "*"} else _bound(high_text, upper=True, inclusive=True)
        if low is None and high is None:
            raise ValueError("open window")
    else:
        m = _WINDOW_BOUND.match(text)
        if not m:
            raise ValueError("empty window")
        op, value = m[1] or "", m[2]
        low = high = None
        if op in {">", ">="}:
            low = _bound(value, upper=False, inclusive=op == ">=")
        elif op in {"<", "<="}:
            high = _bound(value, upper=True, inclusive=op == "<=")
        else:  # one date (that day) or one instant
            low = _bound(value, upper=False, inclusive=True)
            high = _bound(value, upper=True, inclusive=True)

    def contains(instant: datetime) -> bool:
        if low is not None and (instant < low[0] or (instant == low[0] and not low[1])):
            return False
        return not (
            high is not None and (instant > high[0] or (instant == high[0] and not high[1]))
        )

    return contains


def map_status(status: Any, conclusion: Any) -> str:
    if status in RUNNING_STATUSES:
        return "running"
    if status in WAITING_STATUSES:
        return "waiting"
    if status != "completed" and conclusion is None:
        # An unknown, unfinished state: never report it as a pass or a failure.
        log.warning("github: unknown run status %r", status)
        return "error"
    return CONCLUSIONS.get(conclusion if isinstance(conclusion, str) else "", "error")


def _attempt_of(run: dict) -> int:
    attempt = run.get("run_attempt")
    # The 2020 schema has no run_attempt: every run had one attempt.
    return (
        attempt
        if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt >= 1
        else 1
    )


def to_build(run: dict, workflow: str, attempt: int | None = None) -> BuildData:
    """A run (list entry or attempt body) → the BuildData of one attempt."""
    run_id = run.get("id")
    if isinstance(run_id, bool) or not isinstance(run_id, int):
        raise ValueError("run without an id")
    attempt = attempt or _attempt_of(run)
    raw_status = run.get("status")
    status = map_status(raw_status, run.get("conclusion"))
    started = parse_iso_or_none(run.get("run_started_at")) or parse_iso_or_none(
        run.get("created_at")
    )
    finished = parse_iso_or_none(run.get("updated_at")) if raw_status == "completed" else None
    links: dict[str, str] = {}
    page = None
    html = run.get("html_url")
    if isinstance(html, str) and html:
        page = f"{html.rstrip('/')}/attempts/{attempt}"
        links["origin"] = page
        if "/actions/runs/" in html:
            links["instance"] = f"{html.split('/actions/runs/')[0]}/actions/workflows/{workflow}"
    api = run.get("url")
    if isinstance(api, str) and api:
        links["api"] = f"{api.rstrip('/')}/attempts/{attempt}"
    sha = run.get("head_sha")
    return BuildData(
        build_id=f"{run_id}_{attempt}",
        status=status,
        started_at=started,
        finished_at=finished,
        duration=seconds_between(started, finished),
        url=page,
        revision=sha[:128] if isinstance(sha, str) and sha else None,
        links=links,
    )


def _int_header(response: http.HttpResponse, name: str) -> int | None:
    value = (response.header(name) or "").strip()
    return int(value) if value.isdigit() else None


def _retry_after(response: http.HttpResponse) -> float | None:
    value = (response.header("retry-after") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _message(response: http.HttpResponse) -> str:
    try:
        body = response.json()
    except http.OutboundError:
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return one_line(message, 200) if isinstance(message, str) else ""


# -- per-container state: spent budgets and finished attempts -------------------------------

_lock = threading.Lock()
_blocked_until: dict[str, float] = {}  # budget key → epoch seconds
_attempts: OrderedDict[tuple, BuildData] = OrderedDict()


def reset_state() -> None:
    """Forget spent budgets and cached attempts (tests)."""
    with _lock:
        _blocked_until.clear()
        _attempts.clear()


def _budget_key(base: str, token: str | None) -> str:
    # Rate limits are per token (per IP when anonymous); never keep the token itself.
    who = hashlib.sha256(token.encode()).hexdigest()[:16] if token else "anonymous"
    return f"{base}#{who}"


def _block(key: str, seconds: float) -> None:
    with _lock:
        _blocked_until[key] = max(_blocked_until.get(key, 0.0), time.time() + seconds)


def _blocked_for(key: str) -> float | None:
    with _lock:
        until = _blocked_until.get(key)
        if until is None:
            return None
        if until <= time.time():
            del _blocked_until[key]
            return None
        return until - time.time()


def _cached_attempt(key: tuple) -> BuildData | None:
    with _lock:
        build = _attempts.get(key)
        if build is not None:
            _attempts.move_to_end(key)
        return build


def _cache_attempt(key: tuple, build: BuildData) -> None:
    with _lock:
        _attempts[key] = build
        _attempts.move_to_end(key)
        while len(_attempts) > ATTEMPT_CACHE_SIZE:
            _attempts.popitem(last=False)


# -- the adapter ----------------------------------------------------------------------------


@dataclass
class _Slot:
    """A build to be: the latest attempt of a listed run, or an earlier one to fetch."""

    when: datetime
    run: dict
    attempt: int
    listed: bool


class GithubAdapter(BaseAdapter):
    """`CIAdapter` for GitHub Actions. Tests construct it with small timeouts, no retries."""

    label = "GitHub"
    default_timeout = DEFAULT_TIMEOUT
    default_max_bytes = DEFAULT_MAX_BYTES
    default_max_retry_wait = 1.0

    # -- protocol -------------------------------------------------------------------------
    def external_link(self, service_url: str, resource: str) -> str:
        """The workflow's web page (LifeMonitor's instance link)."""
        ref = parse_resource(resource)
        base = api_base(service_url)
        site = "https://github.com" if base == DEFAULT_API else re.sub(r"/api/v3$", "", base)
        return f"{site}/{ref.owner}/{ref.repo}/actions/workflows/{ref.workflow}"

    # -- internals ------------------------------------------------------------------------
    def _fetch_builds(self, service_url: str, instance: InstanceRef, limit: int) -> FetchResult:
        base = api_base(service_url)
        ref = parse_resource(instance.resource)
        limit = max(1, int(limit))
        parameters = getattr(instance, "parameters", None)
        parameters = parameters if isinstance(parameters, dict) else {}
        query: dict[str, Any] = {
            "per_page": min(limit, MAX_PER_PAGE),
            "exclude_pull_requests": "true",
        }
        branch = parameters.get("branch")
        if branch is not None and (not isinstance(branch, str) or not branch.strip()):
            raise CIError(f"GitHub: parameter 'branch' must be a branch name, got {branch!r}")
        if branch:
            query["branch"] = branch = branch.strip()
        created = parameters.get("created")
        in_window: Callable[[datetime], bool] | None = None
        if created is not None:
            try:
                if not isinstance(created, str):
                    raise ValueError("not a string")
                in_window = parse_created(created)
            except ValueError:
                raise CIError(
                    f"GitHub: parameter 'created' is not a GitHub date window "
                    f"(e.g. '>=2024-01-01', 'A..B'): {str(created)[:100]!r}"
                ) from None
            query["created"] = created.strip()

        token = _token(service_url, base)
        budget = _budget_key(base, token)
        headers = self._headers(token)
        if instance.etag:
            headers["If-None-Match"] = instance.etag
        url = f"{base}/{ref.path}/runs"
        response = self._get(url, headers, query, budget)
        etag = response.header("etag")
        if response.status == 304:
            return FetchResult(builds=[], etag=etag or instance.etag, not_modified=True)
        body = self._json(response)
        runs = body.get("workflow_runs") if isinstance(body, dict) else None
        if not isinstance(runs, list):
            raise CIError(f"GitHub ({host_of(base)}): unexpected answer, no workflow_runs list")

        runs = [
            r
            for r in runs
            if isinstance(r, dict)
            and isinstance(r.get("id"), int)
            and not isinstance(r.get("id"), bool)
        ]
        if branch:
            runs = [r for r in runs if r.get("head_branch") in (None, branch)]
        if in_window is not None:
            runs = [r for r in runs if _created_in(r, in_window)]

        builds: list[BuildData] = []
        wanted: list[_Slot] = []
        for slot in _plan(runs, limit):
            if slot.listed:
                try:
                    builds.append(to_build(slot.run, ref.workflow))
                except (ValueError, TypeError) as exc:
                    log.warning("github: skipping a malformed run of %s: %s", ref.path, exc)
            else:
                wanted.append(slot)
        earlier, complete = self._earlier_attempts(
            base, ref, wanted, headers, budget, response, instance
        )
        builds += earlier
        builds.sort(key=_newest_first)
        # Left-out attempts: keep the old ETag so the next refresh reads the list again.
        return FetchResult(builds=builds[:limit], etag=etag if complete else None)

    def _earlier_attempts(
        self,
        base: str,
        ref: WorkflowRef,
        wanted: list[_Slot],
        headers: dict[str, str],
        budget: str,
        listing: http.HttpResponse,
        instance: InstanceRef,
    ) -> tuple[list[BuildData], bool]:
        known = getattr(instance, "known_build_ids", None)
        known = known if isinstance(known, Container) and not isinstance(known, str) else ()
        headers = {k: v for k, v in headers.items() if k != "If-None-Match"}
        remaining = _int_header(listing, "x-ratelimit-remaining")
        builds: list[BuildData] = []
        complete = True
        for slot in wanted:
            run_id = slot.run["id"]
            build_id = f"{run_id}_{slot.attempt}"
            cache_key = (base, ref.owner.lower(), ref.repo.lower(), run_id, slot.attempt)
            cached = _cached_attempt(cache_key)
            if cached is not None:
                builds.append(cached)
                continue
            if build_id in known:
                continue  # stored already, and a superseded attempt never changes
            if remaining is not None and remaining <= 0:
                log.info("github: rate budget too low for attempt %s of %s", build_id, ref.path)
                complete = False
                break
            url = (
                f"{base}/repos/{ref.owner}/{ref.repo}/actions/runs/{run_id}/attempts/{slot.attempt}"
            )
            try:
                response = self._get(
                    url, headers, {"exclude_pull_requests": "true"}, budget, not_found_ok=True
                )
            except CIError as exc:
                log.warning("github: attempt %s of %s not read: %s", build_id, ref.path, exc)
                complete = False
                break
            remaining = _int_header(response, "x-ratelimit-remaining")
            if response.status == 404:
                continue  # the run was deleted meanwhile
            try:
                body = self._json(response)
                if not isinstance(body, dict):
                    raise ValueError("not an object")
                build = to_build(body, ref.workflow, slot.attempt)
            except (CIError, ValueError, TypeError) as exc:
                log.warning("github: attempt %s of %s unreadable: %s", build_id, ref.path, exc)
                complete = False
                continue
            if body.get("status") == "completed":
                _cache_attempt(cache_key, build)
            builds.append(build)
        return builds, complete

    @staticmethod
    def _headers(token: str | None) -> dict[str, str]:
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _get(
        self,
        url: str,
        headers: dict[str, str],
        params: dict | None,
        budget: str,
        *,
        not_found_ok: bool = False,
    ) -> http.HttpResponse:
        host = host_of(url)
        wait = _blocked_for(budget)
        if wait is not None:
            raise CIError(
                f"GitHub ({host}): rate limit exhausted; retry in {wait:.0f} s", retry_after=wait
            )
        try:
            response = self._fetch(url, headers, params)
        except CIError as exc:
            if exc.retry_after is not None:
                _block(budget, exc.retry_after)
            raise
        status = response.status
        if response.ok or status == 304:
            if _int_header(response, "x-ratelimit-remaining") == 0:
                # The budget is spent: later refreshes in this container fail fast.
                _block(budget, _reset_wait(response))
            return response
        if status in (403, 429):
            message = _message(response)
            wait = _retry_after(response)
            if wait is None and (
                _int_header(response, "x-ratelimit-remaining") == 0
                or status == 429
                or "rate limit" in message.lower()
            ):
                wait = _reset_wait(response)
            if wait is not None:
                _block(budget, wait)
                raise CIError(
                    f"GitHub ({host}): rate limit exceeded"
                    f"{': ' + message if message else ''}; retry in {wait:.0f} s",
                    retry_after=wait,
                )
            raise CIError(
                f"GitHub ({host}): access denied (403){': ' + message if message else ''}"
            )
        if status == 404 and not_found_ok:
            return response
        if status == 401:
            raise CIError(
                f"GitHub ({host}): bad credentials (401); check the token at {token_key(url)}"
            )
        if status == 404:
            hint = (
                ""
                if "authorization" in {k.lower() for k in headers}
                else f" (private? no token at {token_key(url)})"
            )
            raise CIError(f"GitHub ({host}): not found: {urlsplit(url).path[:200]}{hint}")
        message = _message(response)
        raise CIError(
            f"GitHub ({host}): answered {status}{': ' + message if message else ''}",
            retry_after=_retry_after(response) if status >= 500 else None,
        )


def _reset_wait(response: http.HttpResponse) -> float:
    reset = _int_header(response, "x-ratelimit-reset")
    if reset is None:
        return DEFAULT_RATE_WAIT
    return max(1.0, reset - time.time())


def _created_in(run: dict, in_window: Callable[[datetime], bool]) -> bool:
    created = parse_iso_or_none(run.get("created_at"))
    return created is None or in_window(created)


def _plan(runs: list[dict], limit: int) -> list[_Slot]:
    """The newest `limit` attempts of `runs`: each run's latest attempt (in the list) and
    its earlier ones (to fetch), placed by start time — attempt 1 started when the run was
    created, later ones between that and the latest attempt's start."""
    slots = []
    for run in runs:
        attempts = _attempt_of(run)
        created = parse_iso_or_none(run.get("created_at"))
        latest = parse_iso_or_none(run.get("run_started_at")) or created
        if latest is None:
            latest = created = datetime.min.replace(tzinfo=UTC)
        first = created or latest
        slots.append(_Slot(latest, run, attempts, True))
        for n in range(1, attempts):
            fraction = (n - 1) / (attempts - 1)
            slots.append(_Slot(first + (latest - first) * fraction, run, n, False))
    slots.sort(key=lambda s: (s.when, s.run["id"], s.attempt), reverse=True)
    return slots[:limit]


def _newest_first(build: BuildData) -> tuple:
    run_id, _, attempt = build.build_id.partition("_")
    started = build.started_at.timestamp() if build.started_at else float("-inf")
    return (-started, -int(run_id), -int(attempt or 0))


def _token(service_url: str, base: str) -> str | None:
    from chalicelib.secrets import SecretError, get_secrets

    keys = dict.fromkeys([token_key(base), token_key(service_url or base)])
    try:
        store = get_secrets()
        for key in keys:
            value = store.get(key)
            if value:
                return value.strip()
    except (SecretError, ValueError) as exc:
        raise CIError(
            f"GitHub: cannot read the token from the parameter store: {one_line(exc, 150)}"
        ) from None
    return None


register(SERVICE_TYPE, GithubAdapter)
