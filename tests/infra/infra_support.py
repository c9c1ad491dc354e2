"""Helpers shared by the infra tests: paths, a CloudFormation-aware YAML loader, tools."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CFN = ROOT / "infra" / "cfn"
STATEFUL = CFN / "stateful.yaml"
MERGE = CFN / "chalice-merge.yaml"
PACKAGE_SH = ROOT / "infra" / "package.sh"
CHALICE_DIR = ROOT / ".chalice"
STAGES = ("dev", "test", "prod")
VENV_BIN = Path(sys.executable).parent


class _CfnLoader(yaml.SafeLoader):
    """Reads `!Ref`, `!Sub`, `!GetAtt a.b`, ... into their long JSON forms."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node):
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_cfn(path: Path) -> dict:
    with open(path) as fh:
        return yaml.load(fh, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


def chalice_config() -> dict:
    return json.loads((CHALICE_DIR / "config.json").read_text())


def tool(name: str) -> str:
    """A console script of the test interpreter's venv (else PATH); fails when absent."""
    path = VENV_BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} is not installed: pip install -r requirements-dev.txt")
    return found


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for packaging subprocesses: no AWS credentials or LM_* settings,
    the venv's tools first on PATH, and a region (chalice package needs one)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "LM_")) and k not in ("DATABASE_URL", "PYTHONPATH")
    }
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["AWS_DEFAULT_REGION"] = "eu-west-1"
    env.update(extra)
    return env


def cfn_lint(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("cfn-lint"), "--", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        check=False,
    )
