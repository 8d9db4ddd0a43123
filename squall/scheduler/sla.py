"""SLA misses: tasks that did not succeed within their ``sla``, recorded and notified by the
DAG processor.

A task's ``sla`` (a timedelta) is counted, as in Airflow 2, from the moment its scheduled
run could start: a task instance of a **scheduled** run misses it when it has not succeeded
(or been skipped) by the run's ``data_interval_end + sla``. Manual and backfill runs are not
checked (Airflow does not check manually triggered runs either).

:class:`SlaChecker` runs in the DAG processor (after each parse pass and every couple of
seconds while it waits, ``[core] check_slas``) and never in the scheduler loop. Each check
costs one query for the DAGs' hashes, plus, for each active unpaused DAG that has a task
with an ``sla``, one query for its misses; the DAG's serialized JSON is read only when its
hash changed. It looks at runs whose deadline passed within :data:`SLA_LOOKBACK`.

* A miss is recorded once: one ``sla_miss`` row per DAG, task and logical date, inserted
  with ``ON CONFLICT DO NOTHING`` (several processors may find it at once).
* When the DAG has an ``sla_miss_callback`` or a task with an ``sla`` has ``email``, the
  processor then claims the DAG's misses that were not notified yet (setting
  ``notification_sent`` in the claiming transaction, so each is notified at most once) and
  runs a forked child with ``[scheduler] callback_timeout`` that imports the DAG file, calls
  ``sla_miss_callback(dag, task_list, blocking_task_list, slas, blocking_tis)`` with
  Airflow 2's arguments and then e-mails the tasks' ``email`` addresses (setting
  ``email_sent``). A callback that raises or times out, or an e-mail that cannot be sent, is
  logged and not retried, and changes no task instance or run (ADR 8).
"""

from __future__ import annotations

import html
import logging
import signal
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from squall.common.db import (
    SessionFactory,
    is_postgres,
    make_engine,
    make_session_factory,
    session_scope,
)
from squall.common.errors import EmailError
from squall.common.models import (
    DagModel,
    DagRun,
    SerializedDagModel,
    SlaMiss,
    TaskInstance,
    utcnow,
)
from squall.common.procutil import child_process_context, flush_std_streams, stop_child
from squall.common.settings import Settings
from squall.common.state import SLA_MET_STATES, DagRunType, TaskInstanceState
from squall.scheduler.callback_runner import load_dag_from_file
from squall.sdk.email import get_email_address_list, send_email

log = logging.getLogger(__name__)

#: How far back (past a deadline) a check looks for runs that missed it.
SLA_LOOKBACK = timedelta(days=1)
#: Seconds between two checks of one processor.
SLA_CHECK_INTERVAL = 5.0



@dataclass(frozen=True)
class SlaDag:
    """What the check needs of a DAG, read from its serialized JSON (no user code)."""

    dag_id: str
    fileloc: str
    slas: Mapping[str, timedelta]  # task_id -> sla, only tasks that have one
    emails: Mapping[str, tuple[str, ...]]  # task_id -> its addresses, for those tasks
    has_callback: bool

    @property
    def notifies(self) -> bool:
        return self.has_callback or any(self.emails.values())


def sla_dag_from_serialized(data: Mapping[str, Any], fileloc: str) -> SlaDag | None:
    """The SLA view of a serialized DAG; None when no task has an ``sla``."""
    d = data.get("dag") or {}
    slas: dict[str, timedelta] = {}
    emails: dict[str, tuple[str, ...]] = {}
    for t in d.get("tasks") or []:
        if t.get("sla") is None:
            continue
        slas[t["task_id"]] = timedelta(seconds=float(t["sla"]))
        emails[t["task_id"]] = tuple(get_email_address_list(t.get("email")))
    if not slas:
        return None
    return SlaDag(dag_id=d["dag_id"], fileloc=fileloc, slas=slas, emails=emails,
                  has_callback=bool(d.get("has_sla_miss_callback")))


@dataclass(frozen=True)
class Miss:
    """An SLA miss, detached from any session."""

    dag_id: str
    task_id: str
    execution_date: datetime
    run_id: str
    deadline: datetime


def find_misses(session: Session, sla: SlaDag, now: datetime,
                lookback: timedelta = SLA_LOOKBACK) -> list[Miss]:
    """The task instances of ``sla``'s scheduled runs that missed their SLA by ``now`` and
    are not recorded yet (deadlines within ``lookback`` before ``now``)."""
    shortest, longest = min(sla.slas.values()), max(sla.slas.values())
    rows = session.execute(
        select(DagRun.run_id, DagRun.logical_date, DagRun.data_interval_end,
               TaskInstance.task_id, TaskInstance.state, TaskInstance.end_date)
        .join(TaskInstance, and_(TaskInstance.dag_id == DagRun.dag_id,
                                 TaskInstance.run_id == DagRun.run_id))
        .outerjoin(SlaMiss, and_(SlaMiss.dag_id == DagRun.dag_id,
                                 SlaMiss.task_id == TaskInstance.task_id,
                                 SlaMiss.execution_date == DagRun.logical_date))
        .where(DagRun.dag_id == sla.dag_id,
               DagRun.run_type == DagRunType.SCHEDULED.value,
               TaskInstance.task_id.in_(sorted(sla.slas)),
               SlaMiss.task_id.is_(None),
               DagRun.data_interval_end.is_not(None),
               DagRun.data_interval_end <= now - shortest,
               DagRun.data_interval_end >= now - longest - lookback)
    ).all()
    misses = []
    seen: set[tuple[str, str]] = set()
    for run_id, logical_date, interval_end, task_id, state, end_date in rows:
        assert interval_end is not None
        deadline: datetime = interval_end + sla.slas[task_id]
        if deadline > now or deadline < now - lookback:
            continue
        if state in SLA_MET_STATES and end_date is not None and end_date <= deadline:
            continue  # it made it
        if (task_id, run_id) in seen:
            continue  # another instance of the same mapped task: one miss per task
        seen.add((task_id, run_id))
        misses.append(Miss(dag_id=sla.dag_id, task_id=task_id, execution_date=logical_date,
                           run_id=run_id, deadline=deadline))
    return misses


def record_misses(session: Session, misses: Iterable[Miss], now: datetime) -> int:
    """Insert the misses that are not recorded yet; how many were new."""
    insert = postgresql.insert if is_postgres(session) else sqlite.insert
    added = 0
    for miss in misses:
        stmt = insert(SlaMiss).values(
            dag_id=miss.dag_id, task_id=miss.task_id, execution_date=miss.execution_date,
            run_id=miss.run_id, deadline=miss.deadline, timestamp=now, email_sent=False,
            notification_sent=False,
            description=f"{miss.task_id} did not succeed by {miss.deadline.isoformat()}",
        ).on_conflict_do_nothing()
        result = session.execute(stmt)
        if result.rowcount:  # type: ignore[attr-defined]
            added += 1
            log.warning("SLA miss: %s.%s in run %s had not succeeded by %s", miss.dag_id,
                        miss.task_id, miss.run_id, miss.deadline.isoformat())
    return added


def claim_unnotified(session: Session, dag_id: str) -> list[Miss]:
    """Claim the DAG's misses not notified yet, setting ``notification_sent``."""
    stmt = (select(SlaMiss).where(SlaMiss.dag_id == dag_id,
                                  SlaMiss.notification_sent.is_(False))
            .order_by(SlaMiss.execution_date, SlaMiss.task_id))
    if is_postgres(session):
        stmt = stmt.with_for_update(skip_locked=True)
    claimed = []
    for row in session.scalars(stmt).all():
        result = session.execute(
            update(SlaMiss).where(SlaMiss.dag_id == row.dag_id, SlaMiss.task_id == row.task_id,
                                  SlaMiss.execution_date == row.execution_date,
                                  SlaMiss.notification_sent.is_(False))
            .values(notification_sent=True).execution_options(synchronize_session=False))
        if result.rowcount == 1:  # type: ignore[attr-defined]
            claimed.append(Miss(dag_id=row.dag_id, task_id=row.task_id,
                                execution_date=row.execution_date, run_id=row.run_id,
                                deadline=row.deadline))
    return claimed


class SlaChecker:
    """The DAG processor's SLA check (see the module docstring)."""

    def __init__(self, settings: Settings, session_factory: SessionFactory, *,
                 interval: float = SLA_CHECK_INTERVAL) -> None:
        self._settings = settings
        self._factory = session_factory
        self._interval = interval
        self._last: datetime | None = None
        self._dags: dict[str, tuple[str, SlaDag | None]] = {}  # dag_id -> (hash, view)

    def check_if_due(self, now: datetime | None = None) -> int:
        now = now or utcnow()
        if self._last is not None and (now - self._last).total_seconds() < self._interval:
            return 0
        return self.check(now)

    def check(self, now: datetime | None = None) -> int:
        """Record new misses and notify the unnotified ones; how many misses were new."""
        now = now or utcnow()
        self._last = now
        added = 0
        for sla in self._sla_dags():
            with session_scope(self._factory) as session:
                added += record_misses(session, find_misses(session, sla, now), now)
                # nothing to notify: left unclaimed, as Airflow leaves them
                claimed = claim_unnotified(session, sla.dag_id) if sla.notifies else []
            if claimed:
                notify_in_child(self._settings, sla, claimed,
                                timeout=self._settings.scheduler.callback_timeout)
        return added

    def _sla_dags(self) -> list[SlaDag]:
        with session_scope(self._factory) as session:
            rows = session.execute(
                select(SerializedDagModel.dag_id, SerializedDagModel.dag_hash)
                .join(DagModel, DagModel.dag_id == SerializedDagModel.dag_id)
                .where(DagModel.is_active.is_(True), DagModel.is_paused.is_(False))).all()
            hashes = dict(rows)
            for dag_id, dag_hash in hashes.items():
                known = self._dags.get(dag_id)
                if known is not None and known[0] == dag_hash:
                    continue
                row = session.execute(
                    select(SerializedDagModel.data, SerializedDagModel.fileloc)
                    .where(SerializedDagModel.dag_id == dag_id)).one_or_none()
                view = None
                if row is not None:
                    try:
                        view = sla_dag_from_serialized(row.data, row.fileloc)
                    except (KeyError, TypeError, ValueError) as exc:
                        log.warning("DAG %s: cannot read its SLAs from serialized_dag: %s",
                                    dag_id, exc)
                self._dags[dag_id] = (dag_hash, view)
        for gone in set(self._dags) - set(hashes):
            del self._dags[gone]
        return [view for _, view in self._dags.values() if view is not None]


# --------------------------------------------------------------------------- notification


def notify_in_child(settings: Settings, sla: SlaDag, misses: list[Miss], *,
                    timeout: float) -> bool:
    """Run :func:`notify` in a forked child killed after ``timeout`` s; whether it ran
    fine."""
    ctx = child_process_context()
    process = ctx.Process(target=_child_main, args=(settings, sla, misses),  # type: ignore[attr-defined]
                          name=f"squall-sla-{sla.dag_id}", daemon=True)
    process.start()
    what = f"DAG {sla.dag_id}: SLA miss notification ({len(misses)} miss(es))"
    if not stop_child(process, timeout):
        log.error("%s: timed out after %g s (callback_timeout); killed, not retried", what,
                  timeout)
        return False
    if process.exitcode != 0:
        log.error("%s: failed (exit code %s, see the log above); not retried", what,
                  process.exitcode)
        return False
    return True


def _child_main(settings: Settings, sla: SlaDag, misses: list[Miss]) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    code = 1
    engine = make_engine(settings.sql_alchemy_conn, pool_size=1, max_overflow=1)
    try:
        code = 0 if notify(settings, make_session_factory(engine), sla, misses) else 1
    except Exception:
        log.exception("DAG %s: the SLA miss notification failed; nothing else changes",
                      sla.dag_id)
    finally:
        engine.dispose()
        flush_std_streams()
    sys.exit(code)


def notify(settings: Settings, session_factory: SessionFactory, sla: SlaDag,
           misses: list[Miss]) -> bool:
    """Import the DAG file, call ``sla_miss_callback`` with Airflow 2's arguments, then
    e-mail; whether everything that was due went fine (user code: only in a child of the
    DAG processor)."""
    dag = load_dag_from_file(settings, sla.fileloc, sla.dag_id)
    with session_scope(session_factory) as session:
        slas = list(session.scalars(select(SlaMiss).where(
            SlaMiss.dag_id == sla.dag_id,
            SlaMiss.execution_date.in_([m.execution_date for m in misses]),
            SlaMiss.task_id.in_(sorted({m.task_id for m in misses})))
            .order_by(SlaMiss.execution_date, SlaMiss.task_id)))
        slas = [s for s in slas if any(
            (s.task_id, s.execution_date) == (m.task_id, m.execution_date) for m in misses)]
        blocking_tis = list(session.scalars(select(TaskInstance).where(
            TaskInstance.dag_id == sla.dag_id,
            TaskInstance.run_id.in_(sorted({m.run_id for m in misses})),
            TaskInstance.state != TaskInstanceState.SUCCESS.value)
            .order_by(TaskInstance.run_id, TaskInstance.task_id)))
        session.expunge_all()
    dates = {m.run_id: m.execution_date for m in misses}
    for ti in blocking_tis:
        # Airflow's TaskInstance has them; callbacks written for it read them
        ti.execution_date = dates[ti.run_id]  # type: ignore[attr-defined]
        ti.task = dag.task_dict.get(ti.task_id)  # type: ignore[attr-defined]
    task_list = "\n".join(f"{s.task_id} on {s.execution_date.isoformat()}" for s in slas)
    blocking_task_list = "\n".join(f"{ti.task_id} on {dates[ti.run_id].isoformat()}"
                                   for ti in blocking_tis)
    ok = True
    if dag.sla_miss_callback is not None:
        try:
            dag.sla_miss_callback(dag, task_list, blocking_task_list, slas, blocking_tis)
            log.info("DAG %s: ran sla_miss_callback for %d miss(es)", dag.dag_id, len(slas))
        except Exception:
            ok = False
            log.exception("DAG %s: sla_miss_callback raised; not retried", dag.dag_id)
    emails: list[str] = []
    for s in slas:
        task = dag.task_dict.get(s.task_id)
        for address in get_email_address_list(getattr(task, "email", None)):
            if address not in emails:
                emails.append(address)
    if emails:
        name = "airflow" if settings.core.airflow_compat else "squall"
        try:
            send_email(emails, f"[{name}] SLA miss on DAG={dag.dag_id}",
                       sla_email_content(task_list, blocking_task_list), smtp=settings.smtp)
        except EmailError as exc:
            ok = False
            log.error("DAG %s: the SLA miss e-mail was not sent: %s", dag.dag_id, exc)
        else:
            with session_scope(session_factory) as session:
                for s in slas:
                    session.execute(update(SlaMiss).where(
                        SlaMiss.dag_id == s.dag_id, SlaMiss.task_id == s.task_id,
                        SlaMiss.execution_date == s.execution_date).values(email_sent=True))
    return ok


def sla_email_content(task_list: str, blocking_task_list: str) -> str:
    """Airflow 2's SLA miss e-mail."""
    return ("Here's a list of tasks that missed their SLAs:\n"
            f"<pre><code>{html.escape(task_list)}\n</code></pre>\n"
            "Blocking tasks:\n"
            f"<pre><code>{html.escape(blocking_task_list)}\n</code></pre>\n")
