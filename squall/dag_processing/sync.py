"""Recording a parse in the database, and rebuilding DAGs from it.

:func:`sync_to_db` writes a :class:`~squall.dag_processing.dagbag.ParseResult` to the ``dag``,
``serialized_dag``, ``import_error`` and ``dag_file`` tables; :func:`load_serialized_dags`
rebuilds DAGs (with stand-in tasks) from ``serialized_dag``, so schedulers never import user
code (ADR 3).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pendulum
from sqlalchemy import delete, null, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from squall.common.db import is_postgres
from squall.common.models import DagFile, DagModel, DagRun, ImportError_, SerializedDagModel
from squall.common.state import DagRunType
from squall.dag_processing.dataset_sync import (
    DagDatasets,
    dag_datasets,
    resolved_aliases,
    sync_datasets,
)
from squall.dag_processing.serialization import SerializationError, dag_hash, deserialize_dag
from squall.sdk.dag import DAG
from squall.sdk.timetables import DataInterval

if TYPE_CHECKING:
    from squall.dag_processing.dagbag import FileStat, ParseResult

log = logging.getLogger(__name__)

#: key of the PostgreSQL advisory lock that serialises writers of the DAG tables
_SYNC_LOCK_KEY = 0x5351_4C44  # "SQLD"


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
) -> set[str]:
    """Record ``result`` in the ``dag``, ``serialized_dag`` and ``import_error`` tables.

    * every DAG parsed gets its ``dag`` row created or updated (``is_active``, parse time,
      settings); a new row is paused if ``DAG(is_paused_upon_creation=...)`` says so, else
      if ``paused_at_creation``; ``is_paused`` of an existing row is never changed;
    * ``serialized_dag`` is only rewritten when the DAG's hash changed;
    * the ``import_error`` rows of the parsed files are replaced by one row per broken file,
      and the ``dag`` rows of a broken file get ``has_import_errors``;
    * DAGs whose file parsed cleanly but no longer defines them become inactive (those of a
      broken file stay as they were);
    * the datasets the new or changed DAGs name: ``dataset`` / ``dataset_alias`` rows, the
      schedule and outlet references, ``dag.dataset_expression``, orphaning
      (:mod:`squall.dag_processing.dataset_sync`);
    * ``next_dagrun``: computed when it is NULL or when the DAG's schedule, start or end date,
      catchup or time zone changed, from the latest scheduled run if there is one;
    * with ``known_files`` (every DAG file there is), DAGs of other files become inactive
      and import errors of other files are deleted;
    * a dag_id whose active ``dag`` row belongs to another file that is in ``known_files``
      and was not parsed in this pass (so, as of its last parse, still defines it) stays
      with that file: the file parsed now gets the import error "dag_id X is already
      defined in <other file>" (without ``known_files`` the parsed file takes the row);
    * the files of ``result.unchanged`` (their answer was the one already recorded): their
      active DAGs get ``last_parsed_time = now`` (one UPDATE), their import errors stay;
    * every file of ``result.file_stats`` gets its ``dag_file`` row written (upserted);
      with ``known_files``, the rows of other files are deleted.

    Returns the unchanged files whose recorded answer no longer tells the whole story: one
    of the DAGs the file defines has no active row (it lost the dag_id to another file,
    which has now dropped it or is gone). Their DAGs were never decoded, so the caller must
    parse them again without their fingerprint (their ``dag_file.fingerprint`` is recorded
    empty). Flushes; the caller commits. ``now`` must be timezone-aware.

    Writers are serialised: on PostgreSQL the transaction first takes an advisory lock (held
    to its end), so the DAG processors of several schedulers and a CLI command recording the
    same new DAG never both insert its row; the second reads what the first committed. (A
    SQLite transaction that writes holds the database's write lock from its start, ADR 4.)
    """
    if now.tzinfo is None:
        raise ValueError("sync_to_db needs a timezone-aware `now`")
    if is_postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SYNC_LOCK_KEY})
    pnow = pendulum.instance(now)
    parsed = set(result.files_parsed)
    unchanged = set(result.unchanged) - parsed
    known = None if known_files is None else {os.path.abspath(f) for f in known_files}
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

    # A dag_id another known file still defines (as of its last parse) stays with it.
    held_elsewhere: set[str] = set()
    if known is not None:
        for dag_id, data in result.serialized.items():
            fileloc = data["dag"]["fileloc"]
            row = rows.get(dag_id)
            if (row is None or row.fileloc == fileloc or not row.is_active
                    or row.fileloc not in known or row.fileloc in parsed):
                continue
            from squall.dag_processing.dagbag import _duplicate_message

            message = _duplicate_message(dag_id, row.fileloc)
            old = import_errors.get(fileloc)
            import_errors[fileloc] = f"{old}\n{message}" if old else message
            broken.add(fileloc)
            held_elsewhere.add(dag_id)

    written: set[str] = set()
    #: the datasets named by the DAGs whose serialized form is new or changed
    changed_datasets: dict[str, DagDatasets] = {}
    for dag_id, data in result.serialized.items():
        if dag_id in held_elsewhere:
            continue
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
        named = dag_datasets(data)
        # SQL NULL, not a JSON null, for a schedule without datasets
        row.dataset_expression = named.expression if named.expression is not None else null()
        if named.expression is not None and row.schedule == "Unresolved DatasetAlias" \
                and resolved_aliases(session, named.schedule_aliases):
            row.schedule = "Dataset"  # Airflow resolves the alias when it parses the file

        new_hash = dag_hash(data)
        stored = serialized_rows.get(dag_id)
        timing_changed = stored is not None and _timing(stored.data) != _timing(data)
        if stored is None or stored.dag_hash != new_hash:
            changed_datasets[dag_id] = named
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
        replaced = parsed | set(import_errors)
        for old_error in session.scalars(
            select(ImportError_).where(ImportError_.filename.in_(sorted(replaced)))
        ):
            session.delete(old_error)
    for filename, message in sorted(import_errors.items()):
        session.add(ImportError_(filename=filename, stacktrace=message, timestamp=now))

    if known is not None:
        # columns only, and one UPDATE: every active DAG is looked at on each pass
        gone = sorted(
            (dag_id, fileloc) for dag_id, fileloc in session.execute(
                select(DagModel.dag_id, DagModel.fileloc).where(DagModel.is_active.is_(True)))
            if fileloc not in known and dag_id not in written
        )
        for dag_id, fileloc in gone:
            log.info("the file of DAG %s (%s) is gone: deactivating it", dag_id, fileloc)
        if gone:
            session.execute(update(DagModel)
                            .where(DagModel.dag_id.in_([dag_id for dag_id, _ in gone]))
                            .values(is_active=False))
        for old_error in session.scalars(select(ImportError_)):
            if old_error.filename not in known:
                session.delete(old_error)

    if changed_datasets:
        session.flush()  # new dag rows first: the references point at them
        sync_datasets(session, changed_datasets)

    stale = _touch_unchanged(session, result.file_stats, unchanged, now)
    _record_file_stats(session, result.file_stats, broken=broken, unchanged=unchanged,
                       stale=stale, now=now)
    if known is not None:
        session.execute(delete(DagFile).where(DagFile.fileloc.not_in(sorted(known))))
    session.flush()
    return stale


def _touch_unchanged(session: Session, stats: Mapping[str, FileStat], unchanged: set[str],
                     now: datetime) -> set[str]:
    """Set ``last_parsed_time`` of the unchanged files' active DAGs (one UPDATE); return the
    unchanged files one of whose DAGs has no active row (see :func:`sync_to_db`).

    When the UPDATE matched as many rows as the files define DAGs, every one of them is
    active and held by its file: nothing more is read.
    """
    if not unchanged:
        return set()
    touched = session.execute(
        update(DagModel)
        .where(DagModel.fileloc.in_(sorted(unchanged)), DagModel.is_active.is_(True))
        .values(last_parsed_time=now)
    ).rowcount  # type: ignore[attr-defined]
    defined = {path: stats[path].dag_ids for path in unchanged if path in stats}
    if touched == sum(len(ids) for ids in defined.values()):
        return set()
    wanted = sorted({dag_id for ids in defined.values() for dag_id in ids})
    active = set(session.scalars(
        select(DagModel.dag_id).where(DagModel.dag_id.in_(wanted), DagModel.is_active.is_(True))
    )) if wanted else set()
    stale = {path for path, ids in defined.items() if not set(ids) <= active}
    for path in sorted(stale):
        log.info("DAG file %s is unchanged but defines a DAG that has no active row (another "
                 "file held it): it must be parsed again in full", path)
    return stale


#: ``dag_file`` rows per INSERT statement (7 bound values each: well under SQLite's limit)
_STATS_CHUNK = 500


def _record_file_stats(session: Session, stats: Mapping[str, FileStat], *, broken: set[str],
                       unchanged: set[str], stale: set[str], now: datetime) -> None:
    """Upsert one ``dag_file`` row per file in ``stats``, a few hundred rows a statement.

    A parsed file has an import error when its child said so or when this sync gave it one
    (``broken``: a DAG it could not store, a dag_id another file holds); an unchanged file
    when its child said so or it still has an ``import_error`` row. A ``stale`` file's
    fingerprint is recorded empty (its answer must be decoded again).
    """
    if not stats:
        return
    still_broken: set[str] = set()
    if unchanged:
        still_broken = set(session.scalars(
            select(ImportError_.filename).where(ImportError_.filename.in_(sorted(unchanged)))
        ))
    values = [
        {"fileloc": path, "last_parsed_at": now, "last_duration": stat.duration,
         "dag_ids": list(stat.dag_ids), "task_count": stat.task_count,
         "has_import_error": bool(stat.error or path in broken or path in still_broken),
         "fingerprint": "" if path in stale else stat.fingerprint}
        for path, stat in sorted(stats.items())
    ]
    insert = postgresql.insert if is_postgres(session) else sqlite.insert
    stmt = insert(DagFile)
    stmt = stmt.on_conflict_do_update(
        index_elements=[DagFile.fileloc],
        set_={name: stmt.excluded[name] for name in
              ("last_parsed_at", "last_duration", "dag_ids", "task_count", "has_import_error",
               "fingerprint")},
    )
    # one executemany: SQLAlchemy sends it as multi-row INSERTs ("insertmanyvalues")
    session.execute(stmt, values)


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
