"""How long a stored text may be, read from the models' own columns: `String(n)` gives n;
a `Text` column that still needs a cap declares it as `info={"max_length": n}`. Every
check of an incoming value's length goes through `check_length`, so the API's limits are
the schema's and a value that does not fit is a 4xx naming the field, never a database
error."""

from __future__ import annotations

from typing import Any

from chalicelib.errors import BadRequestError, LifeMonitorError

NAME_MAX = 1024  # names of workflows, versions, suites and instances (Text columns)
URL_MAX = 2048  # URLs kept in Text columns (crate origins, instance resources)


def max_length(attribute: Any) -> int | None:
    """The length limit of a mapped attribute (e.g. `WorkflowVersion.version`)."""
    column = attribute.property.columns[0]
    return column.info.get("max_length") or getattr(column.type, "length", None)


def check_length(
    value: str | None,
    attribute: Any,
    field: str,
    *,
    error: type[LifeMonitorError] = BadRequestError,
    **extra: Any,
) -> str | None:
    """`value` unchanged, or `error` ('<field>' is longer than n characters)."""
    if value is None:
        return None
    limit = max_length(attribute)
    if limit is not None and len(value) > limit:
        raise error(f"'{field}' is longer than {limit} characters", field=field, **extra)
    return value
