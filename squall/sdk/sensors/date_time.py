"""TimeSensor and DateTimeSensor, and their deferrable TimeSensorAsync and
DateTimeSensorAsync: wait for a time of day, or for a date and time (Airflow 2.10's
``airflow/sensors/time_sensor.py`` and ``airflow/sensors/date_time.py``)."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from typing import Any, NoReturn

import pendulum

from squall.common.errors import DagDefinitionError, TemplateError
from squall.sdk.dag_defaults import current_defaults
from squall.sdk.operators.base import Context
from squall.sdk.sensors.base import BaseSensorOperator
from squall.sdk.triggers.temporal import DateTimeTrigger

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
        return bool(self.clock.now() > self.target_datetime())

    def target_datetime(self) -> datetime.datetime:
        """``target_time`` (rendered) as an aware date and time: a naive value is read in
        the deployment's ``[core] default_timezone``, as Airflow's ``timezone.parse``."""
        target = pendulum.parse(str(self.target_time),
                                tz=pendulum.timezone(current_defaults().timezone))
        if not isinstance(target, datetime.datetime):
            raise TemplateError(f"task {self.task_id}: target_time {self.target_time!r} is not "
                                "a date and time")
        return target


class DateTimeSensorAsync(DateTimeSensor):
    """:class:`DateTimeSensor` that waits in a triggerer, as Airflow 2.10's: it always
    defers to a :class:`DateTimeTrigger` at ``target_time`` (one in the past fires at once),
    with no timeout (the sensor's ``timeout`` does not apply), and succeeds when the trigger
    fires. ``end_from_trigger`` makes the trigger yield a ``TaskSuccessEvent`` (the
    same outcome: see :class:`~squall.sdk.triggers.BaseTaskEndEvent`). ``start_from_trigger``
    and ``trigger_kwargs`` are accepted; the first try starts on a worker, which defers at
    once (the same outcome)."""

    def __init__(self, *, start_from_trigger: bool = False, end_from_trigger: bool = False,
                 trigger_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_from_trigger = start_from_trigger
        self.end_from_trigger = end_from_trigger
        self.trigger_kwargs = trigger_kwargs

    def execute(self, context: Context) -> NoReturn:
        self.defer(method_name="execute_complete",
                   trigger=DateTimeTrigger(moment=self.target_datetime(),
                                           end_from_trigger=self.end_from_trigger))

    def execute_complete(self, context: Context, event: Any = None) -> None:
        """The moment has come: succeed."""
        return None


class TimeSensorAsync(BaseSensorOperator):
    """Waits in a triggerer until ``target_time`` (a :class:`datetime.time`) in the DAG's
    time zone, on the date the task was built, as Airflow 2.10's (which computes
    ``target_datetime`` in ``__init__``: the machine's local date today, combined with
    ``target_time`` in ``dag.timezone``, in UTC). A time already past today fires at once, so
    a run late in the day whose target is early succeeds at once, as :class:`TimeSensor`.
    No timeout; ``end_from_trigger`` as :class:`DateTimeSensorAsync`'s; ``start_from_trigger``
    and ``trigger_kwargs`` as :class:`DateTimeSensorAsync`'s."""

    def __init__(self, *, target_time: datetime.time, start_from_trigger: bool = False,
                 trigger_kwargs: dict[str, Any] | None = None, end_from_trigger: bool = False,
                 **kwargs: Any) -> None:
        if not isinstance(target_time, datetime.time):
            raise DagDefinitionError(f"task {kwargs.get('task_id')}: target_time must be a "
                                     f"datetime.time, got {target_time!r}")
        super().__init__(**kwargs)
        self.start_from_trigger = start_from_trigger
        self.end_from_trigger = end_from_trigger
        self.trigger_kwargs = trigger_kwargs
        self.target_time = target_time
        #: None until the task is in a DAG (then computed at execute)
        self.target_datetime: pendulum.DateTime | None = (
            self._target_on_today() if self.dag is not None else None)

    def _target_on_today(self) -> pendulum.DateTime:
        tz = self.dag.timezone if self.dag is not None else pendulum.UTC
        today = datetime.datetime.fromtimestamp(self.clock.now().timestamp()).date()
        aware = datetime.datetime.combine(today, self.target_time.replace(tzinfo=None),
                                          tzinfo=tz)
        return pendulum.instance(aware).in_timezone("UTC")

    def execute(self, context: Context) -> NoReturn:
        if self.target_datetime is None:
            self.target_datetime = self._target_on_today()
        self.defer(trigger=DateTimeTrigger(moment=self.target_datetime,
                                           end_from_trigger=self.end_from_trigger),
                   method_name="execute_complete")

    def execute_complete(self, context: Context, event: Any = None) -> None:
        """The time has come: succeed."""
        return None
