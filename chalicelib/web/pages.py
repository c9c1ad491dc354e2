"""The landing page and the stylesheet."""

from __future__ import annotations

from functools import lru_cache

from chalice import Blueprint, Response

from chalicelib.web.render import STATIC, render
from chalicelib.web.responses import html, redirect
from chalicelib.web.routing import PAGES, PageRequest, page

routes = Blueprint(__name__)


@page(routes, "/")
def landing(request: PageRequest):
    return html(render("landing.html", session=request.session), session=request.session)


@page(routes, "/profile")
def profile_alias(request: PageRequest):
    return redirect("/account/profile")


@lru_cache(maxsize=1)
def _stylesheet() -> str:
    return (STATIC / "lifemonitor.css").read_text(encoding="utf-8")


@routes.route("/static/lifemonitor.css", methods=["GET", "HEAD"], content_types=["*/*"])
def stylesheet():
    """The one stylesheet of the pages (no external assets)."""
    return Response(
        body=_stylesheet(),
        headers={
            "Content-Type": "text/css; charset=utf-8",
            "Cache-Control": "public, max-age=3600",
        },
    )


PAGES.update({("/static/lifemonitor.css", "GET"), ("/static/lifemonitor.css", "HEAD")})
