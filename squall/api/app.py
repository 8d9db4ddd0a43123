"""The API's FastAPI application: :func:`create_app`."""

from __future__ import annotations

import logging

from fastapi import Depends, FastAPI

from squall.api import api_docs, problems
from squall.api.routes import ROUTERS
from squall.api.routes.dag_runs import refuse_nul
from squall.api.state import ApiState
from squall.common.db import SessionFactory, make_engine, make_session_factory
from squall.common.settings import Settings

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("squall")
    except PackageNotFoundError:
        return "unknown"


def create_app(settings: Settings, session_factory: SessionFactory | None = None) -> FastAPI:
    """The API and web UI application for ``settings`` (its own engine when no
    ``session_factory`` is given). The OpenAPI document is served at
    ``/api/v1/openapi.json`` and browsable at ``/api/v1/ui`` (Swagger UI) and ``/api/v1/redoc``
    (ReDoc), both served from the package (:mod:`squall.api.api_docs`)."""
    factory = session_factory or make_session_factory(make_engine(settings.sql_alchemy_conn))
    app = FastAPI(
        title="Squall API", version=_version(),
        description="Squall's REST API, shaped like Airflow 2's stable REST API. Every "
        "endpoint but /api/v1/health needs HTTP basic auth (users: `squall users create`).",
        # the docs pages are served from the package (api_docs.py), not from a CDN
        openapi_url=f"{API_PREFIX}/openapi.json", docs_url=None, redoc_url=None,
        # a NUL in a path or query is a 400 everywhere, not a database error
        dependencies=[Depends(refuse_nul)],
    )
    app.state.squall = ApiState(settings=settings, session_factory=factory,
                                secret_key=settings.secret_key())
    problems.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(api_docs.router)
    _document_problems_not_422(app)
    return app


def app_from_settings() -> FastAPI:
    """The app with settings loaded in this process: uvicorn's factory for the server
    processes of ``squall api --workers N`` (each reads ``$SQUALL_HOME`` /
    ``$SQUALL_CONFIG`` and the ``SQUALL__`` variables itself)."""
    return create_app(Settings.load())


def _document_problems_not_422(app: FastAPI) -> None:
    """Invalid requests are answered 400 with a problem body (as Airflow's API), not
    FastAPI's 422: say so in the OpenAPI document."""
    from typing import Any

    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            for item in schema.get("paths", {}).values():
                for operation in item.values():
                    operation.get("responses", {}).pop("422", None)
            components = schema.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                components.pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
