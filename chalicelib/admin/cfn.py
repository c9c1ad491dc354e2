"""The `admin` Lambda as a CloudFormation custom resource: the schema migration of a deploy.

The application stack (infra/cfn/chalice-merge.yaml) declares ``Migrate``, a
``Custom::LifeMonitorSchema`` whose service token is the admin function; the API handler,
the worker and the refresh function depend on it. CloudFormation therefore updates the
admin function's code first, sends it this event, and shifts traffic to the new code only
after the migration succeeded; a failed migration fails the stack update, which rolls back
with the old code still serving.

* Create / Update: ``db upgrade`` to the head of the migrations in this package. When the
  database is already at a revision this code does not know (a rollback re-sending the old
  properties after a newer schema was applied), nothing is done: migrations are written
  expand-then-contract, so the old code runs on the newer schema.
* Delete: nothing. Deleting the stack never drops or downgrades the data.

The answer is a PUT of the result to the pre-signed ``ResponseURL`` (no credentials, no
redirects followed).
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger(__name__)

PHYSICAL_ID = "lifemonitor-schema"
_REQUIRED = ("RequestType", "ResponseURL", "StackId", "RequestId", "LogicalResourceId")


def is_cloudformation_event(event: Any) -> bool:
    return isinstance(event, dict) and all(k in event for k in _REQUIRED)


def _migrate() -> tuple[str, str, dict]:
    from chalicelib import migrate
    from chalicelib.admin import run

    current = migrate.current()
    if current is not None and not migrate.known_revision(current):
        return (
            "SUCCESS",
            f"database at {current}, newer than this code's migrations: nothing to do",
            {"Revision": current},
        )
    result = run(["db", "upgrade"])
    if result.exit_code != 0:
        return "FAILED", result.stderr.strip() or f"db upgrade exited {result.exit_code}", {}
    revision = migrate.current() or ""
    return "SUCCESS", result.stdout.strip(), {"Revision": revision}


def handle(event: dict, context: Any = None) -> dict:
    """Run the request and answer CloudFormation; returns the response it sent."""
    kind = event["RequestType"]
    try:
        if kind in ("Create", "Update"):
            status, reason, data = _migrate()
        else:
            status, reason, data = "SUCCESS", "schema kept: the stack never drops data", {}
    except Exception as exc:  # any failure must still be reported, or CloudFormation waits
        log.exception("schema migration failed")
        status, reason, data = "FAILED", " ".join(f"{type(exc).__name__}: {exc}".split()), {}
    stream = getattr(context, "log_stream_name", None)
    if status == "FAILED" and stream:
        reason = f"{reason} (log stream {stream})"
    response = {
        "Status": status,
        "Reason": reason[:3000],  # the whole response must stay under 4 KB
        "PhysicalResourceId": event.get("PhysicalResourceId") or PHYSICAL_ID,
        "StackId": event["StackId"],
        "RequestId": event["RequestId"],
        "LogicalResourceId": event["LogicalResourceId"],
        "NoEcho": False,
        "Data": data,
    }
    _send(event["ResponseURL"], response)
    return response


def _send(url: str, response: dict) -> None:
    import requests

    body = json.dumps(response).encode()
    # The URL is pre-signed for a PUT with an empty content type.
    r = requests.put(
        url, data=body, headers={"Content-Type": ""}, timeout=30, allow_redirects=False
    )
    if r.status_code >= 300:
        log.error("CloudFormation response rejected: HTTP %s", r.status_code)
        r.raise_for_status()
