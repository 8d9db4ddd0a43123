"""The ``dag_run`` table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from squall.common.models.base import Base, UtcDateTime, utcnow
from squall.common.state import DagRunState, DagRunType


class DagRun(Base):
    __tablename__ = "dag_run"
    __table_args__ = (
        UniqueConstraint("dag_id", "run_id"),
        UniqueConstraint("dag_id", "logical_date"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dag_id: Mapped[str] = mapped_column(
        String(250), ForeignKey("dag.dag_id", ondelete="CASCADE"), nullable=False
    )
    run_id: Mapped[str] = mapped_column(String(250), nullable=False)
    run_type: Mapped[str] = mapped_column(String(50), nullable=False, default=DagRunType.MANUAL)
    logical_date: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    data_interval_start: Mapped[datetime | None] = mapped_column(UtcDateTime)
    data_interval_end: Mapped[datetime | None] = mapped_column(UtcDateTime)
    state: Mapped[str] = mapped_column(
        String(50), nullable=False, default=DagRunState.QUEUED, index=True
    )
    conf: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    external_trigger: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    queued_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=utcnow)
    start_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    end_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_scheduling_decision: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: the backfill that created this run (run_type ``backfill``), else ``None``
    backfill_id: Mapped[int | None] = mapped_column(Integer, index=True)
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=utcnow,
                                                        onupdate=utcnow)

    def __repr__(self) -> str:
        return f"<DagRun {self.dag_id} {self.run_id} {self.state}>"
