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
from collections.abc import AsyncIterator
from typing import Any


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

    async def cleanup(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Called when the trigger stops, fired or not (the triggerer lost it, or is
        stopping)."""

    def __repr__(self) -> str:
        classpath, kwargs = self.serialize()
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        return f"<{classpath} {args}>"
