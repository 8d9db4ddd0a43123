"""The ``task_reschedule`` table: each time a sensor in reschedule mode gave its slot back."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKeyConstraint, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from squall.common.models.base import Base, UtcDateTime


class TaskReschedule(Base):
    __tablename__ = "task_reschedule"
    __table_args__ = (
        ForeignKeyConstraint(
            ["dag_id", "task_id", "run_id", "map_index"],
            ["task_instance.dag_id", "task_instance.task_id", "task_instance.run_id",
             "task_instance.map_index"],
            ondelete="CASCADE",
        ),
        Index("ix_task_reschedule_ti", "dag_id", "task_id", "run_id", "map_index", "try_number"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dag_id: Mapped[str] = mapped_column(String(250), nullable=False)
    task_id: Mapped[str] = mapped_column(String(250), nullable=False)
    run_id: Mapped[str] = mapped_column(String(250), nullable=False)
    map_index: Mapped[int] = mapped_column(Integer, nullable=False, default=-1,
                                           server_default="-1")
    try_number: Mapped[int] = mapped_column(Integer, nullable=False)
    start_date: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    end_date: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    duration: Mapped[float] = mapped_column(Float, nullable=False)
    reschedule_date: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
