"""Deploy or upgrade a stage on AWS with CloudFormation: `make deploy STAGE=prod ARTIFACTS=bucket`.

1. ``infra/package.sh STAGE OUT`` (chalice package + merge template, cfn-lint, zip check);
2. ``aws cloudformation package`` uploads deployment.zip to the ARTIFACTS bucket;
3. ``aws cloudformation deploy`` of ``lifemonitor-STAGE``. Inside that one stack update the
   admin function is updated first and runs ``db upgrade`` as the ``Migrate`` custom
   resource; the API handler, worker and refresh functions depend on it, so traffic shifts
   to the new code only after the migration succeeded (a failure rolls the stack back,
   the old code still serving);
4. ``aws cloudformation describe-stacks`` prints the endpoint, and ``db current`` is run
   through the admin function as a check.

`--stateful` deploys ``lifemonitor-STAGE-stateful`` (infra/cfn/stateful.yaml) instead.
`AWS` names another `aws` executable (tests put a recorder there). Nothing here is run by
the test suite against AWS: tests check the commands it builds.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stack_name(stage: str, stateful: bool = False) -> str:
    return f"lifemonitor-{stage}-stateful" if stateful else f"lifemonitor-{stage}"


def package_commands(aws: str, stage: str, out: Path, artifacts: str) -> list[list[str]]:
    return [
        ["bash", str(ROOT / "infra" / "package.sh"), stage, str(out)],
        [
            aws,
            "cloudformation",
            "package",
            "--template-file",
            str(out / "sam.json"),
            "--s3-bucket",
            artifacts,
            "--s3-prefix",
            f"lifemonitor/{stage}",
            "--output-template-file",
            str(out / "packaged.yaml"),
        ],
    ]


def deploy_command(
    aws: str, stage: str, template: Path, overrides: list[str], stateful: bool = False
) -> list[str]:
    capabilities = ["CAPABILITY_IAM"] if stateful else ["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"]
    cmd = [
        aws,
        "cloudformation",
        "deploy",
        "--stack-name",
        stack_name(stage, stateful),
        "--template-file",
        str(template),
        "--capabilities",
        *capabilities,
        "--no-fail-on-empty-changeset",
    ]
    if overrides:
        cmd += ["--parameter-overrides", *overrides]
    return cmd


def output_command(aws: str, stage: str, key: str) -> list[str]:
    return [
        aws,
        "cloudformation",
        "describe-stacks",
        "--stack-name",
        stack_name(stage),
        "--query",
        f"Stacks[0].Outputs[?OutputKey=='{key}'].OutputValue",
        "--output",
        "text",
    ]


def _run(cmd: list[str], capture: bool = False) -> str:
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=capture, text=True, check=False)  # noqa: S603
    if proc.returncode != 0:
        if capture:
            sys.stderr.write(proc.stderr)
        raise SystemExit(f"deploy: failed ({proc.returncode}): {' '.join(cmd[:3])}")
    return proc.stdout if capture else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.deploy", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--stage", required=True)
    parser.add_argument("--artifacts", help="S3 bucket for deployment artifacts (app stack)")
    parser.add_argument("--out", help="package directory (default out/STAGE)")
    parser.add_argument(
        "--no-package", action="store_true", help="deploy OUT/sam.json as already packaged"
    )
    parser.add_argument("--stateful", action="store_true", help="deploy the stateful stack")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a CloudFormation parameter override (repeatable)",
    )
    parser.add_argument("--no-check", action="store_true", help="skip the `db current` check")
    ns = parser.parse_args(argv)
    if not re.fullmatch(r"[a-z][a-z0-9]{0,9}", ns.stage):
        parser.error(f"invalid stage name {ns.stage!r}")
    for item in ns.param:
        if not re.fullmatch(r"[A-Za-z0-9]+=.*", item):
            parser.error(f"--param takes KEY=VALUE, got {item!r}")
    aws = os.environ.get("AWS", "aws")

    if ns.stateful:
        template = ROOT / "infra" / "cfn" / "stateful.yaml"
        _run(deploy_command(aws, ns.stage, template, [f"Stage={ns.stage}", *ns.param], True))
        return 0

    if not ns.artifacts:
        parser.error("--artifacts BUCKET is required (the S3 bucket for deployment.zip)")
    out = Path(ns.out) if ns.out else ROOT / "out" / ns.stage
    out = out if out.is_absolute() else Path.cwd() / out
    package, upload = package_commands(aws, ns.stage, out, ns.artifacts)
    if not ns.no_package:
        _run(package)
    elif not (out / "sam.json").is_file():
        raise SystemExit(f"deploy: {out / 'sam.json'} missing (run without --no-package)")
    _run(upload)
    _run(deploy_command(aws, ns.stage, out / "packaged.yaml", ns.param))
    endpoint = _run(output_command(aws, ns.stage, "EndpointURL"), capture=True).strip()
    print(f"deployed {stack_name(ns.stage)}: {endpoint or '(no EndpointURL output)'}")
    if not ns.no_check:
        from infra import remote_admin

        code = remote_admin.main(["--stage", ns.stage, "--", "db", "current"])
        if code != 0:
            raise SystemExit("deploy: `db current` through the admin function failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
