"""The ``log`` table: the audit log, as Airflow 2's ``log`` table (its REST API's
``eventLogs``): who did what to which DAG, run or task, and when."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from squall.common.models.base import Base, UtcDateTime, utcnow


class AuditLog(Base):
    """One action taken by a person or a program: a trigger, a clear, a mark, a pause, a
    backfill, a change to a variable or a connection. Written in the action's own
    transaction by :func:`squall.runs.audit.record_event`, so an action that rolls back leaves
    no entry and an entry always names an action that happened."""

    __tablename__ = "log"
    __table_args__ = (
        Index("ix_log_dttm", "dttm"),
        Index("ix_log_dag_id_event", "dag_id", "event"),
        Index("ix_log_event", "event"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: when the action was taken
    dttm: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow)
    dag_id: Mapped[str | None] = mapped_column(String(250))
    task_id: Mapped[str | None] = mapped_column(String(250))
    map_index: Mapped[int | None] = mapped_column(Integer)
    #: what was done, in Airflow's words where it has them (``trigger``, ``clear``, ``paused``,
    #: ``variable.edit``, ...): see :mod:`squall.runs.audit`
    event: Mapped[str] = mapped_column(String(60), nullable=False)
    #: the run's logical date, when the action was on one run
    execution_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    run_id: Mapped[str | None] = mapped_column(String(250))
    #: who: the API or UI user's name, or ``cli:<os user>`` for the command line
    owner: Mapped[str | None] = mapped_column(String(500))
    owner_display_name: Mapped[str | None] = mapped_column(String(500))
    #: what else the action said, as JSON text (secrets masked)
    extra: Mapped[str | None] = mapped_column(Text)
    try_number: Mapped[int | None] = mapped_column(Integer)

    @property
    def logical_date(self) -> datetime | None:
        return self.execution_date

    def __repr__(self) -> str:
        return f"<AuditLog {self.id} {self.event} {self.dag_id} by {self.owner}>"
