"""The ``callback_request`` table: user callbacks waiting to run in the DAG processor."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from squall.common.models.base import Base, UtcDateTime, utcnow


class CallbackRequest(Base):
    """A user callback to run where DAG files are parsed (the DAG processor), never in the
    scheduler: a zombie's ``on_failure_callback`` / ``on_retry_callback``, a task whose
    process died, or a finished run's DAG-level ``on_success_callback`` /
    ``on_failure_callback``. Claimed by setting ``processed_at`` (at most once)."""

    __tablename__ = "callback_request"
    __table_args__ = (Index("ix_callback_request_processed_at", "processed_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow)
    dag_id: Mapped[str] = mapped_column(String(250), nullable=False)
    fileloc: Mapped[str] = mapped_column(String(2000), nullable=False)
    #: a :class:`squall.execution.callbacks.CallbackKind` value
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    run_id: Mapped[str] = mapped_column(String(250), nullable=False)
    task_id: Mapped[str | None] = mapped_column(String(250))
    try_number: Mapped[int | None] = mapped_column(Integer)
    #: why: the failure reason, or the run's outcome
    message: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    def __repr__(self) -> str:
        return (f"<CallbackRequest {self.id} {self.kind} {self.dag_id} {self.run_id} "
                f"{self.task_id} try={self.try_number}>")
