"""Read a workflow's status, its suites, instances and builds (LifeMonitor's
`LifeMonitorAPI` notebook; `get_workflow.py`).

    python examples/statuses_and_builds.py WORKFLOW_UUID [--api-key KEY | --credentials F]
        [--wait SECONDS]

Public workflows need no credentials; others take a user's `--api-key` or, for a registry's
workflows, the registry client's `--credentials` (from register_registry.py). `--wait`
polls until the status is no longer `not_available` (the refresh fetches the builds in the
background: the `refresh` schedule and the SQS worker, or the local runner of `make start`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from lmclient import LifeMonitor, client_credentials_token, show


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workflow_uuid")
    parser.add_argument("--api-key", default=os.environ.get("LM_API_KEY"))
    parser.add_argument("--credentials", type=Path, help="a registry client's id and secret")
    parser.add_argument("--wait", type=float, default=0, help="seconds to wait for a status")
    args = parser.parse_args()
    token = None
    if args.credentials:
        creds = json.loads(args.credentials.read_text())
        token = client_credentials_token(
            creds["client_id"], creds["client_secret"], ["workflow.read"]
        )
    lm = LifeMonitor(api_key=args.api_key, token=token)
    path = f"/workflows/{args.workflow_uuid}"

    deadline = time.monotonic() + args.wait
    status = lm.get(path + "/status")
    while status["aggregate_test_status"] == "not_available" and time.monotonic() < deadline:
        time.sleep(1)
        status = lm.get(path + "/status")
    show(f"GET {path}/status", {k: status.get(k) for k in ("aggregate_test_status", "version")})

    suites = lm.get(path + "/suites?status=true&latest_builds=true")["items"]
    for suite in suites:
        show(f"suite {suite['uuid']}", {"name": suite.get("name"), "status": suite.get("status")})
        for instance in lm.get(f"/suites/{suite['uuid']}/instances")["items"]:
            builds = lm.get(f"/instances/{instance['uuid']}/latest-builds?limit=5")["items"]
            show(
                f"instance {instance['uuid']} ({instance.get('name')})",
                [
                    {k: b.get(k) for k in ("build_id", "status", "timestamp", "duration")}
                    for b in builds
                ],
            )
            if builds:
                one = lm.get(f"/instances/{instance['uuid']}/builds/{builds[0]['build_id']}")
                show("latest build", one)
    return 0 if status["aggregate_test_status"] != "not_available" or not args.wait else 1


if __name__ == "__main__":
    sys.exit(main())
