"""Blueprint module for the history routes (filled in by the refresh issue)."""

from __future__ import annotations

from chalice import Blueprint

routes = Blueprint(__name__)
