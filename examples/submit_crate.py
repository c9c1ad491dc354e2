"""Submit a Workflow Testing RO-Crate as a user with an API key (LifeMonitor's
`SubmitPublicWorkflow` and `LifeMonitorAPI` notebooks).

    python examples/submit_crate.py --api-key KEY [--roc-link URL | --crate FILE] [--name N]

The key is created by an administrator (`python -m chalicelib.admin api-key create USER`)
or by the user on `/account/profile` (API keys tab), and sent as the `ApiKey` header.
LifeMonitor downloads the crate from `--roc-link` (default: WorkflowHub workflow 21's crate)
or takes `--crate` inline (base64)."""

from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path

from lmclient import LifeMonitor, show


def main() -> int:
    seek = os.environ.get("SEEK_URL", "https://seek:3000")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--api-key", default=os.environ.get("LM_API_KEY"))
    parser.add_argument("--roc-link", default=f"{seek}/workflows/21/ro_crate?version=1")
    parser.add_argument("--crate", type=Path, help="a crate zip to send inline instead")
    parser.add_argument("--name", default="sort-and-change-case (submitted by a user)")
    parser.add_argument("--version", default="1")
    args = parser.parse_args()
    if not args.api_key:
        parser.error("--api-key (or LM_API_KEY) is required")
    lm = LifeMonitor(api_key=args.api_key)

    show("GET /users/current", lm.get("/users/current"))
    body = {"version": args.version, "name": args.name, "public": True}
    if args.crate:
        body["rocrate"] = base64.b64encode(args.crate.read_bytes()).decode()
    else:
        body["roc_link"] = args.roc_link
    registered = lm.post("/users/current/workflows", body, expect=(201,))
    show("POST /users/current/workflows", registered)
    mine = lm.get("/users/current/workflows?status=true")
    show(
        "GET /users/current/workflows",
        [{"uuid": w["uuid"], "name": w.get("name")} for w in mine["items"]],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
