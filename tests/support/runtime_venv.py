"""A real venv holding only the runtime dependencies (requirements.txt plus Chalice, what
`make install` puts in), with no pytest: to prove that benchmarks and tools run without
the test harness.

Installing from PyPI would be slow and leave loopback, so the venv is made with
``python -m venv --without-pip`` from the interpreter the suite runs on, and its
site-packages gets symlinks to the installed files of exactly those distributions and
their dependencies (resolved from the installed metadata, markers evaluated), dist-info
included. Anything else, pytest first, is simply not there."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
EXTRA_RUNTIME = ["chalice"]  # `make install` adds it to requirements.txt


def runtime_requirements() -> list[Requirement]:
    reqs = []
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            reqs.append(Requirement(line))
    return reqs + [Requirement(name) for name in EXTRA_RUNTIME]


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(requirements: list[Requirement]) -> list[metadata.Distribution]:
    """The installed distributions these requirements pull in, transitively."""
    env = default_environment()
    seen: dict[str, metadata.Distribution] = {}
    extras_done: set[tuple[str, str]] = set()
    todo = [(req, "") for req in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({**env, "extra": extra}):
            continue
        key = _key(req.name)
        dist = seen.get(key)
        if dist is None:
            dist = metadata.distribution(req.name)  # missing: the venv is broken, fail
            seen[key] = dist
            todo += [(Requirement(r), "") for r in dist.requires or []]
        for wanted in req.extras:
            if (key, wanted) not in extras_done:
                extras_done.add((key, wanted))
                todo += [(Requirement(r), wanted) for r in dist.requires or []]
    return list(seen.values())


def _top_level(dist: metadata.Distribution) -> set[str]:
    names = set()
    for file in dist.files or []:
        first = file.parts[0]
        if first not in ("..", "__pycache__") and not first.endswith(".pth"):
            names.add(first)
    return names


def make_runtime_venv(where: Path) -> Path:
    """Create the venv under `where`; returns its python."""
    venv = where / "runtime-venv"
    subprocess.run(
        [sys._base_executable, "-m", "venv", "--without-pip", str(venv)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (site,) = venv.glob("lib/python*/site-packages")
    for dist in closure(runtime_requirements()):
        origin = Path(dist.locate_file(""))
        for name in _top_level(dist):
            source, target = origin / name, site / name
            if source.exists() and not target.exists():
                os.symlink(source, target)
    return venv / "bin" / "python"
