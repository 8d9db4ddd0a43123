"""The ``job`` table: the processes that heartbeat."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from squall.common.models.base import Base, UtcDateTime, utcnow
from squall.common.state import JobState


class Job(Base):
    """A long-running process that heartbeats: a scheduler or a LocalTaskJob supervisor."""

    __tablename__ = "job"
    __table_args__ = (Index("ix_job_type_state_heartbeat", "job_type", "state",
                            "latest_heartbeat"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_type: Mapped[str] = mapped_column(String(30), nullable=False)
    state: Mapped[str] = mapped_column(String(20), nullable=False, default=JobState.RUNNING)
    hostname: Mapped[str | None] = mapped_column(String(500))
    pid: Mapped[int | None] = mapped_column(Integer)
    dag_id: Mapped[str | None] = mapped_column(String(250))
    start_date: Mapped[datetime | None] = mapped_column(UtcDateTime, default=utcnow)
    end_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    latest_heartbeat: Mapped[datetime | None] = mapped_column(UtcDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.job_type} {self.state} {self.hostname}:{self.pid}>"
