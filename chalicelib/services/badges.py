"""Status badges: an SVG in the shields.io "flat" style and a shields.io endpoint JSON
(https://shields.io/badges/endpoint-badge), for a workflow (a version of it), a suite or an
instance. Public workflows only; read from the stored builds, nothing written."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING

from chalicelib import status as status_rule
from chalicelib.auth.principals import ANONYMOUS
from chalicelib.errors import ForbiddenError, NotFoundError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

LABEL = "LifeMonitor"
# Hex colours of shields.io's named colours, so the SVG and the JSON agree.
COLOURS = {
    "brightgreen": "#4c1",
    "yellow": "#dfb317",
    "red": "#e05d44",
    "lightgrey": "#9f9f9f",
    "blue": "#007ec6",
    "orange": "#fe7d37",
}
AGGREGATE = {
    status_rule.ALL_PASSING: ("passing", "brightgreen"),
    status_rule.SOME_PASSING: ("some passing", "yellow"),
    status_rule.ALL_FAILING: ("failing", "red"),
    status_rule.NOT_AVAILABLE: ("unknown", "lightgrey"),
}
BUILD = {
    "passed": ("passing", "brightgreen"),
    "failed": ("failing", "red"),
    "error": ("error", "red"),
    "aborted": ("aborted", "lightgrey"),
    "running": ("running", "blue"),
    "waiting": ("waiting", "blue"),
}
STALE = ("stale", "orange")


@dataclass(frozen=True)
class Badge:
    label: str
    message: str
    color: str  # a shields.io named colour

    def endpoint_json(self) -> dict:
        """The shields.io endpoint schema (schemaVersion 1)."""
        return {
            "schemaVersion": 1,
            "label": self.label,
            "message": self.message,
            "color": self.color,
            "cacheSeconds": 300,
        }

    def svg(self) -> str:
        return flat_svg(self.label, self.message, COLOURS.get(self.color, self.color))


# Verdana 11px advance widths (shields.io measures text the same way), in px; others 7.
_NARROW = dict.fromkeys("fijlrt.,:;!|'I ", 3.5)
_WIDE = dict.fromkeys("mwMW", 10.0)


def text_width(text: str) -> float:
    return sum(_NARROW.get(c, _WIDE.get(c, 6.8 if c.islower() else 7.5)) for c in text)


def flat_svg(label: str, message: str, colour: str) -> str:
    """shields.io's flat style: grey label, coloured message, rounded corners, a light
    gradient and text with a shadow."""
    lw = round(text_width(label) + 10)
    mw = round(text_width(message) + 10)
    width = lw + mw
    title = escape(f"{label}: {message}")
    label_e, message_e = escape(label), escape(message)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" '
        f'aria-label="{title}"><title>{title}</title>'
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" '
        'stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{width}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{lw}" height="20" fill="#555"/>'
        f'<rect x="{lw}" width="{mw}" height="20" fill="{colour}"/>'
        f'<rect width="{width}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" '
        'font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="{lw / 2}" y="15" fill="#010101" fill-opacity=".3">{label_e}</text>'
        f'<text x="{lw / 2}" y="14">{label_e}</text>'
        f'<text x="{lw + mw / 2}" y="15" fill="#010101" fill-opacity=".3">{message_e}</text>'
        f'<text x="{lw + mw / 2}" y="14">{message_e}</text></g></svg>'
    )


def _public(call):
    """Badges are for public workflows: anything else is "not found" (no hint that a
    private one exists)."""
    try:
        return call()
    except ForbiddenError:
        raise NotFoundError(
            "No public workflow here: badges exist for public workflows only"
        ) from None


def for_aggregate(result: status_rule.StatusResult, label: str = LABEL) -> Badge:
    message, colour = AGGREGATE[result.aggregate_test_status]
    if result.warnings and result.aggregate_test_status != status_rule.NOT_AVAILABLE:
        message += ", stale"
    return Badge(label, message, colour)


def workflow_badge(session: Session, wf_uuid: str, version: str | None = "latest") -> Badge:
    from chalicelib.services import workflows

    entry = _public(lambda: workflows.get_version(session, ANONYMOUS, wf_uuid, version))
    return for_aggregate(entry.versions[0].status())  # the version asked for comes first


def suite_badge(session: Session, suite_uuid: str) -> Badge:
    from chalicelib.services import workflows

    view = _public(lambda: workflows.get_suite(session, ANONYMOUS, suite_uuid))
    return for_aggregate(view.status())


def instance_badge(session: Session, instance_uuid: str) -> Badge:
    from chalicelib.services import workflows

    view = _public(lambda: workflows.get_instance(session, ANONYMOUS, instance_uuid))
    if view.instance.stale_since is not None:
        return Badge(LABEL, *STALE)
    build = view.last_completed_build or view.latest_build
    if build is None:
        return Badge(LABEL, *AGGREGATE[status_rule.NOT_AVAILABLE])
    return Badge(LABEL, *BUILD.get(build.status, ("unknown", "lightgrey")))
