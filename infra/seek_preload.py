"""Preload a WorkflowHub (SEEK) with Workflow Testing RO-Crates whose test instances run on
the local stack's Jenkins (jobs `test`, which passes, and `failing`, which fails).

    SEEK_USER=… SEEK_PASSWORD=… python -m infra.seek_preload --url http://localhost:3000 \\
        --project 1 --jenkins-url http://jenkins:8080/

Standard library only (the crates come from the project's own `emulators/crates.py`
builders, stdlib only as well), so it runs in a plain `python:3.12-slim` container with the
project mounted: the compose service `seek-preload` (profile `preload`,
localstack/docker-compose.yml). SEEK's first account and project can only be made in its web
UI, so they must exist before this runs.

It uses SEEK's documented JSON API: `POST /workflows` with a JSON:API body (title,
`workflow_class`, one content blob `application/zip`, a policy giving everyone download,
the project), then a `PUT` of the crate's bytes to the content blob's `link` (SEEK's
two-step upload). It is idempotent: titles already listed by `GET /workflows` are kept, and
one whose content blob never received its bytes (an interrupted run) gets them now. One line
per workflow is printed; an HTTP error or an unreachable server ends it with exit status 1
and a one-line reason.

Credentials (HTTP Basic, or `Authorization: Token …`) go only to the `--url` origin: a
redirect to another scheme, host or port is refused, and server-sent links to another
origin (SEEK writes its configured host, e.g. `localhost:3000`, not `seek:3000`) are
followed on ours, by path.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit, urlunsplit

from emulators.crates import DEFINITION, WORKFLOW, wtroc_metadata, zip_crate

DEFAULT_JENKINS_URL = "http://jenkins:8080/"
JSONAPI = "application/vnd.api+json"
USER_AGENT = "lifemonitor-seek-preload"
POLL_INTERVAL = 2.0  # seconds between two probes while waiting for the server


@dataclass(frozen=True)
class DemoWorkflow:
    """One workflow to create: its title (also the crate's name) and the Jenkins jobs its
    test suite's instances run, in order."""

    title: str
    description: str
    jobs: tuple[str, ...]


# Mirrors LifeMonitor's `sort-and-change-case` example: a Galaxy workflow, one suite, Jenkins
# instances with resource `job/<name>/`. One of each aggregate status the dashboard shows.
DEMO_WORKFLOWS = (
    DemoWorkflow(
        "sort-and-change-case-jenkins-passing",
        "LifeMonitor local stack: the test instance runs the Jenkins job `test`, which passes.",
        ("test",),
    ),
    DemoWorkflow(
        "sort-and-change-case-jenkins-failing",
        "LifeMonitor local stack: the test instance runs the Jenkins job `failing`, which fails.",
        ("failing",),
    ),
    DemoWorkflow(
        "sort-and-change-case-jenkins-mixed",
        "LifeMonitor local stack: two test instances, on the Jenkins jobs `test` and `failing`.",
        ("test", "failing"),
    ),
)

GALAXY_WORKFLOW = {
    "a_galaxy_workflow": "true",
    "format-version": "0.1",
    "name": "sort-and-change-case",
    "annotation": "",
    "steps": {},
}
PLANEMO_TEST = "- doc: sort and change case\n  job: {}\n  outputs: {}\n"


class PreloadError(Exception):
    """A failure to report in one line (the message) with exit status 1."""


class RedirectRefused(PreloadError):
    pass


def build_crate(workflow: DemoWorkflow, jenkins_url: str) -> bytes:
    """The workflow's Workflow Testing RO-Crate zip (reproducible byte for byte)."""
    instances = [("jenkins", jenkins_url, f"job/{job}/") for job in workflow.jobs]
    metadata = wtroc_metadata(name=workflow.title, instances=instances)
    files = {WORKFLOW: json.dumps(GALAXY_WORKFLOW, indent=2), DEFINITION: PLANEMO_TEST}
    return zip_crate(metadata, files)


def workflow_post_body(workflow: DemoWorkflow, project: str) -> dict:
    """`POST /workflows` body, in the shape of SEEK's `workflowPost.json` example."""
    return {
        "data": {
            "type": "workflows",
            "attributes": {
                "title": workflow.title,
                "description": workflow.description,
                "workflow_class": {"key": "galaxy"},
                "license": "Apache-2.0",
                "content_blobs": [
                    {
                        "original_filename": f"{workflow.title}.crate.zip",
                        "content_type": "application/zip",
                    }
                ],
                # Public download: LifeMonitor registers public workflows without a token.
                "policy": {
                    "access": "download",
                    "permissions": [
                        {"resource": {"id": project, "type": "projects"}, "access": "edit"}
                    ],
                },
            },
            "relationships": {"projects": {"data": [{"id": project, "type": "projects"}]}},
        }
    }


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return (
        scheme,
        (parts.hostname or "").lower(),
        parts.port or {"http": 80, "https": 443}.get(scheme),
    )


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect of a GET only within the origin, with the credentials re-added;
    anything else is refused (urllib would carry headers to any host)."""

    def __init__(self, origin: tuple[str, str, int | None], authorization: str | None) -> None:
        super().__init__()
        self.origin = origin
        self.authorization = authorization

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        method = req.get_method()
        other_origin = _origin(newurl) != self.origin
        if other_origin or method != "GET":
            fp.close()
            where = urlsplit(newurl)
            why = (
                "another origin than --url: not followed, the credentials stay with --url"
                if other_origin
                else f"not followed for a {method}"
            )
            raise RedirectRefused(
                f"{method} {urlsplit(req.full_url).path} was redirected ({code}) to "
                f"{where.scheme}://{where.netloc}{where.path}, {why}"
            )
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and self.authorization:
            new.add_unredirected_header("Authorization", self.authorization)
        return new


class HttpError(PreloadError):
    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        self.method, self.path, self.status = method, path, status
        super().__init__(f"{method} {path} answered {status} {_error_text(status, body)}")


def _error_text(status: int, body: bytes) -> str:
    """SEEK's error as one line: the JSON:API `errors[0]` title and detail (or `details`),
    the top-level title/detail some controllers send, else the status phrase."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    error = None
    if isinstance(doc, dict):
        errors = doc.get("errors")
        error = errors[0] if isinstance(errors, list) and errors else doc
    parts = []
    if isinstance(error, dict):
        parts = [str(error[k]) for k in ("title", "detail", "details") if error.get(k)]
        pointer = (
            error.get("source", {}).get("pointer")
            if isinstance(error.get("source"), dict)
            else None
        )
        if pointer:
            parts.insert(0, pointer.rsplit("/", 1)[-1])
    if not parts:
        try:
            parts = [HTTPStatus(status).phrase]
        except ValueError:
            parts = ["(no reason given)"]
    text = ": ".join(parts)
    return " ".join(text.split())[:300]


class SeekClient:
    """The few calls the preload needs, with the credentials kept to the base URL's origin."""

    def __init__(self, base_url: str, authorization: str | None, timeout: float = 60.0) -> None:
        self.base = base_url.rstrip("/")
        self.origin = _origin(self.base)
        self.authorization = authorization
        self.timeout = timeout
        # No proxies: WorkflowHub is a local service and the credentials go to it only.
        self._opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), _SameOriginRedirects(self.origin, authorization)
        )

    def url(self, path: str) -> str:
        """A path of the API below the base URL."""
        return self.base + path

    def follow(self, link: str) -> str:
        """A URL the server sent, on our origin: SEEK writes its configured host into links,
        which need not be the name it is reached by here. Only the path and query are kept."""
        parts = urlsplit(link)
        scheme, netloc = urlsplit(self.base)[:2]
        return urlunsplit((scheme, netloc, parts.path, parts.query, ""))

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        authenticated: bool = True,
        timeout: float | None = None,
    ) -> tuple[int, bytes]:
        if _origin(url) != self.origin:  # a bug here must not leak the credentials
            raise PreloadError(f"refusing to send a request to {url}: not on {self.base}")
        # The origin's scheme is http(s): checked in main, and every URL is on it (above).
        req = urllib.request.Request(url, data=body, method=method)  # noqa: S310
        for name, value in {"User-Agent": USER_AGENT, **(headers or {})}.items():
            req.add_header(name, value)
        if authenticated and self.authorization:
            # Unredirected: urllib would otherwise copy it to wherever a redirect points.
            req.add_unredirected_header("Authorization", self.authorization)
        path = urlsplit(url).path
        try:
            with self._opener.open(req, timeout=timeout or self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            try:
                payload = exc.read()
            except (OSError, http.client.HTTPException):
                payload = b""
            raise HttpError(method, path, exc.code, payload) from None
        except urllib.error.URLError as exc:
            raise PreloadError(f"cannot reach {self.base}: {_reason(exc.reason)}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise PreloadError(f"cannot reach {self.base}: {_reason(exc)}") from None

    def json(self, method: str, url: str, body: dict | None = None) -> dict:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = JSONAPI
            data = json.dumps(body).encode()
        _status, payload = self.request(method, url, data, headers)
        try:
            doc = json.loads(payload)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise PreloadError(f"{method} {urlsplit(url).path} did not answer a JSON object")
        return doc

    def probe(self, timeout: float) -> int:
        """Status of an anonymous `GET /workflows.json` (what the compose health check asks)."""
        try:
            status, _ = self.request(
                "GET",
                self.url("/workflows.json"),
                headers={"Accept": "application/json"},
                authenticated=False,
                timeout=timeout,
            )
        except HttpError as exc:
            return exc.status
        return status


def _reason(reason: object) -> str:
    text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    return " ".join(str(text).split())


def wait_for(client: SeekClient, seconds: float) -> None:
    """Return once the server answers (any status below 500); fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        try:
            status = client.probe(timeout=max(1.0, min(client.timeout, remaining)))
            if status < 500:
                return
            last = f"GET /workflows.json answered {status}"
        except RedirectRefused:
            raise
        except PreloadError as exc:
            last = str(exc)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PreloadError(f"no answer within --wait {seconds:g} s: {last}")
        time.sleep(min(POLL_INTERVAL, remaining))


def existing_workflows(client: SeekClient) -> dict[str, str]:
    """Title → id of the workflows the caller can see (the first id for a repeated title),
    following the index's `links.next` pages."""
    found: dict[str, str] = {}
    url: str | None = client.url("/workflows")
    seen: set[str] = set()
    while url and url not in seen:
        seen.add(url)
        doc = client.json("GET", url)
        for item in doc.get("data") or []:
            if not isinstance(item, dict):
                continue
            title = (item.get("attributes") or {}).get("title")
            if isinstance(title, str) and item.get("id") is not None:
                found.setdefault(title, str(item["id"]))
        next_link = (doc.get("links") or {}).get("next")
        url = client.follow(next_link) if isinstance(next_link, str) and next_link else None
    return found


def _content_blob(doc: dict, method: str) -> tuple[str, dict]:
    """(workflow id, first content blob) of a workflow document."""
    data = doc.get("data") if isinstance(doc.get("data"), dict) else {}
    blobs = (data.get("attributes") or {}).get("content_blobs") or []
    blob = blobs[0] if blobs and isinstance(blobs[0], dict) else {}
    if data.get("id") is None or not isinstance(blob.get("link"), str):
        raise PreloadError(f"{method} answered a workflow without an id or a content blob link")
    return str(data["id"]), blob


def upload(client: SeekClient, link: str, crate: bytes) -> None:
    """The second step: the crate's bytes to the content blob (SEEK answers the size)."""
    client.request(
        "PUT",
        client.follow(link),
        crate,
        {"Content-Type": "application/octet-stream", "Accept": "application/json"},
    )


def ensure_workflow(
    client: SeekClient,
    workflow: DemoWorkflow,
    crate: bytes,
    project: str,
    existing: dict[str, str],
) -> tuple[str, str]:
    """Create `workflow` unless its title exists: ("created" | "kept" | "resumed", id)."""
    if workflow.title in existing:
        identifier = existing[workflow.title]
        doc = client.json("GET", client.url(f"/workflows/{identifier}"))
        _, blob = _content_blob(doc, f"GET /workflows/{identifier}")
        # A blob created by POST whose PUT never came: no size, no checksum, no remote URL.
        if blob.get("size") is None and not blob.get("md5sum") and not blob.get("url"):
            upload(client, blob["link"], crate)
            return "resumed", identifier
        return "kept", identifier
    doc = client.json("POST", client.url("/workflows"), workflow_post_body(workflow, project))
    identifier, blob = _content_blob(doc, "POST /workflows")
    upload(client, blob["link"], crate)
    return "created", identifier


def preload(
    client: SeekClient,
    project: str,
    jenkins_url: str,
    workflows: tuple[DemoWorkflow, ...] = DEMO_WORKFLOWS,
) -> list[tuple[str, str, DemoWorkflow]]:
    """Create the missing workflows, printing one line each: [(outcome, id, workflow)]."""
    existing = existing_workflows(client)
    done = []
    for workflow in workflows:
        outcome, identifier = ensure_workflow(
            client, workflow, build_crate(workflow, jenkins_url), project, existing
        )
        print(
            f"{outcome} workflow {identifier} {workflow.title!r}: "
            f"{client.url(f'/workflows/{identifier}')}",
            flush=True,
        )
        done.append((outcome, identifier, workflow))
    return done


def _http_url(parser: argparse.ArgumentParser, option: str, value: str | None) -> str:
    parts = urlsplit(value or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        parser.error(f"{option} must be an http(s) URL, not {value!r}")
    return value or ""


def main(argv: list[str] | None = None) -> int:
    env = {k: v for k, v in os.environ.items() if k.startswith("SEEK_") and v}
    parser = argparse.ArgumentParser(
        prog="python -m infra.seek_preload",
        description="Create LifeMonitor's demo workflows (Workflow Testing RO-Crates tested by "
        "the local Jenkins) in a WorkflowHub, through its JSON API. Idempotent.",
        epilog="Prefer the environment for secrets: command lines are visible to other users.",
    )
    parser.add_argument(
        "--url", default=env.get("SEEK_URL"), help="WorkflowHub base URL [SEEK_URL]"
    )
    parser.add_argument("--user", default=env.get("SEEK_USER"), help="login [SEEK_USER]")
    parser.add_argument("--password", default=env.get("SEEK_PASSWORD"), help="[SEEK_PASSWORD]")
    parser.add_argument(
        "--token",
        default=env.get("SEEK_TOKEN"),
        help="API token, instead of a password [SEEK_TOKEN]",
    )
    parser.add_argument(
        "--project",
        default=env.get("SEEK_PROJECT"),
        help="id of a project the account is in [SEEK_PROJECT]",
    )
    parser.add_argument(
        "--jenkins-url",
        default=DEFAULT_JENKINS_URL,
        help="Jenkins as LifeMonitor reaches it: the test instances' url "
        f"(default {DEFAULT_JENKINS_URL})",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to SECONDS for the server to answer GET /workflows.json (default 0: no wait)",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="per request (default 60)"
    )
    args = parser.parse_args(argv)

    url = _http_url(parser, "--url", args.url)
    jenkins_url = _http_url(parser, "--jenkins-url", args.jenkins_url).rstrip("/") + "/"
    if not args.project:
        parser.error("--project (or SEEK_PROJECT) is required: the id of a project of the account")
    if args.token and (args.user or args.password):
        parser.error("give --token or --user/--password, not both")
    if args.token:
        authorization = f"Token {args.token}"
    elif args.user and args.password:
        pair = f"{args.user}:{args.password}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode()
    else:
        parser.error(
            "credentials are required: --token, or --user and --password "
            "(SEEK_TOKEN, or SEEK_USER and SEEK_PASSWORD)"
        )
    if args.wait < 0 or args.timeout <= 0:
        parser.error("--wait must be >= 0 and --timeout > 0")

    client = SeekClient(url, authorization, timeout=args.timeout)
    try:
        if args.wait:
            wait_for(client, args.wait)
        preload(client, str(args.project), jenkins_url)
    except PreloadError as exc:
        hint = ""
        if isinstance(exc, HttpError) and exc.status == 401:
            hint = " (check SEEK_USER/SEEK_PASSWORD or SEEK_TOKEN)"
        elif isinstance(exc, HttpError) and (exc.method, exc.status) == ("POST", 403):
            hint = f" (is the account a member of project {args.project}?)"
        print(f"error: {exc}{hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
