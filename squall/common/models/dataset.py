"""The dataset tables: data-aware scheduling as in Airflow 2.4-2.10.

A ``dataset`` row per URI a DAG file names (in a schedule or in a task's outlets); aliases
(``dataset_alias``) resolved to datasets when an event names one; the references from a
consumer DAG's schedule and from a producer task's outlets; the recorded changes
(``dataset_event``); a consumer's events not yet taken by a run (``dataset_dag_run_queue``);
and the events each dataset-triggered run was created from (``dagrun_dataset_event``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from squall.common.models.base import Base, UtcDateTime, utcnow


class DatasetModel(Base):
    __tablename__ = "dataset"
    __table_args__ = (UniqueConstraint("uri"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uri: Mapped[str] = mapped_column(String(3000), nullable=False)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow,
                                                 onupdate=utcnow)
    #: no DAG names it any more (kept for its events)
    is_orphaned: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False,
                                              server_default=false())

    def __repr__(self) -> str:
        return f"<Dataset {self.id} {self.uri}>"


class DatasetAliasModel(Base):
    __tablename__ = "dataset_alias"
    __table_args__ = (UniqueConstraint("name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(3000), nullable=False)


#: which datasets an alias has resolved to (one row per alias and dataset)
dataset_alias_dataset = Table(
    "dataset_alias_dataset",
    Base.metadata,
    Column("alias_id", Integer, ForeignKey("dataset_alias.id", ondelete="CASCADE"),
           primary_key=True),
    Column("dataset_id", Integer, ForeignKey("dataset.id", ondelete="CASCADE"),
           primary_key=True),
)


class DagScheduleDatasetReference(Base):
    """A consumer DAG's schedule names this dataset."""

    __tablename__ = "dag_schedule_dataset_reference"

    dataset_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True)
    dag_id: Mapped[str] = mapped_column(
        String(250), ForeignKey("dag.dag_id", ondelete="CASCADE"), primary_key=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow)


class DagScheduleDatasetAliasReference(Base):
    """A consumer DAG's schedule names this alias."""

    __tablename__ = "dag_schedule_dataset_alias_reference"

    alias_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("dataset_alias.id", ondelete="CASCADE"), primary_key=True)
    dag_id: Mapped[str] = mapped_column(
        String(250), ForeignKey("dag.dag_id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow)


class TaskOutletDatasetReference(Base):
    """A producer task lists this dataset in its outlets."""

    __tablename__ = "task_outlet_dataset_reference"

    dataset_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True)
    dag_id: Mapped[str] = mapped_column(
        String(250), ForeignKey("dag.dag_id", ondelete="CASCADE"), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(250), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow)


class DatasetEvent(Base):
    """One recorded change of a dataset: by a task's successful try (``source_*`` set), or
    created from outside through the API (``source_*`` empty)."""

    __tablename__ = "dataset_event"
    __table_args__ = (
        Index("ix_dataset_event_dataset_id_timestamp", "dataset_id", "timestamp"),
        # one event per dataset per successful try: a repeated outcome write adds none
        Index("ix_dataset_event_source_try", "dataset_id", "source_dag_id", "source_task_id",
              "source_run_id", "source_map_index", "source_try_number", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[int] = mapped_column(Integer, nullable=False)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    source_dag_id: Mapped[str | None] = mapped_column(String(250))
    source_task_id: Mapped[str | None] = mapped_column(String(250))
    source_run_id: Mapped[str | None] = mapped_column(String(250))
    source_map_index: Mapped[int | None] = mapped_column(Integer, default=-1,
                                                         server_default="-1")
    source_try_number: Mapped[int | None] = mapped_column(Integer)
    #: the aliases the producing task attached the event through (``outlet_events[alias]``)
    source_alias_names: Mapped[list[str] | None] = mapped_column(JSON)
    timestamp: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow)

    def __repr__(self) -> str:
        return f"<DatasetEvent {self.id} dataset={self.dataset_id} {self.timestamp}>"


class DatasetDagRunQueue(Base):
    """A consumer DAG has an event of this dataset that no run has taken yet."""

    __tablename__ = "dataset_dag_run_queue"

    dataset_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True)
    target_dag_id: Mapped[str] = mapped_column(
        String(250), ForeignKey("dag.dag_id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, default=utcnow)


#: the events a dataset-triggered run was created from
dagrun_dataset_event = Table(
    "dagrun_dataset_event",
    Base.metadata,
    Column("dag_run_id", Integer, ForeignKey("dag_run.id", ondelete="CASCADE"),
           primary_key=True),
    Column("event_id", Integer, ForeignKey("dataset_event.id", ondelete="CASCADE"),
           primary_key=True, index=True),
)
