"""A few lines of `requests` shared by the examples: the base URL, tokens and calls.

Every example reads the stack's address from the environment (``source .stack/stack/env``
after `make start` sets ``LM_URL`` and ``SEEK_URL``) or from its options."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import requests

DEFAULT_URL = "http://127.0.0.1:8000"


def base_url(url: str | None = None) -> str:
    return (url or os.environ.get("LM_URL") or DEFAULT_URL).rstrip("/")


class LifeMonitor:
    """Calls one LifeMonitor with a Bearer token or an API key."""

    def __init__(
        self, url: str | None = None, *, token: str | None = None, api_key: str | None = None
    ):
        self.url = base_url(url)
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        if api_key:
            self.session.headers["ApiKey"] = api_key

    def call(
        self, method: str, path: str, *, expect: tuple[int, ...] = (200, 201, 204), **kw
    ) -> Any:
        response = self.session.request(method, self.url + path, timeout=30, **kw)
        if response.status_code not in expect:
            detail = response.text[:500]
            sys.exit(f"{method} {path}: {response.status_code} {detail}")
        if not response.content:
            return None
        return response.json()

    def get(self, path: str, **kw) -> Any:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any, **kw) -> Any:
        return self.call("POST", path, json=body, **kw)


def client_credentials_token(
    client_id: str, client_secret: str, scopes: list[str], url: str | None = None
) -> str:
    """What WorkflowHub does: a token for the registry's own OAuth2 client."""
    response = requests.post(
        base_url(url) + "/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
            "scope": " ".join(scopes),
        },
        timeout=30,
    )
    if response.status_code != 200:
        sys.exit(f"token: {response.status_code} {response.text[:300]}")
    return response.json()["access_token"]


def show(title: str, value: Any) -> None:
    print(f"# {title}")
    print(json.dumps(value, indent=2, sort_keys=True))
