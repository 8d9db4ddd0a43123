"""The ``serialized_dag`` table: each DAG's structure as JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from squall.common.models.base import Base, UtcDateTime, utcnow


class SerializedDagModel(Base):
    """The structure of a DAG as the DAG processor last parsed it (JSON), so that schedulers
    and the API never import user code."""

    __tablename__ = "serialized_dag"

    dag_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    fileloc: Mapped[str] = mapped_column(String(2000), nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    dag_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    last_updated: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow)
