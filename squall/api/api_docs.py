"""The API's browsable documentation, served from the package (issue 26): Swagger UI at
``/api/v1/ui`` and ReDoc at ``/api/v1/redoc``, their scripts and styles from the
``fastapi-offline`` distribution's static files (ADR 36), so the pages work without the
internet: neither references a URL that is not on this server.

Swagger UI's online validator badge is switched off (it would call out to the internet)."""

from __future__ import annotations

import logging
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from squall.api.problems import not_found

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
ASSETS_PREFIX = f"{API_PREFIX}/ui/static"
#: the files served, by name, with their media types
ASSETS = {"swagger-ui-bundle.js": "text/javascript; charset=utf-8",
          "swagger-ui.css": "text/css; charset=utf-8",
          "redoc.standalone.js": "text/javascript; charset=utf-8",
          "favicon.png": "image/png"}

router = APIRouter(include_in_schema=False)


def _assets() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


@router.get(f"{API_PREFIX}/ui")
def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=f"{API_PREFIX}/openapi.json", title="Squall API",
        swagger_js_url=f"{ASSETS_PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PREFIX}/favicon.png",
        swagger_ui_parameters={"validatorUrl": None})


@router.get(f"{API_PREFIX}/redoc")
def redoc() -> HTMLResponse:
    return get_redoc_html(
        openapi_url=f"{API_PREFIX}/openapi.json", title="Squall API",
        redoc_js_url=f"{ASSETS_PREFIX}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS_PREFIX}/favicon.png", with_google_fonts=False)


@router.get(ASSETS_PREFIX + "/{name}")
def asset(name: str) -> FileResponse:
    """One of :data:`ASSETS`."""
    if name not in ASSETS:
        raise not_found(f"API docs asset {name!r} not found")
    return FileResponse(_assets() / name, media_type=ASSETS[name],
                        headers={"Cache-Control": "public, max-age=86400"})
