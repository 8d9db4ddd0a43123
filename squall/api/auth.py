"""Who is asking, and may they: HTTP basic auth for the API, a signed session cookie for the
web UI, and three roles.

* ``viewer`` reads everything; ``op`` also triggers, clears, marks and pauses; ``admin``
  also manages users and pools (:data:`ROLE_RANK`).
* Every route but ``/api/v1/health`` depends on :func:`require` with the least role it
  needs: no credentials (or wrong ones) is 401 with ``WWW-Authenticate: Basic``; a role
  below the route's is 403.
* The UI's session is ``squall_session``: ``username|expiry|signature`` with an HMAC-SHA256
  signature under ``[api] secret_key``; the UI's forms carry a CSRF token derived from it
  (:func:`csrf_token`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from squall.api.problems import ApiProblem
from squall.api.state import DB, ApiState, api_state
from squall.common.db import session_scope
from squall.common.models import User

SESSION_COOKIE = "squall_session"
#: how long a UI login lasts (seconds)
SESSION_SECONDS = 12 * 3600


class Role(StrEnum):
    VIEWER = "viewer"
    OP = "op"
    ADMIN = "admin"


ROLE_RANK = {Role.VIEWER: 0, Role.OP: 1, Role.ADMIN: 2}


class Principal:
    """The user a request is made by."""

    def __init__(self, username: str, role: Role) -> None:
        self.username = username
        self.role = role

    def may(self, role: Role) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def _unauthorized(detail: str) -> ApiProblem:
    return ApiProblem(401, detail, headers={"WWW-Authenticate": 'Basic realm="squall"'})


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


def check_login(state: ApiState, username: str, password: str,
                session: Session | None = None) -> Principal | None:
    """The user with these credentials, or ``None`` (read in ``session``, the request's,
    when given)."""
    stmt = select(User.role, User.password_hash).where(User.username == username)
    if session is not None:
        row = session.execute(stmt).first()
    else:
        with session_scope(state.session_factory) as own:
            row = own.execute(stmt).first()
    if row is None or not state.credentials.check(username, password, row.password_hash):
        return None
    return Principal(username, Role(row.role))


def _sign(state: ApiState, payload: str) -> str:
    return hmac.new(state.secret_key.encode(), payload.encode(), hashlib.sha256).hexdigest()


def session_token(state: ApiState, username: str, now: float | None = None) -> str:
    """A UI session for ``username``, valid for :data:`SESSION_SECONDS`."""
    expiry = int((now or time.time()) + SESSION_SECONDS)
    payload = f"{username}|{expiry}"
    return f"{payload}|{_sign(state, payload)}"


def _session_user(state: ApiState, token: str, session: Session) -> Principal | None:
    username, _, rest = token.partition("|")
    expiry, _, signature = rest.partition("|")
    payload = f"{username}|{expiry}"
    if not (username and expiry.isdigit() and signature):
        return None
    if not hmac.compare_digest(signature, _sign(state, payload)):
        return None
    if int(expiry) < time.time():
        return None
    role = session.scalar(select(User.role).where(User.username == username))
    return Principal(username, Role(role)) if role is not None else None


def csrf_token(state: ApiState, session_cookie: str) -> str:
    """The CSRF token of a UI session: forms and the UI's own POSTs send it back in
    ``X-CSRF-Token`` (or a ``csrf_token`` field)."""
    return _sign(state, "csrf|" + session_cookie)


def authenticate(request: Request, session: DB) -> Principal:
    """The request's user, from basic auth or the UI's session cookie; 401 otherwise. A
    state-changing request made with the session cookie must carry its CSRF token. The
    user is read in the request's own database session (the one its route uses)."""
    state = api_state(request)
    header = request.headers.get("authorization")
    if header:
        creds = _basic(header)
        if creds is None:
            raise _unauthorized("malformed Authorization header: expected Basic credentials")
        user = check_login(state, *creds, session=session)
        if user is None:
            raise _unauthorized("invalid username or password")
        return user
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        user = _session_user(state, cookie, session)
        if user is not None:
            if request.method not in ("GET", "HEAD", "OPTIONS"):
                sent = request.headers.get("x-csrf-token", "")
                if not hmac.compare_digest(sent, csrf_token(state, cookie)):
                    raise ApiProblem(403, "missing or wrong CSRF token")
            return user
    raise _unauthorized("credentials required: HTTP basic auth, or log in to the web UI")


def require(role: Role) -> Callable[[Principal], Principal]:
    """A dependency: the authenticated user, who must have at least ``role``."""

    def check(user: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not user.may(role):
            raise ApiProblem(403, f"user {user.username} ({user.role.value}) may not do this: "
                             f"it needs the {role.value} role")
        return user

    return check


viewer = require(Role.VIEWER)
op = require(Role.OP)
admin = require(Role.ADMIN)

#: route parameters: the user, who needs at least this role
Viewer = Annotated[Principal, Depends(viewer)]
Op = Annotated[Principal, Depends(op)]
Admin = Annotated[Principal, Depends(admin)]
