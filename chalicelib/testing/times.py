"""Time helpers shared by the CI adapters: every CI's notion of time → aware UTC datetimes
and durations in seconds (LifeMonitor mixed ms and s, and ints and floats; contract §3.3)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def utc(value: datetime) -> datetime:
    """An aware UTC datetime; naive values are taken as UTC (what CIs mean by them)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_iso(value: Any) -> datetime | None:
    """ISO-8601 instant or date (``2022-12-24T07:29:12Z``, ``...000+10:00``, ``2022-12-24``)
    → aware UTC datetime. None or blank → None; anything else unparsable → ValueError."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return utc(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if not isinstance(value, str):
        raise ValueError(f"not a timestamp: {value!r}")
    text = value.strip()
    if not text:
        return None
    if _DATE_ONLY.match(text):
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    # Python 3.11+ parses "Z" and fractions itself; this keeps older spellings working too.
    return utc(datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00")))


def parse_iso_or_none(value: Any) -> datetime | None:
    """Like `parse_iso`, but a malformed value is None: one odd field must not drop a build."""
    try:
        return parse_iso(value)
    except (ValueError, TypeError, OverflowError):
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def from_epoch_ms(value: Any) -> datetime | None:
    """Milliseconds since the epoch (Jenkins `timestamp`) → UTC datetime; 0/None → None."""
    number = _number(value)
    if not number or number < 0:
        return None
    try:
        return datetime.fromtimestamp(number / 1000.0, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def ms_to_seconds(value: Any) -> float | None:
    """A duration in milliseconds (Jenkins `duration`) → seconds; negative/None → None."""
    number = _number(value)
    return None if number is None or number < 0 else number / 1000.0


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    """`end - start` in seconds, None when either is missing or the clock went backwards."""
    if start is None or end is None:
        return None
    seconds = (end - start).total_seconds()
    return seconds if seconds >= 0 else None


def epoch_seconds(value: datetime | None) -> float | None:
    return None if value is None else utc(value).timestamp()
