"""A deferred try, seen from the worker: what it writes when it defers, and how it resumes.

A task's code defers by raising :class:`~squall.common.errors.TaskDeferred` (through
``BaseOperator.defer``). The runner turns that into a :class:`Deferral`, the values the try's
outcome write stores (:func:`squall.execution.runner.write_outcome`, one transaction): a
``trigger`` row (the trigger's class path and its serialized arguments), and on the task
instance the state ``deferred``, the trigger's id, the method and arguments to resume with
and when the wait times out. The try number stays: when the trigger fires, the same try
resumes on a worker (a triggerer moves the task instance to ``scheduled`` with the event
in ``next_kwargs["event"]``), as in Airflow.

On the worker a task instance queued with ``next_method`` set is a :class:`Resume`: the
runner calls the task's ``resume_execution(next_method, next_kwargs, context)`` instead of
``execute`` (``__fail__``, :data:`~squall.common.state.TRIGGER_FAIL_METHOD`, raises
:class:`~squall.common.errors.TaskDeferralError`), keeps the try's XComs, and counts the
task's ``execution_timeout`` from the try's first start.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from squall.common.errors import SerializationError, TaskDeferred
from squall.common.models import TaskInstance, TaskInstanceKey, Trigger, utcnow
from squall.common.state import TaskInstanceState
from squall.sdk.triggers import serde

#: the values that leave a task instance nothing to resume and no trigger to wait on: every
#: way a try ends, and every clear or mark, writes them (Airflow's clear_next_method_args)
NO_RESUME: Final[dict[str, Any]] = {"next_method": None, "next_kwargs": None,
                                    "trigger_id": None, "trigger_timeout": None}


@dataclass(frozen=True)
class Deferral:
    """What a deferring try writes (picklable: a forked task process sends it to its
    supervisor, which writes it)."""

    #: the trigger's class path, and its keyword arguments as the trigger table stores them
    classpath: str
    kwargs: str
    #: the method the try resumes in, and its keyword arguments (JSON, for ``next_kwargs``)
    next_method: str
    next_kwargs: dict[str, Any]
    #: how long the trigger may take before the try fails (None: no limit of its own)
    timeout: timedelta | None


def deferral_of(exc: TaskDeferred) -> Deferral:
    """The :class:`Deferral` of ``exc``; :class:`~squall.common.errors.SerializationError`
    naming what cannot be stored (the trigger's arguments, the resumption's arguments)."""
    if not isinstance(exc.method_name, str) or not exc.method_name:
        raise SerializationError(f"defer(): method_name must be a method's name, not "
                                 f"{exc.method_name!r}")
    if exc.timeout is not None and not isinstance(exc.timeout, timedelta):
        raise SerializationError(f"defer(): timeout must be a timedelta, not "
                                 f"{exc.timeout!r}")
    serialize = getattr(exc.trigger, "serialize", None)
    if serialize is None:
        raise SerializationError(f"defer(): trigger must be a BaseTrigger, not "
                                 f"{type(exc.trigger).__name__}")
    serialized = serialize()
    if (not isinstance(serialized, tuple) or len(serialized) != 2
            or not isinstance(serialized[0], str) or not isinstance(serialized[1], dict)):
        raise SerializationError(f"{type(exc.trigger).__name__}.serialize() must return "
                                 f"(classpath, kwargs), not {serialized!r}")
    classpath, kwargs = serialized
    next_kwargs = serde.to_json(dict(exc.kwargs or {}), where=f"{exc.method_name} kwargs")
    return Deferral(classpath=classpath, kwargs=serde.dumps(kwargs, where=f"{classpath} kwargs"),
                    next_method=exc.method_name, next_kwargs=next_kwargs, timeout=exc.timeout)


def trigger_timeout(timeout: timedelta | None, execution_timeout: timedelta | None, *,
                    start_date: datetime, now: datetime) -> datetime | None:
    """When a deferred wait times out: ``now + timeout``, and no later than the try's start
    plus the task's ``execution_timeout`` (Airflow's ``_defer_task``); None: never."""
    limits = []
    if timeout is not None:
        limits.append(now + timeout)
    if execution_timeout is not None:
        limits.append(start_date + execution_timeout)
    return min(limits) if limits else None


@dataclass(frozen=True)
class Resume:
    """A deferred try resuming on a worker: the task instance's ``next_method`` and
    ``next_kwargs`` (as the database stores them)."""

    next_method: str
    next_kwargs: dict[str, Any] | None = None

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the resumed method (the event's payload decoded)."""
        decoded = serde.from_json(self.next_kwargs or {})
        return decoded if isinstance(decoded, dict) else {}

    def used(self, start_date: datetime | None) -> timedelta:
        """How much of its ``execution_timeout`` the try has had since it first started."""
        if start_date is None:
            return timedelta(0)
        return max(utcnow() - start_date, timedelta(0))


def resume_of(next_method: str | None, next_kwargs: Any) -> Resume | None:
    """The :class:`Resume` of a task instance's columns; None when it starts afresh."""
    if not next_method:
        return None
    return Resume(next_method=next_method,
                  next_kwargs=next_kwargs if isinstance(next_kwargs, dict) else None)


def delete_triggers(session: Session, trigger_ids: Iterable[int | None]) -> int:
    """Delete the ``trigger`` rows of task instances that stopped waiting on them (cleared,
    marked, timed out), in the caller's session; how many. A triggerer holding one stops
    it when it finds the row gone (and a fired event finds no DEFERRED task instance)."""
    ids = sorted({i for i in trigger_ids if i is not None})
    if not ids:
        return 0
    result = session.execute(delete(Trigger).where(Trigger.id.in_(ids))
                             .execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)


def deferred_trigger_id(session: Session, key: TaskInstanceKey,
                        state: TaskInstanceState) -> int | None:
    """The trigger a task instance seen ``deferred`` waits on (None for any other state),
    read before a compare-and-set moves it on, so that the trigger row can go with it."""
    if state != TaskInstanceState.DEFERRED:
        return None
    return session.scalar(select(TaskInstance.trigger_id).where(
        TaskInstance.dag_id == key.dag_id, TaskInstance.task_id == key.task_id,
        TaskInstance.run_id == key.run_id, TaskInstance.map_index == key.map_index))
