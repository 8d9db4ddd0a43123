"""``DateTimeTrigger`` and ``TimeDeltaTrigger``: fire at a moment (Airflow 2.10's
``airflow/triggers/temporal.py``)."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from typing import Any

import pendulum

from squall.sdk.triggers.base import BaseTrigger, TaskSuccessEvent, TriggerEvent

__all__ = ["DateTimeTrigger", "TimeDeltaTrigger"]


def _utcnow() -> pendulum.DateTime:
    return pendulum.now("UTC")


#: the waits between looks at the clock, longest first: a long wait is slept in steps (the
#: clock is read again after each, so a clock change or a DST shift cannot make it fire late
#: by more than a step), the last seconds one second at a time
_STEPS = (3600.0, 60.0, 10.0)


class DateTimeTrigger(BaseTrigger):
    """Fires once, at ``moment`` (an aware datetime; a naive one is refused, as Airflow
    refuses it), with the moment (in UTC) as the payload; with ``end_from_trigger`` it
    yields :class:`TaskSuccessEvent` instead (see :class:`BaseTaskEndEvent`)."""

    def __init__(self, moment: datetime.datetime, *, end_from_trigger: bool = False) -> None:
        super().__init__()
        if not isinstance(moment, datetime.datetime):
            raise TypeError(f"Expected datetime.datetime type for moment. Got {type(moment)}")
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError("You cannot pass naive datetimes")
        self.moment: pendulum.DateTime = pendulum.instance(moment).in_timezone("UTC")
        self.end_from_trigger = end_from_trigger

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("squall.sdk.triggers.temporal.DateTimeTrigger",
                {"moment": self.moment, "end_from_trigger": self.end_from_trigger})

    def _remaining(self) -> float:
        return (self.moment - _utcnow()).total_seconds()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        self.log.info("trigger starting: waiting until %s", self.moment.isoformat())
        for step in _STEPS:
            while self._remaining() > 2 * step:
                self.log.debug("%d seconds remaining; sleeping %s seconds", self._remaining(),
                               step)
                await asyncio.sleep(step)
        while (remaining := self._remaining()) > 0:
            await asyncio.sleep(min(remaining, 1.0))
        if self.end_from_trigger:
            self.log.info("Sensor time condition reached; marking task successful and exiting")
            yield TaskSuccessEvent()
        else:
            self.log.info("yielding event with payload %r", self.moment)
            yield TriggerEvent(self.moment)


class TimeDeltaTrigger(DateTimeTrigger):
    """A :class:`DateTimeTrigger` at now + ``delta`` (it serializes as one, with the moment
    it computed, so a triggerer that takes it over does not start the delay again)."""

    def __init__(self, delta: datetime.timedelta, *, end_from_trigger: bool = False) -> None:
        if not isinstance(delta, datetime.timedelta):
            raise TypeError(f"Expected datetime.timedelta type for delta. Got {type(delta)}")
        super().__init__(moment=_utcnow() + delta, end_from_trigger=end_from_trigger)
