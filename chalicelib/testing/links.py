"""Human links to a test instance's page on its CI (the API's `links.origin`), pure."""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import urlsplit

_GITHUB = re.compile(r"(?:https?://[^/]+/)?repos/([^/]+)/([^/]+)/actions/workflows/([^/?#]+)")


# Pure, and asked for again by every list naming the instance: remembered per container.
@lru_cache(maxsize=65536)
def instance_link(service_type: str, service_url: str, resource: str) -> str | None:
    base = (service_url or "").rstrip("/")
    resource = (resource or "").strip()
    if service_type == "jenkins":
        from chalicelib.testing import CIError
        from chalicelib.testing.jenkins import parse_job_path

        try:
            return f"{base}/{parse_job_path(resource, base)}/" if base else None
        except CIError:
            return None
    if service_type == "github":
        m = _GITHUB.search(resource)
        if not m:
            return None
        host = urlsplit(base).hostname or "github.com"
        site = (
            "https://github.com"
            if host in {"api.github.com", "github.com"}
            else (f"{urlsplit(base).scheme}://{host}")
        )
        return f"{site}/{m.group(1)}/{m.group(2)}/actions/workflows/{m.group(3)}"
    if service_type == "travis":
        slug = re.sub(r"^(github/|repo/)", "", resource.strip("/"))
        slug = re.sub(r"/builds$", "", slug)
        site = base.replace("://api.", "://")
        return f"{site}/{slug}/builds" if site else None
    if service_type == "gitlab":
        path = re.sub(r"^projects/", "", resource.strip("/"))
        path = re.sub(r"(/-)?/pipelines$", "", path)
        return f"{base}/{path}/-/pipelines" if base else None
    return None
