"""Recording a parse in the database, and rebuilding DAGs from it.

:func:`sync_to_db` writes a :class:`~squall.dag_processing.dagbag.ParseResult` to the ``dag``,
``serialized_dag`` and ``import_error`` tables; :func:`load_serialized_dags` rebuilds DAGs
(with stand-in tasks) from ``serialized_dag``, so schedulers never import user code (ADR 3).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pendulum
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from squall.common.models import DagModel, DagRun, ImportError_, SerializedDagModel
from squall.common.state import DagRunType
from squall.dag_processing.serialization import SerializationError, dag_hash, deserialize_dag
from squall.sdk.dag import DAG
from squall.sdk.timetables import DataInterval

if TYPE_CHECKING:
    from squall.dag_processing.dagbag import ParseResult

log = logging.getLogger(__name__)


def _last_automated_interval(session: Session, dag_id: str) -> DataInterval | None:
    run = session.scalars(
        select(DagRun)
        .where(
            DagRun.dag_id == dag_id,
            DagRun.run_type.in_([DagRunType.SCHEDULED.value, DagRunType.BACKFILL.value]),
        )
        .order_by(DagRun.logical_date.desc())
        .limit(1)
    ).first()
    if run is None:
        return None
    start = run.data_interval_start or run.logical_date
    end = run.data_interval_end or start
    return DataInterval(pendulum.instance(start), pendulum.instance(end))


_TIMING_KEYS = ("schedule", "start_date", "end_date", "catchup", "timezone")


def _timing(data: dict[str, Any] | None) -> tuple[Any, ...] | None:
    if data is None:
        return None
    d = data.get("dag") or {}
    return tuple(json.dumps(d.get(k), sort_keys=True) for k in _TIMING_KEYS)


def sync_to_db(
    session: Session,
    result: ParseResult,
    *,
    paused_at_creation: bool,
    now: datetime,
    known_files: Collection[str] | None = None,
) -> None:
    """Record ``result`` in the ``dag``, ``serialized_dag`` and ``import_error`` tables.

    * every DAG parsed gets its ``dag`` row created or updated (``is_active``, parse time,
      settings); a new row is paused if ``DAG(is_paused_upon_creation=...)`` says so, else
      if ``paused_at_creation``; ``is_paused`` of an existing row is never changed;
    * ``serialized_dag`` is only rewritten when the DAG's hash changed;
    * the ``import_error`` rows of the parsed files are replaced by one row per broken file,
      and the ``dag`` rows of a broken file get ``has_import_errors``;
    * DAGs whose file parsed cleanly but no longer defines them become inactive (those of a
      broken file stay as they were);
    * ``next_dagrun``: computed when it is NULL or when the DAG's schedule, start or end date,
      catchup or time zone changed, from the latest scheduled run if there is one;
    * with ``known_files`` (every DAG file there is), DAGs of other files become inactive
      and import errors of other files are deleted.

    Flushes; the caller commits. ``now`` must be timezone-aware.
    """
    if now.tzinfo is None:
        raise ValueError("sync_to_db needs a timezone-aware `now`")
    pnow = pendulum.instance(now)
    parsed = set(result.files_parsed)
    broken = set(result.import_errors)
    import_errors = dict(result.import_errors)
    dag_ids = list(result.serialized)

    rows: dict[str, DagModel] = {}
    if dag_ids or parsed:
        conditions = []
        if dag_ids:
            conditions.append(DagModel.dag_id.in_(dag_ids))
        if parsed:
            conditions.append(DagModel.fileloc.in_(sorted(parsed)))
        rows = {m.dag_id: m for m in session.scalars(select(DagModel).where(or_(*conditions)))}
    serialized_rows: dict[str, SerializedDagModel] = {}
    if dag_ids:
        serialized_rows = {
            s.dag_id: s
            for s in session.scalars(
                select(SerializedDagModel).where(SerializedDagModel.dag_id.in_(dag_ids))
            )
        }

    written: set[str] = set()
    for dag_id, data in result.serialized.items():
        fileloc = data["dag"]["fileloc"]
        try:
            dag = deserialize_dag(data)
        except SerializationError as exc:
            message = f"Broken DAG file {fileloc}:\nSerializationError: {exc}"
            old = import_errors.get(fileloc)
            import_errors[fileloc] = f"{old}\n{message}" if old else message
            broken.add(fileloc)
            continue
        written.add(dag_id)
        row = rows.get(dag_id)
        if row is None:
            upon_creation = data["dag"].get("is_paused_upon_creation")
            row = DagModel(
                dag_id=dag_id,
                is_paused=bool(paused_at_creation if upon_creation is None else upon_creation),
                fileloc=fileloc,
            )
            session.add(row)
            rows[dag_id] = row
        row.fileloc = fileloc
        row.owners = dag.owner or None
        row.description = dag.description
        row.tags = list(dag.tags)
        row.schedule = dag.timetable.summary
        row.timetable_description = dag.timetable.description
        row.max_active_runs = dag.max_active_runs
        row.max_active_tasks = dag.max_active_tasks
        row.is_active = True
        row.last_parsed_time = now
        row.has_import_errors = fileloc in broken
        row.params = data["dag"].get("params") or {}

        new_hash = dag_hash(data)
        stored = serialized_rows.get(dag_id)
        timing_changed = stored is not None and _timing(stored.data) != _timing(data)
        if stored is None:
            session.add(SerializedDagModel(dag_id=dag_id, fileloc=fileloc, data=data,
                                           dag_hash=new_hash, last_updated=now))
        elif stored.dag_hash != new_hash:
            stored.data = data
            stored.dag_hash = new_hash
            stored.fileloc = fileloc
            stored.last_updated = now

        if (row.next_dagrun is None and dag.timetable.can_be_scheduled) or timing_changed:
            info = dag.timetable.next_dagrun_info(
                last_automated_data_interval=_last_automated_interval(session, dag_id),
                start_date=dag.start_date,
                end_date=dag.end_date,
                catchup=dag.catchup,
                now=pnow,
            )
            row.next_dagrun = info.logical_date if info else None
            row.next_dagrun_data_interval_start = info.data_interval.start if info else None
            row.next_dagrun_data_interval_end = info.data_interval.end if info else None
            row.next_dagrun_create_after = info.run_after if info else None

    for dag_id, row in rows.items():
        if dag_id in written or row.fileloc not in parsed:
            continue
        if row.fileloc in broken:
            row.has_import_errors = True
        elif row.is_active:
            log.info("DAG %s is no longer defined in %s: deactivating it", dag_id, row.fileloc)
            row.is_active = False

    if parsed or import_errors:
        stale = parsed | set(import_errors)
        for old_error in session.scalars(
            select(ImportError_).where(ImportError_.filename.in_(sorted(stale)))
        ):
            session.delete(old_error)
    for filename, message in sorted(import_errors.items()):
        session.add(ImportError_(filename=filename, stacktrace=message, timestamp=now))

    if known_files is not None:
        known = {os.path.abspath(f) for f in known_files}
        for row in session.scalars(select(DagModel).where(DagModel.is_active.is_(True))):
            if row.fileloc not in known and row.dag_id not in written:
                log.info("the file of DAG %s (%s) is gone: deactivating it", row.dag_id,
                         row.fileloc)
                row.is_active = False
        for old_error in session.scalars(select(ImportError_)):
            if old_error.filename not in known:
                session.delete(old_error)
    session.flush()


def load_serialized_dags(
    session: Session, dag_ids: Iterable[str] | None = None, *, only_active: bool = False
) -> dict[str, DAG]:
    """DAGs rebuilt from ``serialized_dag`` (all, or those of ``dag_ids``), by dag_id.

    With ``only_active``, only DAGs whose ``dag`` row is active. A row that cannot be
    deserialized is logged and left out.
    """
    stmt = select(SerializedDagModel)
    if dag_ids is not None:
        stmt = stmt.where(SerializedDagModel.dag_id.in_(list(dag_ids)))
    if only_active:
        stmt = stmt.join(DagModel, DagModel.dag_id == SerializedDagModel.dag_id).where(
            DagModel.is_active.is_(True)
        )
    out: dict[str, DAG] = {}
    for row in session.scalars(stmt.order_by(SerializedDagModel.dag_id)):
        try:
            out[row.dag_id] = deserialize_dag(row.data)
        except SerializationError as exc:
            log.warning("cannot rebuild DAG %s from serialized_dag: %s", row.dag_id, exc)
    return out
