"""The ``connection`` table: how to reach external systems (Airflow's connections)."""

from __future__ import annotations

from sqlalchemy import Boolean, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from squall.common.models.base import Base

#: the longest conn_id (Airflow's ``ID_LEN``)
MAX_CONN_ID = 250


class ConnectionModel(Base):
    """One connection. ``password`` and ``extra`` are Fernet-encrypted when
    ``is_encrypted`` / ``is_extra_encrypted``; read them through
    :mod:`squall.secrets.connections`."""

    __tablename__ = "connection"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conn_id: Mapped[str] = mapped_column(String(MAX_CONN_ID), unique=True, nullable=False)
    conn_type: Mapped[str] = mapped_column(String(500), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    host: Mapped[str | None] = mapped_column(String(500))
    schema: Mapped[str | None] = mapped_column(String(500))
    login: Mapped[str | None] = mapped_column(Text)
    password: Mapped[str | None] = mapped_column(Text)
    port: Mapped[int | None] = mapped_column(Integer)
    extra: Mapped[str | None] = mapped_column(Text)
    is_encrypted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    is_extra_encrypted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)

    def __repr__(self) -> str:  # never the password
        return f"<Connection {self.conn_id} {self.conn_type}>"
