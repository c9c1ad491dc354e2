"""Act for a registry user (LifeMonitor's `3_WorkflowRegistryUsers` notebook): list the
registry's users and read and submit workflows on behalf of one of them.

    python examples/registry_users.py --credentials registry.json [--person 2 --identifier 25]

A registry user is someone who has logged in to LifeMonitor through that WorkflowHub; they
are named by their WorkflowHub person id. Without such a user the example lists none and
shows the 401 LifeMonitor answers for a person nobody linked."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lmclient import LifeMonitor, client_credentials_token, show


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--credentials", type=Path, required=True, help="from register_registry.py")
    parser.add_argument("--person", default="2", help="the user's WorkflowHub person id")
    parser.add_argument("--identifier", default="25", help="a workflow to submit for them")
    parser.add_argument("--version", default="1")
    args = parser.parse_args()
    creds = json.loads(args.credentials.read_text())
    token = client_credentials_token(
        creds["client_id"],
        creds["client_secret"],
        ["registry.user", "registry.user.workflow.read", "registry.user.workflow.write"],
    )
    lm = LifeMonitor(token=token)

    users = lm.get("/registries/current/users")["items"]
    show("GET /registries/current/users", users)
    path = f"/users/{args.person}/workflows"
    if not users:
        answer = lm.get(path, expect=(401,))
        show(f"GET {path} (nobody linked to person {args.person})", answer)
        return 0
    registered = lm.post(
        path, {"identifier": args.identifier, "version": args.version}, expect=(201, 409)
    )
    show(f"POST {path}", registered)
    listing = lm.get(path + "?status=true")
    show(
        f"GET {path}?status=true",
        [{"uuid": w["uuid"], "name": w.get("name")} for w in listing["items"]],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
