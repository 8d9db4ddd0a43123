"""The ``dag`` table: one row per DAG the DAG bag has seen."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from squall.common.models.base import Base, UtcDateTime


class DagModel(Base):
    __tablename__ = "dag"

    dag_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    is_paused: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    fileloc: Mapped[str] = mapped_column(String(2000), nullable=False)
    owners: Mapped[str | None] = mapped_column(String(2000))
    description: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str] | None] = mapped_column(JSON)
    schedule: Mapped[str | None] = mapped_column(String(1000))
    timetable_description: Mapped[str | None] = mapped_column(String(1000))
    max_active_runs: Mapped[int | None] = mapped_column(Integer)
    max_active_tasks: Mapped[int] = mapped_column(Integer, nullable=False, default=16)
    has_import_errors: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    last_parsed_time: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: logical date and data interval of the next scheduled run, and when it may be created
    next_dagrun: Mapped[datetime | None] = mapped_column(UtcDateTime)
    next_dagrun_data_interval_start: Mapped[datetime | None] = mapped_column(UtcDateTime)
    next_dagrun_data_interval_end: Mapped[datetime | None] = mapped_column(UtcDateTime)
    next_dagrun_create_after: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: a dataset schedule's condition, Airflow's ``as_expression()``: a URI string (one
    #: dataset), ``{"all": [...]}``, ``{"any": [...]}`` or ``{"alias": name}``; None for
    #: a schedule without datasets (squall.runs.dataset_conditions reads it)
    dataset_expression: Mapped[Any] = mapped_column(JSON, nullable=True)

    def __repr__(self) -> str:
        return f"<DagModel {self.dag_id} paused={self.is_paused} active={self.is_active}>"
