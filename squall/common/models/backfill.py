"""The ``backfill`` table: a request to run a DAG over a range of past logical dates."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from squall.common.models.base import Base, UtcDateTime, utcnow
from squall.common.state import BackfillState


class Backfill(Base):
    """``squall dags backfill DAG_ID -s FROM -e TO``: the scheduler creates the DAG's
    backfill runs for the logical dates of the range (oldest first, newest first when
    ``run_backwards``), at most ``max_active_runs`` unfinished at a time, and marks the
    backfill finished when they all are.

    ``options`` holds Airflow's remaining backfill options by name (``mark_success``,
    ``rerun_failed_tasks``, ``reset_dagruns``, ``task_regex``,
    ``ignore_first_depends_on_past``, ``ignore_dependencies``, ``pool``,
    ``delay_on_limit``)."""

    __tablename__ = "backfill"
    __table_args__ = (Index("ix_backfill_state", "state"),
                      Index("ix_backfill_dag_id", "dag_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dag_id: Mapped[str] = mapped_column(String(250), nullable=False)
    from_date: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    to_date: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    run_backwards: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    max_active_runs: Mapped[int] = mapped_column(Integer, nullable=False)
    conf: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    options: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: a :class:`squall.common.state.BackfillState` value
    state: Mapped[str] = mapped_column(String(20), nullable=False,
                                       default=BackfillState.QUEUED)
    #: how many runs the backfill creates (known when it is planned)
    total_runs: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: why it ended when it did not simply run out of runs (the deadlock report, a cancel)
    reason: Mapped[str | None] = mapped_column(Text)
    #: since when the scheduler has found it unable to make progress (``None``: it is not)
    stalled_since: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: since when it has had ``max_active_runs`` unfinished runs (``--delay-on-limit``)
    limit_reached_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    def __repr__(self) -> str:
        return f"<Backfill {self.id} {self.dag_id} {self.state}>"
