"""The ``variable`` table: Airflow-style variables, key -> text value."""

from __future__ import annotations

from sqlalchemy import Boolean, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from squall.common.models.base import Base

#: the longest variable key (Airflow's ``ID_LEN``)
MAX_KEY = 250


class VariableModel(Base):
    """One variable. ``val`` is Fernet-encrypted when ``is_encrypted`` (see
    :mod:`squall.secrets.fernet`); read it through :mod:`squall.secrets.variables`."""

    __tablename__ = "variable"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(MAX_KEY), unique=True, nullable=False)
    val: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    is_encrypted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)

    def __repr__(self) -> str:  # never the value
        return f"<Variable {self.key}>"
