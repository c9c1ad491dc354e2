"""`chalice local` with the API Gateway responses our stack configures.

Deployed, API Gateway answers a path no route matches itself (403 "Missing Authentication
Token"); `infra/cfn/chalice-merge.yaml` turns that into a problem+json 404. `chalice local`
and `chalice.test.Client` emulate the gateway without those GatewayResponses, so this
module patches their emulation to answer the same way. Used by `make run` and the tests.

    python -m infra.local [--host 127.0.0.1] [--port 8000] [--stage dev] [--no-autoreload]

It also runs the status refresh in-process (the embedded default has no schedule and no
queue): a daemon thread calls `dispatch_due()` every ``LM_LOCAL_REFRESH_INTERVAL`` seconds
(default 60; 0 disables it), in the serving process only.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("lifemonitor.local")

NOT_FOUND_BODY = {
    "type": "about:blank",
    "title": "Resource not found",
    "status": 404,
    "detail": "No such route",
    "instance": None,
    "extra_info": {},
}


def install_gateway_responses() -> None:
    """Make the local gateway answer unknown routes as the deployed one does. Idempotent."""
    from chalice import local

    if getattr(local.LocalGateway, "_lm_patched", False):
        return

    class RouteNotFound(local.LocalGatewayException):
        CODE = 404

    original = local.LocalGateway.handle_request

    def handle_request(self, method, path, headers, body):
        try:
            return original(self, method, path, headers, body)
        except local.ForbiddenError as exc:
            # Only the "no route matched" case; real authorizer denials pass through.
            if b"Missing Authentication Token" not in (exc.body or b"") and b"Credential" not in (
                exc.body or b""
            ):
                raise
            import uuid

            from chalicelib.config import get_settings

            problem = dict(
                NOT_FOUND_BODY,
                detail=f"No route for {method} {path.split('?')[0]}",
                instance=get_settings().external_server_url + path,
            )
            raise RouteNotFound(
                {
                    "Content-Type": "application/problem+json",
                    "X-Request-Id": str(uuid.uuid4()),
                    "Access-Control-Allow-Origin": "*",
                },
                json.dumps(problem).encode(),
            ) from None

    local.LocalGateway.handle_request = handle_request
    local.LocalGateway._lm_patched = True


class RefreshTimer(threading.Thread):
    """Calls `dispatch` (the refresh's `dispatch_due`) now and then every `interval`
    seconds until stopped. A daemon: it never keeps the server from exiting. A failing
    refresh (database down, not migrated, a bug) is logged and tried again next time."""

    def __init__(self, interval: float, dispatch: Callable[[], Any] | None = None) -> None:
        super().__init__(name="lm-refresh-timer", daemon=True)
        self.interval = interval
        self.dispatch = dispatch or _dispatch_due
        self.runs = 0
        self.failures = 0
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                summary = self.dispatch()
                if isinstance(summary, dict) and summary.get("claimed"):
                    log.info("local refresh: %s", summary)
            except Exception:
                self.failures += 1
                log.exception("local refresh failed; trying again in %s s", self.interval)
            self.runs += 1
            if self._stopping.wait(self.interval):
                break

    def stop(self, timeout: float | None = None) -> None:
        self._stopping.set()
        self.join(timeout)


def _dispatch_due() -> Any:
    from chalicelib.jobs import notify, refresh

    summary = refresh.dispatch_due()
    notify.local_tick()  # the `notify` and `housekeeping` schedules of the deployed stack
    return summary


def start_refresh_timer(
    interval: float | None = None, dispatch: Callable[[], Any] | None = None
) -> RefreshTimer | None:
    """Start the in-process refresh; None when disabled (interval 0) or misconfigured."""
    if interval is None:
        from chalicelib.jobs import refresh

        try:
            interval = refresh.local_refresh_interval()
        except ValueError as exc:  # ConfigError: say so, serve anyway
            log.error("local refresh disabled: %s", exc)
            return None
    if interval <= 0:
        log.info("local refresh disabled (LM_LOCAL_REFRESH_INTERVAL=0)")
        return None
    timer = RefreshTimer(interval, dispatch)
    timer.start()
    return timer


def serving_process(args: list[str]) -> bool:
    """Whether this process will serve requests. Without `--no-autoreload`, chalice local's
    reloader re-runs this module: the parent only watches files and restarts the child,
    which serves and has ``CHALICE_WORKER`` set. Help output serves nothing."""
    if any(a in ("-h", "--help") for a in args):
        return False
    return "--no-autoreload" in args or bool(os.environ.get("CHALICE_WORKER"))


def main(argv: list[str] | None = None) -> int:
    from chalice.cli import cli

    args = list(sys.argv[1:] if argv is None else argv)
    install_gateway_responses()
    if serving_process(args):
        start_refresh_timer()
    # The autoreloader re-runs sys.argv in a child process: make that re-run this module.
    sys.argv = [sys.executable, "-m", "infra.local", *args]
    return cli.main(args=["local", *args], obj={}, prog_name="chalice", standalone_mode=True)


if __name__ == "__main__":
    sys.exit(main())
