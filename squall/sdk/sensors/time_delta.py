"""TimeDeltaSensor: wait until some time after the end of the data interval."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from squall.common.errors import DagDefinitionError
from squall.sdk.operators.base import Context
from squall.sdk.sensors.base import BaseSensorOperator

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
