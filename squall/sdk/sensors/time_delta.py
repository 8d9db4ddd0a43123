"""TimeDeltaSensor and TimeDeltaSensorAsync: wait until some time after the end of the data
interval (Airflow 2.10's ``airflow/sensors/time_delta.py``)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from squall.common.errors import DagDefinitionError, TaskSkipped
from squall.sdk.operators.base import Context
from squall.sdk.sensors.base import BaseSensorOperator
from squall.sdk.triggers.temporal import DateTimeTrigger

log = logging.getLogger(__name__)


class TimeDeltaSensor(BaseSensorOperator):
    """True once the current time is at or past ``data_interval_end + delta``."""

    def __init__(self, *, delta: timedelta, **kwargs: Any) -> None:
        if not isinstance(delta, timedelta):
            raise DagDefinitionError(
                f"task {kwargs.get('task_id')}: delta must be a timedelta, got {delta!r}"
            )
        super().__init__(**kwargs)
        self.delta = delta

    def poke(self, context: Context) -> bool:
        target = context["data_interval_end"] + self.delta
        log.info("Checking if the time (%s) has come", target)
        return bool(self.clock.now() >= target)


class TimeDeltaSensorAsync(TimeDeltaSensor):
    """:class:`TimeDeltaSensor` that waits in a triggerer (a :class:`DateTimeTrigger` at
    ``data_interval_end + delta``), as Airflow 2.10's: when that moment has passed already it
    returns True at once (the task's XCom ``return_value``) without deferring; otherwise it
    defers with no timeout (the sensor's ``timeout`` does not apply) and succeeds when the
    trigger fires (``execute_complete`` returns None). ``end_from_trigger`` makes the trigger
    yield a ``TaskSuccessEvent`` (the task resumes on a worker and succeeds; see
    :class:`~squall.sdk.triggers.BaseTaskEndEvent`)."""

    def __init__(self, *, end_from_trigger: bool = False, delta: timedelta,
                 **kwargs: Any) -> None:
        super().__init__(delta=delta, **kwargs)
        self.end_from_trigger = end_from_trigger

    def execute(self, context: Context) -> bool | None:
        target = context["data_interval_end"] + self.delta
        if self.clock.now() > target:
            return True
        try:
            trigger = DateTimeTrigger(moment=target, end_from_trigger=self.end_from_trigger)
        except (TypeError, ValueError) as exc:
            if self.soft_fail:
                raise TaskSkipped("Skipping due to soft_fail is set to True.") from exc
            raise
        self.defer(trigger=trigger, method_name="execute_complete")

    def execute_complete(self, context: Context, event: Any = None) -> None:
        """The moment has come: succeed."""
        return None
