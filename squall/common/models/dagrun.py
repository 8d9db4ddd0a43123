"""The ``dag_run`` table."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    select,
    tuple_,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

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


def lock_runs(session: Session, runs: Iterable[tuple[str, str]]) -> None:
    """Lock the ``dag_run`` rows of ``runs`` (``(dag_id, run_id)``) ``FOR UPDATE``, in id
    order, before changing their task instances from outside the scheduler (clear, mark).

    The scheduler locks a run's row before it reads the run's task instances, changes them
    and decides the run. A change that takes the row first waits for a decision under way
    and keeps the next one from starting (the scheduler skips locked rows): without it the
    two deadlock (each waiting for the rows the other changed), or the scheduler finishes
    the run from task states read before the change, which is then lost. SQLite serializes
    writers, and renders no ``FOR UPDATE``.
    """
    keys = sorted(set(runs))
    if keys:
        session.execute(select(DagRun.id)
                        .where(tuple_(DagRun.dag_id, DagRun.run_id).in_(keys))
                        .order_by(DagRun.id).with_for_update())
