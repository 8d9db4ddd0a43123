"""The ``sla_miss`` table: task instances that did not succeed within their task's ``sla``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from squall.common.models.base import Base, UtcDateTime, utcnow


class SlaMiss(Base):
    """A task that had not succeeded (or been skipped) by its run's ``data_interval_end``
    plus its ``sla``: one row per task and logical date, as Airflow 2's ``sla_miss``.

    Recorded by the DAG processor (:mod:`squall.scheduler.sla`); ``notification_sent`` is
    set when the processor takes the miss for the DAG's ``sla_miss_callback`` and the
    e-mail (at most once), ``email_sent`` when the e-mail went out.
    """

    __tablename__ = "sla_miss"
    __table_args__ = (Index("ix_sla_miss_dag_id_notification_sent", "dag_id",
                            "notification_sent"),)

    task_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    dag_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    #: the run's logical date (Airflow's name for it)
    execution_date: Mapped[datetime] = mapped_column(UtcDateTime, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(250), nullable=False)
    #: when the task had to have succeeded: the run's data_interval_end + sla
    deadline: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    #: when the miss was recorded
    timestamp: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow)
    email_sent: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    notification_sent: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    description: Mapped[str | None] = mapped_column(Text)

    @property
    def logical_date(self) -> datetime:
        return self.execution_date

    def __repr__(self) -> str:
        return (f"<SlaMiss {self.dag_id}.{self.task_id} {self.run_id} "
                f"deadline={self.deadline.isoformat()}>")
