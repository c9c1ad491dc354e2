"""List and submit a registry's workflows, as WorkflowHub does
(LifeMonitor's `4_WorkflowRegistryWorkflows` notebook).

    python examples/registry_workflows.py --credentials registry.json [--identifier 21 --version 1]

Gets a client-credentials token, submits WorkflowHub workflow IDENTIFIER at VERSION
(LifeMonitor fetches its RO-Crate from the registry), then lists the registry's workflows
with their status — the daily sweep WorkflowHub makes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lmclient import LifeMonitor, client_credentials_token, show


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--credentials", type=Path, required=True, help="from register_registry.py")
    parser.add_argument("--identifier", default="21")
    parser.add_argument("--version", default="1")
    args = parser.parse_args()
    creds = json.loads(args.credentials.read_text())
    token = client_credentials_token(
        creds["client_id"],
        creds["client_secret"],
        ["registry.info", "registry.workflow.read", "registry.workflow.write", "workflow.read"],
    )
    lm = LifeMonitor(token=token)

    registered = lm.post(
        "/registries/current/workflows",
        {"identifier": args.identifier, "version": args.version},
        expect=(201, 409),
    )
    show(f"POST /registries/current/workflows (identifier {args.identifier})", registered)
    listing = lm.get("/registries/current/workflows?status=true&versions=true")
    show(
        "GET /registries/current/workflows?status=true&versions=true",
        [
            {
                "uuid": w["uuid"],
                "name": w.get("name"),
                "versions": {
                    v["version"]: (v.get("status") or {}).get("aggregate_test_status")
                    for v in w.get("versions", [])
                },
            }
            for w in listing["items"]
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
