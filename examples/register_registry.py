"""Register a WorkflowHub with LifeMonitor and get the registry's token
(LifeMonitor's `1_WorkflowRegistrySetup` and `2_WorkflowRegistryAuthorize` notebooks).

    python examples/register_registry.py [--name seek] [--seek-url URL] [--save registry.json]

Runs `python -m chalicelib.admin registry add` (or `registry show` when the registry exists)
with this interpreter and the current environment — after `make start`, `source
.stack/stack/env` first — then asks `/oauth2/token` for a client-credentials token, as
WorkflowHub does. `--save` writes the client's id and secret for the other examples."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from lmclient import LifeMonitor, client_credentials_token, show

ROOT = Path(__file__).resolve().parent.parent
#: What WorkflowHub asks for (its `life_monitor` client).
REGISTRY_SCOPES = [
    "registry.info",
    "registry.user",
    "registry.workflow.read",
    "registry.workflow.write",
    "registry.user.workflow.read",
    "registry.user.workflow.write",
    "workflow.read",
    "workflow.write",
]


def admin(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603 - our own admin command
        [sys.executable, "-m", "chalicelib.admin", *args, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", default="seek")
    parser.add_argument("--seek-url", default=os.environ.get("SEEK_URL", "https://seek:3000"))
    parser.add_argument("--seek-client-id", default="seek-oauth-app-id")
    parser.add_argument("--seek-client-secret", default="seek-oauth-app-secret")
    parser.add_argument("--save", type=Path)
    args = parser.parse_args()

    done = admin("registry", "show", args.name)
    if done.returncode != 0:
        done = admin(
            "registry", "add", args.name, "seek", args.seek_client_id, args.seek_client_secret,
            args.seek_url, "--redirect-uris", args.seek_url,
        )  # fmt: skip
    if done.returncode != 0:
        sys.exit(done.stderr.strip() or done.stdout.strip())
    registry = json.loads(done.stdout)
    show("our OAuth2 client for the registry (configure these on WorkflowHub)", {
        k: registry.get(k) for k in ("client_id", "scopes", "token_url", "authorize_url")
    })  # fmt: skip

    token = client_credentials_token(
        registry["client_id"], registry["client_secret"], REGISTRY_SCOPES
    )
    lm = LifeMonitor(token=token)
    show("GET /registries/current", lm.get("/registries/current"))
    if args.save:
        args.save.write_text(
            json.dumps(
                {"client_id": registry["client_id"], "client_secret": registry["client_secret"]}
            )
        )
        args.save.chmod(0o600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
