"""JSON from outside (request bodies, webhook deliveries, crate metadata), parsed so that no
document can make us answer 500: nesting deeper than `MAX_DEPTH`, NUL characters and lone
UTF-16 surrogates (neither can be stored in PostgreSQL text nor encoded as UTF-8), and
`NaN`/`Infinity` (not JSON, and not storable in JSONB) are refused with the path of the
offending value, so the caller can answer a 4xx that names the field.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 64  # our bodies nest 3-4 levels, RO-Crate metadata fewer than 10
_SURROGATE = re.compile("[\ud800-\udfff]")


class JSONInputError(ValueError):
    """`field` is the path of the offending value (`name`, `items[0]`, `@graph[3].url`), or
    None when the document as a whole is at fault."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def loads(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads`, then `check`. Raises JSONInputError (never RecursionError)."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise JSONInputError(
            f"the JSON document is nested too deep (over {max_depth} levels)"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise JSONInputError(f"malformed JSON: {exc}") from None
    check(value, max_depth=max_depth)
    return value


def check(value: Any, *, max_depth: int = MAX_DEPTH) -> None:
    """Walk a decoded document (iteratively: no recursion to exhaust)."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item, path)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise JSONInputError(f"{_where(path)}is not a finite number ({item})", path)
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                raise JSONInputError(
                    f"{_where(path)}is nested too deep (over {max_depth} levels)", path
                )
            if isinstance(item, dict):
                for key, child in item.items():
                    child_path = _join(path, key)
                    _check_text(key, child_path)
                    stack.append((child, child_path, depth + 1))
            else:
                stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))


def _check_text(text: str, path: str) -> None:
    if "\x00" in text:
        raise JSONInputError(f"{_where(path)}contains a NUL character (\\u0000)", path)
    if not text.isascii() and _SURROGATE.search(text):
        raise JSONInputError(f"{_where(path)}contains a lone UTF-16 surrogate", path)


def _join(path: str, key: Any) -> str:
    key = str(key)
    if len(key) > 64 or _SURROGATE.search(key) or "\x00" in key:
        key = repr(key[:64])[1:-1]  # printable and storable in the error itself
    return f"{path}.{key}" if path else key


def _where(path: str) -> str:
    if not path:
        return "the document "
    shown = path if len(path) <= 200 else path[:200] + "…"
    return f"'{shown}' "
