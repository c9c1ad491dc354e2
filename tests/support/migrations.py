"""The newest migration, read from the files themselves (not from Alembic or
`migrate.head()`, which the commands under test use)."""

from __future__ import annotations

import ast
from pathlib import Path

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations" / "versions"


def newest_migration() -> tuple[str, str | None]:
    """(revision, down_revision) of the newest migration file, read from the files (not
    from Alembic or `migrate.head()`, which the commands under test use): the one whose
    `revision` is no file's `down_revision`."""
    chain: dict[str, str | None] = {}
    parents: set[str] = set()
    for path in sorted(MIGRATIONS.glob("*.py")):
        found = {}
        for node in ast.parse(path.read_text(), str(path)).body:
            target = (
                node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
            )
            if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                found[target.id] = ast.literal_eval(node.value)
        assert "revision" in found, f"{path.name}: no revision"
        down = found.get("down_revision")
        downs = list(down) if isinstance(down, tuple | list) else [down]
        parents.update(d for d in downs if d)
        chain[found["revision"]] = down if isinstance(down, str) else None
    heads = [r for r in chain if r not in parents]
    assert len(heads) == 1, f"migrations have {len(heads)} heads: {heads}"
    return heads[0], chain[heads[0]]
