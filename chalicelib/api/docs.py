"""Our OpenAPI document and Swagger UI, with the UI's assets served from the
`swagger-ui-bundle` package: no CDN, the docs work offline."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from chalice import Blueprint, Response

from chalicelib.api.routing import endpoint
from chalicelib.errors import NotFoundError

routes = Blueprint(__name__)

OPENAPI_FILE = Path(__file__).with_name("openapi.json")
ASSETS = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "index.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "application/javascript; charset=utf-8",
    "swagger-ui-standalone-preset.js": "application/javascript; charset=utf-8",
}

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>LifeMonitor API</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="{base}/ui/swagger-ui.css">
  <link rel="stylesheet" href="{base}/ui/index.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{base}/ui/swagger-ui-bundle.js"></script>
  <script src="{base}/ui/swagger-ui-standalone-preset.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "{base}/openapi.json",
      dom_id: "#swagger-ui",
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
      layout: "StandaloneLayout"
    }});
  </script>
</body>
</html>
"""


@lru_cache(maxsize=1)
def _document() -> dict:
    return json.loads(OPENAPI_FILE.read_text())


def openapi_document() -> dict:
    from chalicelib.config import get_settings

    doc = dict(_document())
    doc["servers"] = [{"url": get_settings().external_server_url}]
    return doc


def _base_path() -> str:
    from chalicelib.config import get_settings

    return urlsplit(get_settings().external_server_url).path.rstrip("/")


@endpoint(routes, "/openapi.json", public=True)
def openapi():
    return Response(body=openapi_document(), headers={"Cache-Control": "public, max-age=300"})


@endpoint(routes, "/ui", public=True)
def swagger_ui():
    return Response(
        body=_PAGE.format(base=_base_path()), headers={"Content-Type": "text/html; charset=utf-8"}
    )


@lru_cache(maxsize=len(ASSETS))
def _asset(name: str) -> str:
    import swagger_ui_bundle

    return (Path(swagger_ui_bundle.swagger_ui_path) / name).read_text(encoding="utf-8")


@endpoint(routes, "/ui/{asset}", public=True)
def swagger_asset(asset: str):
    if asset not in ASSETS:
        raise NotFoundError(f"no such Swagger UI asset: {asset!r}")
    headers = {"Content-Type": ASSETS[asset], "Cache-Control": "public, max-age=86400"}
    return Response(body=_asset(asset), headers=headers)
