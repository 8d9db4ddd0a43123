"""Dataset rows for scheduler tests: a consumer DAG's condition and references, written
directly, and events recorded as the API or a producing task records them.

:func:`make_consumer` writes what the DAG processor's sync writes for a DAG file with a
dataset schedule (``dag.dataset_expression``, ``dataset``, ``dag_schedule_dataset_reference``
and ``..._alias_reference`` rows) onto a synced ``dag`` row, so that a scheduler-level test
states its condition in one line, including conditions no DAG file can give (a malformed
expression). The cluster tests use real ``schedule=[Dataset(...)]`` DAG files.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from squall.common.db import SessionFactory, is_postgres, session_scope
from squall.common.models import (
    DagModel,
    DagScheduleDatasetAliasReference,
    DagScheduleDatasetReference,
    DatasetAliasModel,
    DatasetModel,
    TaskInstanceKey,
)
from squall.runs.datasets import record_dataset_event


def make_consumer(factory: SessionFactory, dag_id: str, expression: Any,
                  uris: Iterable[str] = (), aliases: Iterable[str] = ()) -> None:
    """Make the synced DAG ``dag_id`` a consumer of ``uris`` / ``aliases`` with the
    condition ``expression`` (Airflow's serialized form). Commits."""
    with session_scope(factory) as session:
        insert = postgresql.insert if is_postgres(session) else sqlite.insert
        session.execute(update(DagModel).where(DagModel.dag_id == dag_id)
                        .values(dataset_expression=expression))
        for uri in uris:
            session.execute(insert(DatasetModel).values(uri=uri, extra={})
                            .on_conflict_do_nothing())
            dataset_id = session.scalar(select(DatasetModel.id)
                                        .where(DatasetModel.uri == uri))
            session.execute(insert(DagScheduleDatasetReference)
                            .values(dataset_id=dataset_id, dag_id=dag_id)
                            .on_conflict_do_nothing())
        for name in aliases:
            session.execute(insert(DatasetAliasModel).values(name=name)
                            .on_conflict_do_nothing())
            alias_id = session.scalar(select(DatasetAliasModel.id)
                                      .where(DatasetAliasModel.name == name))
            session.execute(insert(DagScheduleDatasetAliasReference)
                            .values(alias_id=alias_id, dag_id=dag_id)
                            .on_conflict_do_nothing())


def known_dataset(factory: SessionFactory, uri: str) -> None:
    """A ``dataset`` row for ``uri`` (a producer's outlet names it). Commits."""
    with session_scope(factory) as session:
        insert = postgresql.insert if is_postgres(session) else sqlite.insert
        session.execute(insert(DatasetModel).values(uri=uri, extra={})
                        .on_conflict_do_nothing())


def emit(factory: SessionFactory, uri: str, *, extra: dict[str, Any] | None = None,
         source: TaskInstanceKey | None = None, try_number: int | None = None,
         alias_names: Iterable[str] = (), timestamp: datetime | None = None) -> int:
    """Record an event of ``uri`` (:func:`record_dataset_event`) and commit; its id."""
    with session_scope(factory) as session:
        event = record_dataset_event(session, uri=uri, extra=extra, source=source,
                                     try_number=try_number, alias_names=alias_names,
                                     timestamp=timestamp)
        assert event is not None, f"no event recorded for {uri}"
        return event.id
