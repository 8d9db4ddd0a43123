"""Deferral helpers for tests: small triggers, and a trigger's outcome written straight to
its rows.

``fire_trigger`` and ``fail_trigger`` write what ``squall triggerer`` writes when a trigger
fires or raises (``squall/triggerer/trigger_rows.py``): every task instance DEFERRED on the
trigger moves to SCHEDULED by compare-and-set on its state and try number, with the event
in ``next_kwargs["event"]`` (or ``next_method="__fail__"`` and the error), its
``trigger_id`` cleared; the trigger row is deleted and the scheduler woken, in one
transaction. They are for the tests that need that write at a precise moment, with no
triggerer process: the worker side's in-process tests, and faults a triggerer does not
produce on cue (an outcome written for a trigger that a clear has already deleted). Tests
of the real path run ``squall triggerer`` instead.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from squall.common.db import SessionFactory, session_scope
from squall.common.models import TaskInstance, Trigger, compare_and_set_state
from squall.common.state import TRIGGER_FAIL_METHOD, TaskInstanceState
from squall.common.wakeup import notify_scheduler
from squall.sdk.triggers import BaseTrigger, TriggerEvent, serde


class PayloadTrigger(BaseTrigger):
    """Fires ``payload`` after ``delay`` seconds."""

    def __init__(self, payload: Any = None, delay: float = 0.0) -> None:
        super().__init__()
        self.payload = payload
        self.delay = delay

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"payload": self.payload, "delay": self.delay})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        await asyncio.sleep(self.delay)
        yield TriggerEvent(self.payload)


def _move(factory: SessionFactory, trigger_id: int, values: Any) -> int:
    """Move the task instances DEFERRED on ``trigger_id`` to SCHEDULED with ``values(ti)``,
    delete the trigger, wake the scheduler; how many moved."""
    moved = 0
    with session_scope(factory) as session:
        for ti in session.scalars(select(TaskInstance).where(
                TaskInstance.trigger_id == trigger_id,
                TaskInstance.state == TaskInstanceState.DEFERRED.value)).all():
            moved += compare_and_set_state(
                session, ti.key, expected=TaskInstanceState.DEFERRED,
                try_number=ti.try_number, new_state=TaskInstanceState.SCHEDULED,
                trigger_id=None, **values(ti))
        session.execute(delete(Trigger).where(Trigger.id == trigger_id))
        notify_scheduler(session, f"trigger {trigger_id}")
    return moved


def fire_trigger(factory: SessionFactory, trigger_id: int, payload: Any) -> int:
    """Write that the trigger fired with ``payload``; how many task instances moved."""
    return _move(factory, trigger_id, lambda ti: {"next_kwargs": serde.to_json(
        {**serde.from_json(ti.next_kwargs or {}), "event": payload})})


def fail_trigger(factory: SessionFactory, trigger_id: int, error: str,
                 traceback: list[str] | None = None) -> int:
    """Write that the trigger raised; how many task instances moved."""
    return _move(factory, trigger_id, lambda ti: {
        "next_method": TRIGGER_FAIL_METHOD,
        "next_kwargs": {"error": error, "traceback": traceback or []}})


class FileEventTrigger(BaseTrigger):
    """Fires when the file ``path`` exists, with its JSON content as the payload (a test
    fires it when it wants, through a real triggerer)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}", {"path": self.path})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            try:
                text = Path(self.path).read_text()
            except FileNotFoundError:
                await asyncio.sleep(0.1)
                continue
            yield TriggerEvent(json.loads(text))
            return


class FailingTrigger(BaseTrigger):
    """Raises ``RuntimeError(message)`` when run."""

    def __init__(self, message: str = "boom") -> None:
        super().__init__()
        self.message = message

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}", {"message": self.message})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        raise RuntimeError(self.message)
        yield TriggerEvent(None)  # pragma: no cover - an async generator
