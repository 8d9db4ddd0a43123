"""Task instance and DAG run states.

States are ``str`` enums so they compare equal to the strings stored in the database and
read naturally in logs. Code asks set questions (``state in FINISHED_STATES``) instead of
listing strings. A task instance that has never been looked at has the state ``NONE``
(stored as the string ``"none"``, never SQL NULL, so a compare-and-set on the state column
works the same for every state).
"""

from __future__ import annotations

from enum import StrEnum


class TaskInstanceState(StrEnum):
    NONE = "none"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    RESTARTING = "restarting"
    FAILED = "failed"
    SKIPPED = "skipped"
    UPSTREAM_FAILED = "upstream_failed"
    UP_FOR_RETRY = "up_for_retry"
    UP_FOR_RESCHEDULE = "up_for_reschedule"
    REMOVED = "removed"
    #: handed its wait to a triggerer (``BaseOperator.defer``); holds no worker slot
    DEFERRED = "deferred"


#: The ``next_method`` of a deferred task instance that must fail when it resumes (its
#: trigger raised, or it timed out): Airflow's ``__fail__``. ``next_kwargs["error"]`` says why.
TRIGGER_FAIL_METHOD = "__fail__"
#: ``next_kwargs["error"]`` of a deferred task instance whose trigger or execution timeout
#: passed before its trigger fired (Airflow's ``check_trigger_timeouts``).
TRIGGER_TIMEOUT_ERROR = "Trigger/execution timeout"


class DagRunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"


class DagRunType(StrEnum):
    MANUAL = "manual"
    SCHEDULED = "scheduled"
    BACKFILL = "backfill"
    #: created by the scheduler because the DAG's dataset condition held
    DATASET_TRIGGERED = "dataset_triggered"

    def generate_run_id(self, logical_date_iso: str) -> str:
        return f"{self.value}__{logical_date_iso}"


class BackfillState(StrEnum):
    """A backfill's state: ``queued`` until the scheduler creates its first run, ``running``
    while it has runs to create or unfinished runs, then ``success`` / ``failed`` (a run
    failed), or ``cancelled`` by ``squall backfills cancel``."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"


BACKFILL_ACTIVE_STATES: frozenset[BackfillState] = frozenset(
    {BackfillState.QUEUED, BackfillState.RUNNING})
BACKFILL_FINISHED_STATES: frozenset[BackfillState] = frozenset(
    {BackfillState.SUCCESS, BackfillState.FAILED, BackfillState.CANCELLED})


class JobState(StrEnum):
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"


TI = TaskInstanceState

#: A try that has ended and will not change again without a clear or a new try.
FINISHED_STATES: frozenset[TaskInstanceState] = frozenset(
    {TI.SUCCESS, TI.FAILED, TI.SKIPPED, TI.UPSTREAM_FAILED, TI.REMOVED}
)
#: Still has work ahead of it.
UNFINISHED_STATES: frozenset[TaskInstanceState] = frozenset(
    {
        TI.NONE,
        TI.SCHEDULED,
        TI.QUEUED,
        TI.RUNNING,
        TI.RESTARTING,
        TI.UP_FOR_RETRY,
        TI.UP_FOR_RESCHEDULE,
        TI.DEFERRED,
    }
)
#: Handed to an executor and not yet back: what a scheduler may adopt from a dead one.
ADOPTABLE_STATES: frozenset[TaskInstanceState] = frozenset({TI.QUEUED, TI.RUNNING})
#: Counted against pools and concurrency limits.
OCCUPYING_STATES: frozenset[TaskInstanceState] = frozenset({TI.QUEUED, TI.RUNNING})
#: Upstream outcomes that count as "succeeded" for trigger rules.
SUCCESS_LIKE_STATES: frozenset[TaskInstanceState] = frozenset({TI.SUCCESS})
#: Upstream outcomes that count as "failed" for trigger rules.
FAILED_LIKE_STATES: frozenset[TaskInstanceState] = frozenset({TI.FAILED, TI.UPSTREAM_FAILED})
#: Ended without failing: ``squall tasks test`` exits 0 for a try that ends in one of these.
SUCCEEDED_STATES: frozenset[TaskInstanceState] = frozenset({TI.SUCCESS, TI.SKIPPED})
#: Waiting for their ``next_retry_at`` before the scheduler may schedule them again.
RETRY_WAIT_STATES: frozenset[TaskInstanceState] = frozenset(
    {TI.UP_FOR_RETRY, TI.UP_FOR_RESCHEDULE}
)
#: States from which a task instance can be moved to SCHEDULED.
SCHEDULABLE_STATES: frozenset[TaskInstanceState] = frozenset(
    {TI.NONE, TI.UP_FOR_RETRY, TI.UP_FOR_RESCHEDULE}
)
#: Unfinished states in which a task instance will move on without the scheduler deciding
#: anything more for it (handed out, running, or waiting for its retry / reschedule time).
IN_FLIGHT_STATES: frozenset[TaskInstanceState] = frozenset(
    {TI.SCHEDULED, TI.QUEUED, TI.RUNNING, TI.RESTARTING, TI.UP_FOR_RETRY, TI.UP_FOR_RESCHEDULE,
     TI.DEFERRED}
)
#: A try in one of these still holds its Celery task: queued for a worker, running under a
#: supervisor, or restarting (stopped by a clear; its supervisor is still ending its
#: processes). The scheduler keeps tracking a Celery task id while its task instance stays in
#: one of these under that id and try (unlike :data:`IN_FLIGHT_STATES`, it leaves out the
#: states the scheduler has not handed out yet or hands out again: scheduled, retry waits).
HELD_BY_EXECUTOR_STATES: frozenset[TaskInstanceState] = frozenset(
    {TI.QUEUED, TI.RUNNING, TI.RESTARTING}
)
#: Waiting for a worker: what a queue's backlog counts (``/api/v1/metrics``).
BACKLOG_STATES: frozenset[TaskInstanceState] = frozenset({TI.SCHEDULED, TI.QUEUED})
#: A DAG's ``fail_stop`` fails these task instances of the run (their code is running) ...
FAIL_STOP_FAIL_STATES: frozenset[TaskInstanceState] = frozenset({TI.RUNNING, TI.RESTARTING})
#: ... and skips these (not started, or waiting to start again)
FAIL_STOP_SKIP_STATES: frozenset[TaskInstanceState] = frozenset(
    {TI.NONE, TI.SCHEDULED, TI.QUEUED, TI.UP_FOR_RETRY, TI.UP_FOR_RESCHEDULE, TI.DEFERRED}
)
#: Unfinished states a timed-out run's task instances are skipped from (not the running ones).
TIMEOUT_SKIP_STATES: frozenset[TaskInstanceState] = frozenset(
    {TI.NONE, TI.SCHEDULED, TI.UP_FOR_RETRY, TI.UP_FOR_RESCHEDULE, TI.DEFERRED}
)
#: Leaf states that make a finished run a success (removed leaves are not looked at).
LEAF_SUCCESS_STATES: frozenset[TaskInstanceState] = frozenset({TI.SUCCESS, TI.SKIPPED})
#: What ``depends_on_past`` accepts of the previous run's task instance (and its downstreams).
PAST_OK_STATES: frozenset[TaskInstanceState] = frozenset({TI.SUCCESS, TI.SKIPPED})
#: The states whose changes can make a new decision on a run possible (the scheduler's own
#: moves, none -> scheduled -> queued, and a worker's queued -> running cannot; a cleared
#: running try's restarting -> none can).
SIGNATURE_STATES: frozenset[TaskInstanceState] = (
    FINISHED_STATES | RETRY_WAIT_STATES | {TI.RESTARTING}
)
#: Marking a run failed (the API's PATCH of a run's state): its task instances in one of
#: these fail ...
MARK_RUN_FAILED_FAILS: frozenset[TaskInstanceState] = frozenset(
    {TI.RUNNING, TI.UP_FOR_RESCHEDULE, TI.DEFERRED}
)
#: ... and those in one of these are skipped (the others are left as they are).
MARK_RUN_FAILED_SKIPS: frozenset[TaskInstanceState] = frozenset(
    {TI.NONE, TI.SCHEDULED, TI.QUEUED, TI.RESTARTING, TI.UP_FOR_RETRY}
)
#: Marked one of these, a task's failed downstream task instances are cleared to run again.
CLEARS_FAILED_DOWNSTREAM: frozenset[TaskInstanceState] = frozenset({TI.SUCCESS, TI.SKIPPED})
#: A task instance that met its SLA got to one of these in time.
SLA_MET_STATES: frozenset[TaskInstanceState] = frozenset({TI.SUCCESS, TI.SKIPPED})
#: ``squall tasks clear --only-failed`` (and the API's ``only_failed``): the states it selects.
ONLY_FAILED_STATES: tuple[TaskInstanceState, ...] = tuple(sorted(FAILED_LIKE_STATES))
#: ``squall tasks clear --only-running`` (and the API's ``only_running``): the states it
#: selects.
ONLY_RUNNING_STATES: tuple[TaskInstanceState, ...] = (TI.RUNNING,)
#: What ``squall tasks set-state`` may set, in the order its ``--state`` choices list them.
SETTABLE_STATES: tuple[TaskInstanceState, ...] = (TI.FAILED, TI.SUCCESS, TI.SKIPPED)

DAGRUN_FINISHED_STATES: frozenset[DagRunState] = frozenset(
    {DagRunState.SUCCESS, DagRunState.FAILED}
)
DAGRUN_UNFINISHED_STATES: frozenset[DagRunState] = frozenset(
    {DagRunState.QUEUED, DagRunState.RUNNING}
)
