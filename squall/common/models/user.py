"""The ``squall_user`` table: who may use the REST API and the web UI, and in what role."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from squall.common.models.base import Base, UtcDateTime, utcnow


class User(Base):
    """A user of ``squall api``: ``role`` is ``viewer``, ``op`` or ``admin``;
    ``password_hash`` is a salted scrypt hash (:mod:`squall.api.passwords`), never the
    password."""

    __tablename__ = "squall_user"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    password_hash: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow)
    last_login: Mapped[datetime | None] = mapped_column(UtcDateTime)

    def __repr__(self) -> str:
        return f"<User {self.username} {self.role}>"
