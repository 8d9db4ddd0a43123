"""The scheduler's watch over task instances in flight (step 9 of the design).

Every function works in the caller's session (the caller commits) and changes a task
instance only by compare-and-set, so a try that moved on meanwhile (finished, started,
cleared) is never touched:

* :func:`fail_zombies`: RUNNING task instances whose supervisor (``job_id``) has not
  heartbeated for ``[scheduler] zombie_threshold`` seconds, or whose job row is gone or no
  longer running, become UP_FOR_RETRY or FAILED (CAS on RUNNING, try number and job id;
  :func:`fail_zombie` for one candidate of :func:`zombie_candidates`).
* :func:`end_stale_restarting`: RESTARTING task instances (a running try stopped by
  ``squall tasks clear``) whose supervisor is gone, ended or has not heartbeated for
  ``[scheduler] zombie_threshold`` seconds go to ``none`` (the supervisor usually does this
  itself once the try's processes are gone), so none stays RESTARTING.
* :func:`fail_stuck_queued`: QUEUED for longer than ``[scheduler] task_queued_timeout``
  (by ``queued_dttm``) become UP_FOR_RETRY or FAILED (CAS on QUEUED, try number and Celery
  task id); the caller revokes their Celery tasks, best effort.
* :func:`adopt_orphans`: QUEUED / RUNNING task instances queued by a scheduler whose job
  row is not running or whose heartbeat is older than ``[scheduler]
  scheduler_health_check_threshold`` are taken over (``queued_by_job_id`` guarded by its
  old value); the caller tracks them in its executor by their Celery task ids.
* :func:`reset_adopted`: adopted task instances whose Celery task stayed PENDING past
  ``[celery] task_adoption_timeout`` and that are still QUEUED go back to SCHEDULED (same
  try, Celery task id cleared), so they are queued again under a new id; a late copy of the
  old message is refused by the worker's compare-and-set on the id.
* :func:`time_out_deferred`: DEFERRED task instances past their ``trigger_timeout`` go to
  SCHEDULED with ``next_method="__fail__"`` and ``next_kwargs={"error": "Trigger/execution
  timeout"}`` (CAS on DEFERRED and try number: a trigger firing at the same moment wins or
  loses as a whole), their trigger rows deleted, as Airflow's ``check_trigger_timeouts``;
  the same try then fails on a worker (``TaskDeferralError``, retried per ``retries``).
* :func:`clean_unused_triggers`: ``trigger`` rows no DEFERRED task instance waits on any
  more (its task instance was cleared, marked, skipped by a timed-out run or a
  ``fail_stop``, or is gone) are deleted, and task instances no longer deferred let go of
  their ``trigger_id`` (Airflow's ``Trigger.clean_unused``). A triggerer holding a deleted
  trigger stops it; an event it fires anyway finds no DEFERRED task instance to move.
* :func:`tries_over`: the Celery task ids the executor tracks whose try is over in the
  database (the task instance is no longer QUEUED, RUNNING or RESTARTING under that id and
  try); the caller stops tracking them. A try that ends normally stores no Celery result
  (ADR 22), so this is how the scheduler lets go of it: usually at once, from the task
  instances the run's decision has just read (:func:`tries_over_in`, no query of its
  own); this query, every ``zombie_detection_interval``, is the backstop for the tries of
  runs not decided (a paused DAG's, a run finished by hand, a DAG with no usable
  serialized version). Without it each such try would hold one of ``[core]
  parallelism``'s slots for as long as the scheduler lives.

A zombie and a try stuck in QUEUED are ended by
:func:`~squall.execution.outcome.fail_try`, like a try whose worker died before starting it
(:mod:`squall.scheduler.job`): the retry policy, the reason, the metric, and, since task
callbacks are user code and never run in the scheduler, for a task with an
``on_failure_callback`` / ``on_retry_callback`` a ``callback_request`` row inserted in the
transaction of the compare-and-set that failed it (only when that won); the DAG processor
runs it (:mod:`squall.scheduler.callback_runner`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, exists, inspect, or_, select, tuple_, update
from sqlalchemy.orm import Session

from squall.common.metrics import (
    ADOPTION_RESET,
    ORPHANS_CLEARED,
    QUEUED_TIMEOUT,
    TASKS_ADOPTED,
    ZOMBIES_KILLED,
    Metrics,
)
from squall.common.models import (
    Job,
    TaskInstance,
    TaskInstanceKey,
    Trigger,
    compare_and_set_state,
)
from squall.common.state import (
    ADOPTABLE_STATES,
    HELD_BY_EXECUTOR_STATES,
    TRIGGER_FAIL_METHOD,
    TRIGGER_TIMEOUT_ERROR,
    JobState,
    TaskInstanceState,
)
from squall.common.wakeup import notify_scheduler
from squall.execution.deferral import delete_triggers
from squall.execution.outcome import fail_try
from squall.execution.restart import REASON_RESTARTED, end_restart
from squall.sdk.dag import DAG

log = logging.getLogger(__name__)

TI = TaskInstanceState


@dataclass(frozen=True)
class Adopted:
    """A try taken over from a dead scheduler, to be tracked by its Celery task id."""

    key: TaskInstanceKey
    try_number: int
    external_executor_id: str
    state: TaskInstanceState


def zombie_candidates(session: Session, *, now: datetime, threshold: float
                      ) -> list[tuple[TaskInstance, Job | None]]:
    """RUNNING task instances (with a supervisor job id) whose job is stale, gone or ended."""
    limit = now - timedelta(seconds=threshold)
    rows = session.execute(
        select(TaskInstance, Job).outerjoin(Job, Job.id == TaskInstance.job_id)
        .where(TaskInstance.state == TI.RUNNING.value, TaskInstance.job_id.is_not(None),
               or_(Job.id.is_(None), Job.state != JobState.RUNNING.value,
                   Job.latest_heartbeat.is_(None), Job.latest_heartbeat < limit))
        .order_by(TaskInstance.dag_id, TaskInstance.task_id, TaskInstance.run_id)
        .execution_options(populate_existing=True)
    ).all()
    return [(row[0], row[1]) for row in rows]


def fail_zombies(session: Session, dags: Mapping[str, DAG], *, now: datetime,
                 threshold: float, metrics: Metrics) -> int:
    """Fail or retry every zombie (see the module docstring); how many were changed."""
    return sum(fail_zombie(session, ti, job, dags, now=now, threshold=threshold,
                           metrics=metrics)
               for ti, job in zombie_candidates(session, now=now, threshold=threshold))


def fail_zombie(session: Session, ti: TaskInstance, job: Job | None, dags: Mapping[str, DAG],
                *, now: datetime, threshold: float, metrics: Metrics) -> bool:
    """Fail or retry one candidate of :func:`zombie_candidates` (``ti`` as read, with its
    ``job``), with :func:`~squall.execution.outcome.fail_try` (compare-and-set on RUNNING,
    its try number and job id; its callback requested in the same transaction); whether it
    won (False: the try moved on since it was read, and is left alone)."""
    if job is None:
        where = f"job {ti.job_id} is gone"
    elif job.state != JobState.RUNNING:
        where = f"job {job.id} on host {job.hostname} is {job.state}"
    else:
        where = f"job {job.id} on host {job.hostname}"
    reason = f"zombie: supervisor heartbeat older than {threshold:g} s ({where})"
    return fail_try(session, ti, dags, reason=reason, metric=ZOMBIES_KILLED, now=now,
                    metrics=metrics) is not None


def end_stale_restarting(session: Session, *, now: datetime, threshold: float) -> int:
    """Move RESTARTING task instances whose supervisor job is gone, ended or stale (older
    than ``threshold`` seconds), or that have none, to ``none`` (compare-and-set on
    RESTARTING, try number and job id); how many."""
    limit = now - timedelta(seconds=threshold)
    rows = session.execute(
        select(TaskInstance.dag_id, TaskInstance.task_id, TaskInstance.run_id,
               TaskInstance.map_index, TaskInstance.try_number, TaskInstance.job_id,
               Job.id.label("found"))
        .outerjoin(Job, Job.id == TaskInstance.job_id)
        .where(TaskInstance.state == TI.RESTARTING.value,
               or_(Job.id.is_(None), Job.state != JobState.RUNNING.value,
                   Job.latest_heartbeat.is_(None), Job.latest_heartbeat < limit))
        .order_by(TaskInstance.dag_id, TaskInstance.task_id, TaskInstance.run_id)
    ).all()
    moved = 0
    for row in rows:
        key = TaskInstanceKey(row.dag_id, row.task_id, row.run_id, row.map_index)
        why = ("no supervisor" if row.job_id is None
               else f"job {row.job_id} is gone" if row.found is None
               else f"job {row.job_id} ended or has not heartbeated for {threshold:g} s")
        moved += end_restart(session, key, try_number=row.try_number, job_id=row.job_id,
                             now=now, reason=f"{REASON_RESTARTED} ({why})")
    return moved


def fail_stuck_queued(session: Session, dags: Mapping[str, DAG], *, now: datetime,
                      timeout: float, metrics: Metrics) -> list[str]:
    """Fail or retry task instances QUEUED for longer than ``timeout`` seconds; the Celery
    task ids of those changed (to revoke)."""
    limit = now - timedelta(seconds=timeout)
    stuck = session.scalars(
        select(TaskInstance).where(TaskInstance.state == TI.QUEUED.value,
                                   TaskInstance.queued_dttm.is_not(None),
                                   TaskInstance.queued_dttm < limit)
        .order_by(TaskInstance.dag_id, TaskInstance.task_id, TaskInstance.run_id)
        .execution_options(populate_existing=True)
    ).all()
    revoke: list[str] = []
    reason = f"queued for more than {timeout:g} s (task_queued_timeout)"
    for ti in stuck:
        if (fail_try(session, ti, dags, reason=reason, metric=QUEUED_TIMEOUT, now=now,
                     metrics=metrics) is not None and ti.external_executor_id):
            revoke.append(ti.external_executor_id)
    return revoke


def adopt_orphans(session: Session, *, job_id: int, now: datetime, threshold: float,
                  metrics: Metrics) -> list[Adopted]:
    """Take over the in-flight task instances of dead schedulers (see the module
    docstring); those with a Celery task id, to track. Ones without an id cannot be
    tracked: QUEUED ones go back to SCHEDULED (``scheduler.orphaned_tasks.cleared``)."""
    limit = now - timedelta(seconds=threshold)
    rows = session.execute(
        select(TaskInstance.dag_id, TaskInstance.task_id, TaskInstance.run_id,
               TaskInstance.map_index, TaskInstance.try_number, TaskInstance.state,
               TaskInstance.external_executor_id,
               TaskInstance.queued_by_job_id)
        .outerjoin(Job, Job.id == TaskInstance.queued_by_job_id)
        .where(TaskInstance.state.in_([s.value for s in ADOPTABLE_STATES]),
               TaskInstance.queued_by_job_id.is_not(None),
               TaskInstance.queued_by_job_id != job_id,
               or_(Job.id.is_(None), Job.state != JobState.RUNNING.value,
                   Job.latest_heartbeat.is_(None), Job.latest_heartbeat < limit))
        .order_by(TaskInstance.dag_id, TaskInstance.task_id, TaskInstance.run_id)
    ).all()
    adopted: list[Adopted] = []
    for row in rows:
        key = TaskInstanceKey(row.dag_id, row.task_id, row.run_id, row.map_index)
        if not row.external_executor_id:
            if row.state == TI.QUEUED and compare_and_set_state(
                    session, key, expected=TI.QUEUED, try_number=row.try_number,
                    new_state=TI.SCHEDULED, queued_dttm=None, queued_by_job_id=None,
                    state_reason=f"orphaned by scheduler job {row.queued_by_job_id} with no "
                                 "Celery task id; queued again"):
                metrics.incr(ORPHANS_CLEARED)
                log.warning("TaskInstance %s: try %d: orphaned without a Celery task id; "
                            "back to scheduled", key, row.try_number)
            continue
        result = session.execute(
            update(TaskInstance).where(
                TaskInstance.dag_id == key.dag_id, TaskInstance.task_id == key.task_id,
                TaskInstance.run_id == key.run_id, TaskInstance.map_index == key.map_index,
                TaskInstance.try_number == row.try_number,
                TaskInstance.state.in_([s.value for s in ADOPTABLE_STATES]),
                TaskInstance.queued_by_job_id == row.queued_by_job_id,
            ).values(queued_by_job_id=job_id).execution_options(synchronize_session=False))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            continue  # another scheduler adopted it, or it moved on
        adopted.append(Adopted(key, row.try_number, row.external_executor_id, TI(row.state)))
        log.info("TaskInstance %s: try %d (%s): adopted from scheduler job %d (Celery task "
                 "%s)", key, row.try_number, row.state, row.queued_by_job_id,
                 row.external_executor_id)
    if adopted:
        metrics.incr(TASKS_ADOPTED, len(adopted))
    return adopted


def reset_adopted(session: Session, timed_out: Iterable[tuple[TaskInstanceKey, int, str]],
                  *, timeout: float, metrics: Metrics) -> int:
    """Adopted tries whose Celery task stayed PENDING past ``timeout`` and that are still
    QUEUED under that id: back to SCHEDULED (same try, id cleared); how many."""
    reset = 0
    reason = (f"adopted, but its Celery task stayed PENDING for more than {timeout:g} s "
              "(task_adoption_timeout); queued again")
    for key, try_number, external_executor_id in timed_out:
        if compare_and_set_state(session, key, expected=TI.QUEUED, try_number=try_number,
                                 new_state=TI.SCHEDULED,
                                 expected_external_executor_id=external_executor_id,
                                 external_executor_id=None, queued_dttm=None,
                                 queued_by_job_id=None, state_reason=reason):
            reset += 1
            metrics.incr(ADOPTION_RESET)
            log.warning("TaskInstance %s: try %d: %s", key, try_number, reason)
        else:
            log.debug("TaskInstance %s: try %d: adoption timeout, but the row moved on",
                      key, try_number)
    return reset


def time_out_deferred(session: Session, *, now: datetime) -> int:
    """DEFERRED task instances whose ``trigger_timeout`` has passed go to SCHEDULED, to
    fail on a worker (see the module docstring); how many."""
    rows = session.execute(
        select(TaskInstance.dag_id, TaskInstance.task_id, TaskInstance.run_id,
               TaskInstance.map_index, TaskInstance.try_number, TaskInstance.trigger_id,
               TaskInstance.trigger_timeout)
        .where(TaskInstance.state == TI.DEFERRED.value,
               TaskInstance.trigger_timeout.is_not(None), TaskInstance.trigger_timeout < now)
        .order_by(TaskInstance.dag_id, TaskInstance.task_id, TaskInstance.run_id)
    ).all()
    moved = 0
    for row in rows:
        key = TaskInstanceKey(row.dag_id, row.task_id, row.run_id, row.map_index)
        if not compare_and_set_state(
                session, key, expected=TI.DEFERRED, try_number=row.try_number,
                new_state=TI.SCHEDULED, trigger_id=None, next_method=TRIGGER_FAIL_METHOD,
                next_kwargs={"error": TRIGGER_TIMEOUT_ERROR},
                state_reason=f"its trigger did not fire by {row.trigger_timeout.isoformat()} "
                             "(trigger or execution timeout)"):
            continue  # fired, cleared or marked meanwhile
        delete_triggers(session, [row.trigger_id])
        moved += 1
        log.warning("TaskInstance %s: try %d: deferred past its trigger timeout (%s); "
                    "scheduled to fail", key, row.try_number, row.trigger_timeout.isoformat())
    if moved:
        notify_scheduler(session, "trigger timeouts")
    return moved


def clean_unused_triggers(session: Session) -> int:
    """Delete the trigger rows no DEFERRED task instance waits on, and clear the
    ``trigger_id`` of task instances no longer deferred (see the module docstring); how
    many rows were deleted. A trigger row is inserted with its task instance's move to
    DEFERRED in one transaction, so a new one is never taken for unused."""
    session.execute(
        update(TaskInstance)
        .where(TaskInstance.trigger_id.is_not(None), TaskInstance.state != TI.DEFERRED.value)
        .values(trigger_id=None).execution_options(synchronize_session=False))
    waited_on = exists().where(and_(TaskInstance.trigger_id == Trigger.id,
                                    TaskInstance.state == TI.DEFERRED.value))
    result = session.execute(delete(Trigger).where(~waited_on)
                             .execution_options(synchronize_session=False))
    deleted = int(getattr(result, "rowcount", 0) or 0)
    if deleted:
        log.info("watchdog: deleted %d trigger(s) no deferred task instance waits on",
                 deleted)
    return deleted


#: task instance keys per statement of :func:`tries_over`
_KEYS_PER_STATEMENT = 500


def tries_over_in(tis: Iterable[TaskInstance],
                  tracked: Mapping[str, Sequence[tuple[str, int]]]) -> list[str]:
    """Of ``tracked`` (task id -> the (Celery task id, try number) pairs tracked for one
    run), the Celery task ids whose try ``tis`` (that run's task instances, as just read)
    show over: the task instance is no longer QUEUED, RUNNING or RESTARTING under that id
    and try. A task instance not among ``tis``, or expired (not loaded), says nothing."""
    # a mapped task's instances share its task id: a tracked try is over when none of
    # them holds it; a task with an instance not loaded says nothing
    held: set[tuple[str, str | None, int]] = set()
    loaded: set[str] = set()
    unknown: set[str] = set()
    for ti in tis:
        values = ti.__dict__
        if "state" not in values or "external_executor_id" not in values:
            identity = inspect(ti).identity  # (dag_id, task_id, run_id, map_index)
            unknown.add(str(identity[1]) if identity else values.get("task_id", ""))
            continue
        loaded.add(ti.task_id)
        if ti.state in HELD_BY_EXECUTOR_STATES:
            held.add((ti.task_id, ti.external_executor_id, ti.try_number))
    over: list[str] = []
    for task_id, entries in tracked.items():
        if task_id not in loaded or task_id in unknown:
            continue
        over.extend(ext_id for ext_id, try_number in entries
                    if (task_id, ext_id, try_number) not in held)
    return over


def tries_over(session: Session, in_flight: Mapping[str, tuple[TaskInstanceKey, int]]
               ) -> list[str]:
    """Of ``in_flight`` (Celery task id -> (key, try number), the executor's), the ids whose
    task instance is gone or no longer QUEUED, RUNNING or RESTARTING under that id and try
    number: the worker has recorded the try's end (or the try was queued again under
    another id), so nothing waits for their Celery result any more."""
    by_key: dict[tuple[str, str, str], list[tuple[str, int]]] = {}
    for ext_id, (key, try_number) in in_flight.items():
        by_key.setdefault((key.dag_id, key.task_id, key.run_id), []).append(
            (ext_id, try_number))
    keys = sorted(by_key)
    alive: set[str] = set()
    states = sorted(s.value for s in HELD_BY_EXECUTOR_STATES)
    for start in range(0, len(keys), _KEYS_PER_STATEMENT):
        chunk = keys[start:start + _KEYS_PER_STATEMENT]
        rows = session.execute(
            select(TaskInstance.dag_id, TaskInstance.task_id, TaskInstance.run_id,
                   TaskInstance.try_number, TaskInstance.external_executor_id)
            .where(tuple_(TaskInstance.dag_id, TaskInstance.task_id,
                          TaskInstance.run_id).in_(chunk),
                   TaskInstance.state.in_(states))
        ).all()
        for row in rows:
            for ext_id, try_number in by_key[(row.dag_id, row.task_id, row.run_id)]:
                if row.external_executor_id == ext_id and row.try_number == try_number:
                    alive.add(ext_id)
    return [ext_id for ext_id in in_flight if ext_id not in alive]
