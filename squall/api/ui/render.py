"""Templates and static files of the web UI, shipped in the package (no build step, no CDN).

Pages are jinja2 skeletons (``templates/``); their data comes from the ``/ui/api`` JSON
endpoints, fetched by the small scripts in ``static/``, served at ``/ui/static/NAME``."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from squall.api.problems import not_found

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
TEMPLATES = HERE / "templates"
STATIC_PREFIX = "/ui/static"
_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".svg": "image/svg+xml"}

_env = Environment(loader=FileSystemLoader(str(TEMPLATES)),
                   autoescape=select_autoescape(["html"]), trim_blocks=True,
                   lstrip_blocks=True)

router = APIRouter(include_in_schema=False)


@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("squall")
    except PackageNotFoundError:
        return "dev"


_env.globals["static"] = lambda name: f"{STATIC_PREFIX}/{name}?v={_version()}"


def render(request: Request, name: str, context: dict[str, Any],
           status: int = 200) -> HTMLResponse:
    """Template ``name`` with ``context``, answered with ``status``; never cached."""
    html = _env.get_template(name).render(request=request, **context)
    return HTMLResponse(html, status_code=status, headers={
        "Cache-Control": "no-store", "X-Frame-Options": "DENY",
        "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'"})


@router.get(STATIC_PREFIX + "/{name}")
def static_file(name: str) -> FileResponse:
    """A file of ``static/`` (only the files there, by plain name)."""
    path = STATIC / name
    if "/" in name or name.startswith(".") or path.suffix not in _TYPES or not path.is_file():
        raise not_found(f"static file {name!r} not found")
    return FileResponse(path, media_type=_TYPES[path.suffix],
                        headers={"Cache-Control": "public, max-age=3600"})
