"""TimeSensor and DateTimeSensor: wait for a time of day, or for a date and time (Airflow
2.10's ``airflow/sensors/time_sensor.py`` and ``airflow/sensors/date_time.py``)."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from typing import Any

import pendulum

from squall.common.errors import DagDefinitionError, TemplateError
from squall.sdk.dag_defaults import current_defaults
from squall.sdk.operators.base import Context
from squall.sdk.sensors.base import BaseSensorOperator

log = logging.getLogger(__name__)


class TimeSensor(BaseSensorOperator):
    """True once the current wall time in the DAG's time zone is past ``target_time``
    (a :class:`datetime.time`), as Airflow's: ``make_naive(utcnow(), dag.timezone).time() >
    target_time``. A run late in the day whose target is early passes at once."""

    def __init__(self, *, target_time: datetime.time, **kwargs: Any) -> None:
        if not isinstance(target_time, datetime.time):
            raise DagDefinitionError(f"task {kwargs.get('task_id')}: target_time must be a "
                                     f"datetime.time, got {target_time!r}")
        super().__init__(**kwargs)
        self.target_time = target_time

    def poke(self, context: Context) -> bool:
        log.info("Checking if the time (%s) has come", self.target_time)
        tz = self.dag.timezone if self.dag is not None else pendulum.UTC
        now = self.clock.now().in_timezone(tz)
        return bool(now.time().replace(tzinfo=None) > self.target_time)


class DateTimeSensor(BaseSensorOperator):
    """True once the current time is past ``target_time`` (templated: a string rendered
    then parsed, or a datetime kept as its ISO string), as Airflow's. A naive value is read
    in the deployment's ``[core] default_timezone``."""

    template_fields: Sequence[str] = ("target_time",)

    def __init__(self, *, target_time: str | datetime.datetime, **kwargs: Any) -> None:
        if isinstance(target_time, datetime.datetime):
            target_time = target_time.isoformat()
        elif not isinstance(target_time, str):
            raise DagDefinitionError(
                f"task {kwargs.get('task_id')}: expected str or datetime.datetime type for "
                f"target_time, got {type(target_time).__name__}")
        super().__init__(**kwargs)
        self.target_time: str = target_time

    def poke(self, context: Context) -> bool:
        log.info("Checking if the time (%s) has come", self.target_time)
        target = pendulum.parse(str(self.target_time),
                                tz=pendulum.timezone(current_defaults().timezone))
        if not isinstance(target, datetime.datetime):
            raise TemplateError(f"task {self.task_id}: target_time {self.target_time!r} is not "
                                "a date and time")
        return bool(self.clock.now() > target)
