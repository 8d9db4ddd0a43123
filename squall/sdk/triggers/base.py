"""``BaseTrigger`` and ``TriggerEvent``: Airflow 2's trigger interface.

A trigger is a small asyncio waiter. A deferring task builds one and raises
:class:`~squall.common.errors.TaskDeferred` (through ``BaseOperator.defer``); the worker stores
``trigger.serialize()`` (a class path and keyword arguments) in the ``trigger`` table and frees
its slot. A triggerer rebuilds the trigger from that row (``classpath(**kwargs)``), iterates its
``run()`` and takes the first :class:`TriggerEvent`; the task instance is then scheduled again
and resumes on a worker with the event's payload.

The keyword arguments must survive a round trip through the trigger table: JSON values,
datetimes and timedeltas.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from squall.common.state import TaskInstanceState


class TriggerEvent:
    """What a trigger yields when its wait is over; ``payload`` reaches the resumed method
    as its ``event`` argument (JSON values, datetimes and timedeltas)."""

    def __init__(self, payload: Any) -> None:
        self.payload = payload

    def __repr__(self) -> str:
        return f"TriggerEvent<{self.payload!r}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TriggerEvent):
            return bool(other.payload == self.payload)
        return False

    def __hash__(self) -> int:
        return hash(repr(self.payload))


class BaseTrigger(abc.ABC):
    """Base of every trigger. Subclasses implement :meth:`serialize` and the async generator
    :meth:`run`, and may override :meth:`cleanup`.

    ``task_instance`` is set by the triggerer to the task instance that waits on the trigger
    (``dag_id``, ``task_id``, ``run_id``, ``map_index``, ``try_number``), as in Airflow.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.trigger_id: int | None = None
        self.task_instance: Any = None

    @abc.abstractmethod
    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path and keyword arguments that rebuild this trigger in a triggerer."""

    @abc.abstractmethod
    def run(self) -> AsyncIterator[TriggerEvent]:
        """Wait, then yield one :class:`TriggerEvent` (later ones are ignored). Must not
        block the event loop: other triggers share it."""

    @property
    def log(self) -> logging.Logger:
        """This trigger's logger (``module.ClassName``, as Airflow's ``LoggingMixin``)."""
        cls = type(self)
        return logging.getLogger(f"{cls.__module__}.{cls.__qualname__}")

    async def cleanup(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Called when the trigger stops, fired or not (the triggerer lost it, or is
        stopping)."""

    def __repr__(self) -> str:
        classpath, kwargs = self.serialize()
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        return f"<{classpath} {args}>"


class BaseTaskEndEvent(TriggerEvent):
    """An event meant to end the task instance in ``task_instance_state`` (its payload)
    without resuming it (Airflow 2.10's ``end_from_trigger``; ``xcoms`` are the XComs to
    push). Squall's triggerer handles it as any event: the task resumes on a worker in its
    ``next_method`` with ``event=<the state>``, as Airflow's ``dags test`` does; the core
    sensors' ``execute_complete`` then succeeds, the state Airflow's triggerer gives them."""

    task_instance_state: ClassVar[TaskInstanceState]

    def __init__(self, *, xcoms: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if "payload" in kwargs:
            raise ValueError("Param 'payload' not supported for this class.")
        super().__init__(payload=self.task_instance_state)
        self.xcoms = xcoms


class TaskSuccessEvent(BaseTaskEndEvent):
    """End the task instance in success (Airflow: ``TaskSuccessEvent``)."""

    task_instance_state = TaskInstanceState.SUCCESS


class TaskFailedEvent(BaseTaskEndEvent):
    """End the task instance failed (Airflow: ``TaskFailedEvent``)."""

    task_instance_state = TaskInstanceState.FAILED


class TaskSkippedEvent(BaseTaskEndEvent):
    """End the task instance skipped (Airflow: ``TaskSkippedEvent``)."""

    task_instance_state = TaskInstanceState.SKIPPED
