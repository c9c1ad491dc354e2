"""`chalice local` with the API Gateway responses our stack configures.

Deployed, API Gateway answers a path no route matches itself (403 "Missing Authentication
Token"); `infra/cfn/chalice-merge.yaml` turns that into a problem+json 404. `chalice local`
and `chalice.test.Client` emulate the gateway without those GatewayResponses, so this
module patches their emulation to answer the same way. Used by `make run` and the tests.

    python -m infra.local [--host 127.0.0.1] [--port 8000] [--stage dev] [--no-autoreload]
"""

from __future__ import annotations

import json
import sys

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

            problem = dict(NOT_FOUND_BODY, detail=f"No route for {method} {path.split('?')[0]}",
                           instance=get_settings().external_server_url + path)
            raise RouteNotFound(
                {"Content-Type": "application/problem+json", "X-Request-Id": str(uuid.uuid4()),
                 "Access-Control-Allow-Origin": "*"},
                json.dumps(problem).encode(),
            ) from None

    local.LocalGateway.handle_request = handle_request
    local.LocalGateway._lm_patched = True


def main(argv: list[str] | None = None) -> int:
    from chalice.cli import cli

    args = list(sys.argv[1:] if argv is None else argv)
    install_gateway_responses()
    # The autoreloader re-runs sys.argv in a child process: make that re-run this module.
    sys.argv = [sys.executable, "-m", "infra.local", *args]
    return cli.main(args=["local", *args], obj={}, prog_name="chalice", standalone_mode=True)


if __name__ == "__main__":
    sys.exit(main())
