"""Smaller tables: job, slot_pool, import_error, xcom, task_reschedule, serialized_dag,
callback_request."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from squall.common.models.base import Base, UtcDateTime, utcnow
from squall.common.state import JobState

DEFAULT_POOL = "default_pool"


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


class Pool(Base):
    __tablename__ = "slot_pool"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pool: Mapped[str] = mapped_column(String(256), unique=True, nullable=False)
    slots: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    description: Mapped[str | None] = mapped_column(Text)


class ImportError_(Base):  # noqa: N801 - ImportError is a builtin
    """A DAG file that failed to load, with a readable message."""

    __tablename__ = "import_error"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    filename: Mapped[str] = mapped_column(String(2000), nullable=False)
    stacktrace: Mapped[str] = mapped_column(Text, nullable=False)
    timestamp: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow)


class XCom(Base):
    __tablename__ = "xcom"
    __table_args__ = (
        ForeignKeyConstraint(
            ["dag_id", "run_id"], ["dag_run.dag_id", "dag_run.run_id"], ondelete="CASCADE"
        ),
    )

    dag_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    #: the JSON text of the value
    value: Mapped[str] = mapped_column(Text, nullable=False)
    timestamp: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow)


class TaskReschedule(Base):
    __tablename__ = "task_reschedule"
    __table_args__ = (
        ForeignKeyConstraint(
            ["dag_id", "task_id", "run_id"],
            ["task_instance.dag_id", "task_instance.task_id", "task_instance.run_id"],
            ondelete="CASCADE",
        ),
        Index("ix_task_reschedule_ti", "dag_id", "task_id", "run_id", "try_number"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dag_id: Mapped[str] = mapped_column(String(250), nullable=False)
    task_id: Mapped[str] = mapped_column(String(250), nullable=False)
    run_id: Mapped[str] = mapped_column(String(250), nullable=False)
    try_number: Mapped[int] = mapped_column(Integer, nullable=False)
    start_date: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    end_date: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    duration: Mapped[float] = mapped_column(Float, nullable=False)
    reschedule_date: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


class SerializedDagModel(Base):
    """The structure of a DAG as the DAG processor last parsed it (JSON), so that schedulers
    and the API never import user code."""

    __tablename__ = "serialized_dag"

    dag_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    fileloc: Mapped[str] = mapped_column(String(2000), nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    dag_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    last_updated: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow)


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
