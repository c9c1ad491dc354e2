"""Invoke a Lambda handler of app.py locally, exactly as Lambda calls it: the function's
handler object with a JSON event and a Lambda context; prints the JSON result the way
`aws lambda invoke` writes it, and exits with the admin command's exit code.

    python -m infra.invoke admin '{"args": ["db", "current"]}'
    echo '{"args": ["registry", "list", "--json"]}' | python -m infra.invoke admin -

The stage's `environment_variables` of .chalice/config.json are applied (what the
deployed function gets), without overriding variables already set in the environment;
DATABASE_URL, LM_DATA_DIR and the secrets backend are the caller's, as for
`python -m chalicelib.admin`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class LambdaContext:
    """The attributes and method of Lambda's Python context object."""

    def __init__(self, function_name: str, memory_mb: int, timeout_s: int) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{function_name}"
        self.memory_limit_in_mb = str(memory_mb)
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"local/{self.aws_request_id}"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def chalice_settings(stage: str, function: str) -> tuple[dict[str, str], int, int]:
    """(environment, memory MB, timeout s) of a function in a stage, as Chalice merges them:
    top level, then the stage, then the function's own settings within the stage."""
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    if stage not in config.get("stages", {}):
        raise SystemExit(f"invoke: stage {stage!r} is not in .chalice/config.json")
    stage_cfg = config["stages"][stage]
    layers = [
        config,
        config.get("lambda_functions", {}).get(function, {}),
        stage_cfg,
        stage_cfg.get("lambda_functions", {}).get(function, {}),
    ]
    env: dict[str, str] = {}
    memory, timeout = 128, 60
    for layer in layers:
        env.update(layer.get("environment_variables", {}))
        memory = layer.get("lambda_memory_size", memory)
        timeout = layer.get("lambda_timeout", timeout)
    return env, memory, timeout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.invoke", description=__doc__.split("\n")[0]
    )
    parser.add_argument("function", help="the Chalice function name, e.g. admin")
    parser.add_argument("payload", help="the JSON event, or - to read it from standard input")
    parser.add_argument("--stage", default=os.environ.get("LM_STAGE") or "dev")
    args = parser.parse_args(argv)
    text = sys.stdin.read() if args.payload == "-" else args.payload
    try:
        event = json.loads(text)
    except ValueError as exc:
        print(f"invoke: the payload is not JSON: {exc}", file=sys.stderr)
        return 2
    env, memory, timeout = chalice_settings(args.stage, args.function)
    for name, value in env.items():
        os.environ.setdefault(name, value)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import app as app_module

    handler = getattr(app_module, args.function, None)
    if handler is None or not callable(handler):
        print(f"invoke: app.py has no function {args.function!r}", file=sys.stderr)
        return 2
    context = LambdaContext(f"lifemonitor-{args.stage}-{args.function}", memory, timeout)
    result = handler(event, context)
    sys.stdout.write(json.dumps(result) + "\n")
    if isinstance(result, dict) and isinstance(result.get("exit_code"), int):
        return result["exit_code"]
    return 0


if __name__ == "__main__":
    sys.exit(main())
