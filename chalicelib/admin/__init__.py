"""Administration commands: one dispatcher behind two doors.

* locally: ``python -m chalicelib.admin registry add …``
* deployed: ``make admin STAGE=prod ARGS="registry list"`` (infra/remote_admin.py:
  ``aws lambda invoke --function-name lifemonitor-<stage>-admin`` with the payload
  ``{"args": ["registry", "list"]}``, or ``chalice invoke -n admin`` for stages deployed
  with ``chalice deploy``); the payload may carry a ``"stdin"`` string for
  ``--password-stdin`` / ``--passphrase-stdin``. A CloudFormation custom-resource event
  runs the deploy's migration instead (admin/cfn.py).

Every command has ``--help`` and ``--json`` (machine-readable output on stdout), and exits
non-zero with a one-line reason on bad input. Exit codes: 0 ok, 1 the command failed
(not found, conflict, database error), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chalicelib.admin import commands


@dataclass
class Result:
    exit_code: int
    stdout: str = ""
    stderr: str = ""
    data: Any = field(default=None)

    def as_dict(self) -> dict:
        out = {"exit_code": self.exit_code, "stdout": self.stdout, "stderr": self.stderr}
        if self.data is not None:
            out["result"] = self.data
        return out


class UsageError(Exception):
    def __init__(self, message: str, usage: str = "") -> None:
        super().__init__(message)
        self.usage = usage


class _HelpShown(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing and exiting (we may be in a Lambda)."""

    def error(self, message: str):
        raise UsageError(message, self.format_usage().strip())

    def exit(self, status: int = 0, message: str | None = None):
        if message:
            raise UsageError(message.strip(), self.format_usage().strip())
        raise _HelpShown(self.format_help())

    def print_help(self, file=None):
        raise _HelpShown(self.format_help())


def build_parser() -> argparse.ArgumentParser:
    # SUPPRESS: a subcommand's --json must not reset one given before it (the parsers share
    # this action object through `parents`, so no default may be set on it).
    common = _Parser(add_help=False)
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="machine-readable output on stdout",
    )
    parser = _Parser(
        prog="python -m chalicelib.admin",
        description="LifeMonitor administration commands.",
        parents=[common],
    )
    groups = parser.add_subparsers(dest="group", metavar="GROUP", parser_class=_Parser)
    groups.required = True
    for register in commands.REGISTRARS:
        register(groups, common)
    return parser


def run(argv: list[str], stdin: str | None = None) -> Result:
    """Run one command; never raises, never exits the process."""
    from chalicelib.admin.backup import BackupError
    from chalicelib.errors import LifeMonitorError
    from chalicelib.migrate import MigrationError
    from chalicelib.secrets import SecretError

    parser = build_parser()
    try:
        args = parser.parse_args([str(a) for a in argv])
        args.json = getattr(args, "json", False)  # absent unless given (SUPPRESS)
    except _HelpShown as shown:
        return Result(0, stdout=shown.text)
    except UsageError as exc:
        usage = f"{exc.usage}\n" if exc.usage else ""
        return Result(2, stderr=f"{usage}usage error: {exc}\n")
    handler: Callable[..., commands.Output] = args.handler
    try:
        output = handler(args, stdin)
    except LifeMonitorError as exc:
        return _fail(args, f"error: {exc.detail or exc.title}", 1)
    except (MigrationError, SecretError, BackupError) as exc:
        return _fail(args, f"error: {exc}", 1)
    except Exception as exc:  # database unreachable or not migrated, and the like
        from sqlalchemy.exc import SQLAlchemyError

        if not isinstance(exc, SQLAlchemyError):
            raise
        first = str(getattr(exc, "orig", exc)).strip().splitlines()[0][:300]
        hint = " (has the database been migrated? run `db upgrade`)"
        return _fail(args, f"error: database: {first}{hint}", 1)
    finally:
        from chalicelib.db import dispose_engines

        dispose_engines()
    if args.json:
        text = json.dumps(output.data, indent=2, sort_keys=True, default=str) + "\n"
    else:
        text = output.text if output.text.endswith("\n") else output.text + "\n"
    # A report that is also a failure (`oauth refresh-tokens` with a provider down): the
    # report on stdout, a non-zero exit and one line on stderr.
    code = getattr(output, "exit_code", 0)
    error = " ".join(getattr(output, "error", "").split())
    return Result(
        code, stdout=text, stderr=f"{error}\n" if code and error else "", data=output.data
    )


def _fail(args: argparse.Namespace, message: str, code: int) -> Result:
    line = " ".join(message.split())  # one line, whatever the cause said
    if getattr(args, "json", False):
        return Result(code, stdout=json.dumps({"error": line}) + "\n", stderr=line + "\n")
    return Result(code, stderr=line + "\n")


def handle_lambda_event(event: Any, context: Any = None) -> dict:
    """The `admin` Lambda: ``{"args": [...], "stdin": "..."}`` → result dict; a
    CloudFormation custom-resource event runs the deploy's migration (admin/cfn.py)."""
    from chalicelib.admin import cfn

    if cfn.is_cloudformation_event(event):
        return cfn.handle(event, context)
    if not isinstance(event, dict) or not isinstance(event.get("args"), list):
        return Result(
            2, stderr='usage error: payload must be {"args": ["group", "command", …]}\n'
        ).as_dict()
    stdin = event.get("stdin")
    if stdin is not None and not isinstance(stdin, str):
        return Result(2, stderr="usage error: 'stdin' must be a string\n").as_dict()
    return run(event["args"], stdin=stdin).as_dict()


def missing_dependency(module: str | None, python: str) -> str:
    return (
        f"error: {python} cannot import {module!r}: the admin commands need the project's "
        'dependencies; run them with .venv/bin/python -m chalicelib.admin (make admin ARGS="…"), '
        "after make install"
    )


#: Options that read a secret from standard input (a prompt on a terminal).
STDIN_FLAGS = {"--password-stdin": "Password", "--passphrase-stdin": "Passphrase"}


def main(argv: list[str] | None = None) -> int:
    import sys

    stdin = None
    args = sys.argv[1:] if argv is None else argv
    wanted = [flag for flag in STDIN_FLAGS if flag in args]
    if wanted and not sys.stdin.isatty():
        stdin = sys.stdin.read()
    elif wanted:
        import getpass

        stdin = getpass.getpass(f"{STDIN_FLAGS[wanted[0]]}: ")
    try:
        result = run(args, stdin=stdin)
    except ModuleNotFoundError as exc:
        # Run by an interpreter without our dependencies (outside the venv): say so in one
        # line instead of a traceback. Our own modules missing is a bug: let it show.
        if (exc.name or "").split(".")[0] in {"chalicelib", "app", "infra", ""}:
            raise
        sys.stderr.write(missing_dependency(exc.name, sys.executable) + "\n")
        return 1
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.exit_code


__all__ = ["Result", "build_parser", "handle_lambda_event", "main", "run"]
