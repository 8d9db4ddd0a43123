"""The API's users in the database: create, list, delete (``squall users``)."""

from __future__ import annotations

import re

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from squall.api.passwords import hash_password
from squall.api.roles import ROLES
from squall.common.errors import UserError
from squall.common.models import User

_NAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")
#: the shortest password accepted
MIN_PASSWORD = 8


def create_user(session: Session, username: str, role: str, password: str) -> User:
    """A new user; :class:`UserError` for a bad name, role or password, or a taken name."""
    if not _NAME.match(username):
        raise UserError(f"username {username!r}: 1 to 64 letters, digits or _ . @ + -")
    if role not in ROLES:
        raise UserError(f"role {role!r}: one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password must have at least {MIN_PASSWORD} characters")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise UserError(f"user {username} already exists")
    user = User(username=username, role=role, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    return user


def delete_user(session: Session, username: str) -> None:
    if not session.execute(delete(User).where(User.username == username)).rowcount:  # type: ignore[attr-defined]
        raise UserError(f"no user {username}")
