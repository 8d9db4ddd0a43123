"""Errors as Airflow 2's REST API answers them: an RFC 7807 problem body
(``type``, ``title``, ``status``, ``detail``, ``instance``) with a 4xx status.

Routes raise :class:`ApiProblem`; :func:`install` turns it, FastAPI's request validation
errors and Starlette's HTTP errors into that body, and any other exception into a 500
problem (logged with its traceback, never shown)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

#: the ``type`` links Airflow's API puts in its problems, by status
_TYPES = {
    400: "BadRequest", 401: "Unauthenticated", 403: "PermissionDenied", 404: "NotFound",
    405: "MethodNotAllowed", 409: "AlreadyExists", 415: "UnsupportedMediaType",
    500: "Unknown", 503: "ServiceUnavailable",
}
_TITLES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 415: "Unsupported Media Type",
    500: "Internal Server Error", 503: "Service Unavailable",
}
TYPE_BASE = "https://airflow.apache.org/docs/apache-airflow/2.0.0/stable-rest-api-ref.html#section/Errors/"


class ApiProblem(Exception):
    """An error answered as a problem body with ``status``."""

    def __init__(self, status: int, detail: str, *, title: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or _TITLES.get(status, "Error")
        self.headers = headers


def not_found(what: str) -> ApiProblem:
    return ApiProblem(404, what, title=f"{what.split(' ')[0]} not found")


def bad_request(detail: str) -> ApiProblem:
    return ApiProblem(400, detail)


def problem_body(status: int, title: str, detail: Any) -> dict[str, Any]:
    return {"type": TYPE_BASE + _TYPES.get(status, "Unknown"), "title": title,
            "status": status, "detail": detail, "instance": None}


def problem_response(status: int, title: str, detail: Any,
                     headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(problem_body(status, title, detail), status_code=status,
                        headers=headers, media_type="application/problem+json")


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    """Answer every error with a problem body."""

    @app.exception_handler(ApiProblem)
    async def _problem(request: Request, exc: ApiProblem) -> JSONResponse:
        return problem_response(exc.status, exc.title, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(400, "Bad Request", _validation_detail(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(exc.status_code, _TITLES.get(exc.status_code, "Error"),
                                str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("api: %s %s failed", request.method, request.url.path, exc_info=exc)
        return problem_response(500, "Internal Server Error",
                                "the server failed to answer; see its log")
