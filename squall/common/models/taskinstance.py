"""The ``task_instance`` table and its compare-and-set state change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from squall.common.models.base import Base, UtcDateTime, utcnow
from squall.common.state import TaskInstanceState

#: The ``state_reason`` column's length.
MAX_STATE_REASON = 2000


def clip_reason(reason: str) -> str:
    """``reason`` cut to what the ``state_reason`` column holds."""
    return reason[:MAX_STATE_REASON]


@dataclass(frozen=True, order=True)
class TaskInstanceKey:
    """Identifies one task instance; with a try number, one try of it."""

    dag_id: str
    task_id: str
    run_id: str
    #: -1 for a task that is not mapped; 0, 1, ... for the instances of a mapped task
    map_index: int = -1

    def __str__(self) -> str:
        if self.map_index < 0:
            return f"{self.dag_id}.{self.task_id}[{self.run_id}]"
        return f"{self.dag_id}.{self.task_id}[{self.run_id}][{self.map_index}]"


class TaskInstance(Base):
    __tablename__ = "task_instance"
    __table_args__ = (
        ForeignKeyConstraint(
            ["dag_id", "run_id"], ["dag_run.dag_id", "dag_run.run_id"], ondelete="CASCADE"
        ),
        Index("ix_task_instance_state_pool", "state", "pool"),
        Index("ix_task_instance_dag_run_state", "dag_id", "run_id", "state"),
        Index("ix_task_instance_job_id", "job_id"),
    )

    dag_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    #: -1 unless the task is mapped (Airflow's convention); part of the key
    map_index: Mapped[int] = mapped_column(Integer, primary_key=True, default=-1,
                                           server_default="-1")
    try_number: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    max_tries: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    state: Mapped[str] = mapped_column(String(20), nullable=False, default=TaskInstanceState.NONE)
    hostname: Mapped[str | None] = mapped_column(String(1000))
    pid: Mapped[int | None] = mapped_column(Integer)
    job_id: Mapped[int | None] = mapped_column(Integer)
    pool: Mapped[str] = mapped_column(String(256), nullable=False, default="default_pool")
    pool_slots: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    queue: Mapped[str] = mapped_column(String(256), nullable=False, default="default")
    priority_weight: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    operator: Mapped[str | None] = mapped_column(String(1000))
    queued_dttm: Mapped[datetime | None] = mapped_column(UtcDateTime)
    start_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    end_date: Mapped[datetime | None] = mapped_column(UtcDateTime)
    duration: Mapped[float | None] = mapped_column(Float)
    external_executor_id: Mapped[str | None] = mapped_column(String(250), index=True)
    queued_by_job_id: Mapped[int | None] = mapped_column(Integer)
    #: earliest time an UP_FOR_RETRY / UP_FOR_RESCHEDULE instance may be scheduled again
    next_retry_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    executor_config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: why the last state change happened when it was not the task's own doing
    state_reason: Mapped[str | None] = mapped_column(String(MAX_STATE_REASON))
    #: DEFERRED: the ``trigger`` row the instance waits on, and when the wait times out
    trigger_id: Mapped[int | None] = mapped_column(Integer, index=True)
    trigger_timeout: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: the method (and its arguments) a deferred instance resumes with on a worker
    next_method: Mapped[str | None] = mapped_column(String(1000))
    next_kwargs: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=utcnow,
                                                        onupdate=utcnow)

    @property
    def key(self) -> TaskInstanceKey:
        return TaskInstanceKey(self.dag_id, self.task_id, self.run_id, self.map_index)

    def __repr__(self) -> str:
        return f"<TaskInstance {self.key} try={self.try_number} {self.state}>"


def compare_and_set_state(
    session: Session,
    key: TaskInstanceKey,
    *,
    expected: TaskInstanceState | frozenset[TaskInstanceState],
    try_number: int | None,
    new_state: TaskInstanceState,
    expected_external_executor_id: str | None = None,
    expected_job_id: int | None = None,
    **values: Any,
) -> bool:
    """Move a task instance to ``new_state`` only if it is still as the caller saw it.

    Issues ``UPDATE task_instance SET state = :new ... WHERE <key> AND state = :expected
    AND try_number = :try`` (and ``external_executor_id = :id`` when
    ``expected_external_executor_id`` is given, ``job_id = :job`` when ``expected_job_id``
    is given) and reports
    whether exactly one row changed. A loser must not assume anything about the row: it was
    cleared, moved on, or finished by somebody else.
    """
    stmt = update(TaskInstance).where(
        TaskInstance.dag_id == key.dag_id,
        TaskInstance.task_id == key.task_id,
        TaskInstance.run_id == key.run_id,
        TaskInstance.map_index == key.map_index,
    )
    if isinstance(expected, frozenset):
        stmt = stmt.where(TaskInstance.state.in_([s.value for s in expected]))
    else:
        stmt = stmt.where(TaskInstance.state == expected.value)
    if try_number is not None:
        stmt = stmt.where(TaskInstance.try_number == try_number)
    if expected_external_executor_id is not None:
        stmt = stmt.where(TaskInstance.external_executor_id == expected_external_executor_id)
    if expected_job_id is not None:
        stmt = stmt.where(TaskInstance.job_id == expected_job_id)
    values.setdefault("updated_at", utcnow())
    result = session.execute(
        stmt.values(state=new_state.value, **values).execution_options(
            synchronize_session=False
        )
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
