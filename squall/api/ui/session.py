"""The web UI's login: ``GET /login`` (the form), ``POST /login``, ``POST /logout``, and who
is looking at a page.

A successful login sets the ``squall_session`` cookie (:func:`squall.api.auth.session_token`;
HttpOnly, SameSite=Lax) and redirects to ``/``. Every page then carries the session's CSRF
token (:func:`squall.api.auth.csrf_token`) in ``<meta name="csrf-token">``; the UI's scripts
send it back in ``X-CSRF-Token`` on every state-changing request, and the logout form in a
hidden ``csrf_token`` field.

The login form has no session to derive a token from, so it is protected by a signed
double-submit token: ``GET /login`` sets a random nonce in the ``squall_login`` cookie
(HttpOnly, SameSite=Strict, short-lived) and puts ``HMAC-SHA256([api] secret_key,
"login|" + nonce)`` in the form's hidden ``csrf_token`` field. ``POST /login`` accepts the
credentials only when the field matches the cookie's nonce: another site can neither read
the field nor set the cookie, so it cannot log a browser in (login CSRF).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from squall.api.auth import (
    SESSION_COOKIE,
    SESSION_SECONDS,
    Principal,
    authenticate,
    check_login,
    csrf_token,
    session_token,
)
from squall.api.problems import ApiProblem
from squall.api.state import ApiState, api_state
from squall.api.ui.render import render
from squall.common.db import session_scope

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

#: the cookie holding the login form's nonce
LOGIN_COOKIE = "squall_login"
LOGIN_COOKIE_SECONDS = 3600


def login_form_token(state: ApiState, nonce: str) -> str:
    """The hidden ``csrf_token`` of the login form whose cookie holds ``nonce``."""
    return hmac.new(state.secret_key.encode(), f"login|{nonce}".encode(),
                    hashlib.sha256).hexdigest()


def page_user(request: Request) -> Principal | None:
    """The user a page is shown to (session cookie or basic auth), or ``None``."""
    try:
        with session_scope(api_state(request).session_factory) as session:
            return authenticate(request, session)
    except ApiProblem:
        return None


def page_csrf(request: Request) -> str:
    """The CSRF token of the request's UI session ('' without one, e.g. basic auth)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    return csrf_token(api_state(request), cookie) if cookie else ""


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _login_page(request: Request, error: str | None = None, username: str = "",
                status: int = 200) -> HTMLResponse:
    state = api_state(request)
    nonce = secrets.token_urlsafe(24)
    response = render(request, "login.html", {
        "error": error, "username": username,
        "login_token": login_form_token(state, nonce)}, status=status)
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=LOGIN_COOKIE_SECONDS, httponly=True,
                        samesite="strict", secure=_secure(request), path="/login")
    return response


@router.get("/login")
def login_form(request: Request) -> Response:
    if page_user(request) is not None:
        return RedirectResponse("/", status_code=303)
    return _login_page(request)


async def form_fields(request: Request) -> dict[str, str]:
    """The fields of a urlencoded form post (the first value of each), read here so that the
    UI needs no multipart parser."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


@router.post("/login")
async def login(request: Request) -> Response:
    fields = await form_fields(request)
    username, password = fields.get("username", ""), fields.get("password", "")
    csrf_token = fields.get("csrf_token", "")
    state = api_state(request)
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not hmac.compare_digest(csrf_token, login_form_token(state, nonce)):
        log.info("ui: login form for %r refused: missing or wrong CSRF token", username)
        return _login_page(request, "The form expired or did not come from this page: "
                           "please sign in again.", username, status=403)
    user = (await run_in_threadpool(check_login, state, username, password)
            if username and password else None)
    if user is None:
        log.info("ui: failed login for %r", username)
        return _login_page(request, "Wrong username or password.", username, status=401)
    log.info("ui: %s (%s) logged in", user.username, user.role.value)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(SESSION_COOKIE, session_token(state, user.username),
                        max_age=SESSION_SECONDS, httponly=True, samesite="lax",
                        secure=_secure(request), path="/")
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    csrf_token = (await form_fields(request)).get("csrf_token", "")
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and not hmac.compare_digest(csrf_token, page_csrf(request)):
        raise ApiProblem(403, "missing or wrong CSRF token")
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
