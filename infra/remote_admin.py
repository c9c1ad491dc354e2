"""Run an admin command on a deployed stage: `make admin STAGE=prod ARGS="registry list"`.

* a stage deployed by CloudFormation (infra/, `make deploy`): `aws lambda invoke` of
  `lifemonitor-<stage>-admin`;
* a stage deployed with `chalice deploy` (it has `.chalice/deployed/<stage>.json`):
  `chalice invoke -n admin --stage <stage>`.

The payload is ``{"args": [...]}`` (plus ``"stdin"`` for ``--password-stdin`` /
``--passphrase-stdin``, read from standard input here). It travels in a 0600 temporary
file, never on a command line. The command's stdout and stderr are printed and its exit
code is ours. `AWS` and `CHALICE` name other executables (tests put recorders there).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STDIN_FLAGS = ("--password-stdin", "--passphrase-stdin")
READ_TIMEOUT = 310  # the admin function's timeout (300 s) plus a margin


def function_name(stage: str) -> str:
    return f"lifemonitor-{stage}-admin"


def payload_for(args: list[str], stdin: str | None) -> dict:
    payload: dict = {"args": list(args)}
    if stdin is not None:
        payload["stdin"] = stdin
    return payload


def aws_command(aws: str, stage: str, payload_file: Path, out_file: Path) -> list[str]:
    return [
        aws,
        "lambda",
        "invoke",
        "--function-name",
        function_name(stage),
        "--cli-read-timeout",
        str(READ_TIMEOUT),
        "--payload",
        f"fileb://{payload_file}",
        str(out_file),
    ]


def chalice_command(chalice: str, stage: str) -> list[str]:
    return [chalice, "invoke", "-n", "admin", "--stage", stage]


def deployed_by_chalice(stage: str, project: Path = ROOT) -> bool:
    return (project / ".chalice" / "deployed" / f"{stage}.json").is_file()


def print_result(raw: str) -> int:
    try:
        result = json.loads(raw)
    except ValueError:
        sys.stderr.write(f"admin: the function answered something else than JSON:\n{raw}\n")
        return 1
    if not isinstance(result, dict) or "exit_code" not in result:
        # A crashed function: Lambda's {"errorMessage": ..., "errorType": ...}.
        sys.stderr.write(f"admin: the function failed: {json.dumps(result)}\n")
        return 1
    sys.stdout.write(result.get("stdout", ""))
    sys.stderr.write(result.get("stderr", ""))
    return int(result["exit_code"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.remote_admin", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--stage", required=True)
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the admin command")
    ns = parser.parse_args(argv)
    if not re.fullmatch(r"[a-z][a-z0-9]{0,9}", ns.stage):
        print(f"admin: invalid stage name {ns.stage!r}", file=sys.stderr)
        return 2
    args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
    if not args:
        print('admin: no command (make admin STAGE=... ARGS="registry list")', file=sys.stderr)
        return 2
    stdin = sys.stdin.read() if any(f in args for f in STDIN_FLAGS) else None
    payload = json.dumps(payload_for(args, stdin)).encode()

    if deployed_by_chalice(ns.stage):
        cmd = chalice_command(os.environ.get("CHALICE", "chalice"), ns.stage)
        print("+ " + " ".join(cmd), file=sys.stderr)
        proc = subprocess.run(cmd, input=payload, capture_output=True, cwd=ROOT, check=False)  # noqa: S603
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr.decode(errors="replace"))
            return proc.returncode or 1
        return print_result(proc.stdout.decode(errors="replace"))

    with tempfile.TemporaryDirectory(
        prefix="lm-admin-"
    ) as tmp:  # 0700: the payload may hold a password
        payload_file, out_file = Path(tmp) / "payload.json", Path(tmp) / "response.json"
        payload_file.write_bytes(payload)
        cmd = aws_command(os.environ.get("AWS", "aws"), ns.stage, payload_file, out_file)
        print("+ " + " ".join(cmd), file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        try:
            meta = json.loads(proc.stdout or "{}")
        except ValueError:
            meta = {}
        raw = out_file.read_text() if out_file.exists() else ""
        if meta.get("FunctionError"):
            sys.stderr.write(f"admin: the function failed ({meta['FunctionError']}): {raw}\n")
            return 1
        return print_result(raw)


if __name__ == "__main__":
    sys.exit(main())
