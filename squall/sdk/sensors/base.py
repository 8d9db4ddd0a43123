"""BaseSensorOperator: a task that waits until a condition holds."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any, Protocol

import pendulum

from squall.common.errors import (
    DagDefinitionError,
    Reschedule,
    SensorTimeout,
    SquallError,
    TaskControl,
    TaskFailedNoRetry,
    TaskSkipped,
    TaskTimedOut,
)
from squall.sdk.operators.base import BaseOperator, Context

log = logging.getLogger(__name__)

__all__ = ["BaseSensorOperator", "PokeReturnValue", "SensorClock", "SystemClock"]

VALID_MODES = ("poke", "reschedule")


class SensorClock(Protocol):
    """What a sensor uses of time: the current time, and a wait between pokes."""

    def now(self) -> pendulum.DateTime: ...
    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: ``pendulum.now("UTC")`` and ``time.sleep``."""

    def now(self) -> pendulum.DateTime:
        return pendulum.now("UTC")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK: SensorClock = SystemClock()


class PokeReturnValue:
    """What ``poke`` may return instead of a bool: whether the condition holds and a value
    for the sensor to return (pushed to XCom) when it does."""

    def __init__(self, is_done: bool, xcom_value: Any = None) -> None:
        self.is_done = is_done
        self.xcom_value = xcom_value

    def __bool__(self) -> bool:
        return bool(self.is_done)

    def __repr__(self) -> str:
        return f"PokeReturnValue(is_done={self.is_done!r}, xcom_value={self.xcom_value!r})"


def _seconds(value: timedelta | float, name: str, task_id: Any) -> float:
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise DagDefinitionError(
            f"task {task_id}: {name} must be a timedelta or a number of seconds, got {value!r}"
        )
    if seconds < 0:
        raise DagDefinitionError(f"task {task_id}: {name} must not be negative, got {value!r}")
    return seconds


class BaseSensorOperator(BaseOperator):
    """Calls :meth:`poke` until it returns true (or a true :class:`PokeReturnValue`).

    * ``mode="poke"`` keeps the worker slot and sleeps ``poke_interval`` between pokes;
      ``mode="reschedule"`` gives the slot back after a false poke and is run again
      ``poke_interval`` later.
    * ``timeout`` (seconds or timedelta, default 7 days) counts from the first poke of the
      try (``ti.sensor_started_at``, which spans reschedules). Past it the sensor fails with
      :class:`SensorTimeout` (never retried), or is skipped when ``soft_fail``.
    * ``exponential_backoff`` doubles the interval after each false poke, up to
      ``max_wait`` if given.
    * ``silent_fail``: an exception raised by ``poke`` is logged and counts as a false poke.
      ``never_fail``: such an exception skips the task instead of failing it.

    A deferrable sensor (the ``*Async`` sensors, ``deferrable=True``) hands its wait to a
    trigger instead; :meth:`resume_execution` applies ``soft_fail`` to the resumed try.

    ``clock`` (a :class:`SensorClock`, the real one unless set on the instance) is where the
    sensor reads the time and sleeps between pokes; it is not a constructor argument, so the
    constructor stays Airflow's.
    """

    ui_color = "#e6f1f2"
    valid_modes = VALID_MODES
    clock: SensorClock = SYSTEM_CLOCK

    def __init__(
        self,
        *,
        poke_interval: timedelta | float = 60,
        timeout: timedelta | float = 60 * 60 * 24 * 7,
        soft_fail: bool = False,
        mode: str = "poke",
        exponential_backoff: bool = False,
        max_wait: timedelta | float | None = None,
        silent_fail: bool = False,
        never_fail: bool = False,
        **kwargs: Any,
    ) -> None:
        task_id = kwargs.get("task_id")
        if mode not in VALID_MODES:
            raise DagDefinitionError(
                f"task {task_id}: sensor mode must be one of {', '.join(VALID_MODES)}, "
                f"got {mode!r}"
            )
        if soft_fail and never_fail:
            raise DagDefinitionError(
                f"task {task_id}: soft_fail and never_fail cannot both be set"
            )
        self.poke_interval = _seconds(poke_interval, "poke_interval", task_id)
        self.timeout = _seconds(timeout, "timeout", task_id)
        self.max_wait: timedelta | None = (
            timedelta(seconds=_seconds(max_wait, "max_wait", task_id))
            if max_wait is not None else None
        )
        super().__init__(**kwargs)
        self.mode = mode
        self.soft_fail = soft_fail
        self.exponential_backoff = exponential_backoff
        self.silent_fail = silent_fail
        self.never_fail = never_fail

    @property
    def reschedule(self) -> bool:
        return self.mode == "reschedule"

    def poke(self, context: Context) -> bool | PokeReturnValue:
        """Whether the condition holds now. Subclasses implement this."""
        raise NotImplementedError(f"{type(self).__name__} does not implement poke()")

    # ------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        ti = context.get("ti")
        started_at = _started_at(ti, self.clock)
        poke_number = int(getattr(ti, "reschedule_count", 0) or 0) + 1 if self.reschedule else 1
        while True:
            result = self._poke_once(context)
            if result:
                log.info("Success criteria met. Exiting.")
                return result.xcom_value if isinstance(result, PokeReturnValue) else None
            elapsed = (self.clock.now() - started_at).total_seconds()
            if elapsed >= self.timeout:
                message = (
                    f"Sensor has timed out; run duration of {elapsed:.1f} seconds exceeds the "
                    f"specified timeout of {self.timeout:.1f} seconds."
                )
                if self.soft_fail:
                    raise TaskSkipped(f"{message} Skipping due to soft_fail.")
                raise SensorTimeout(message)
            interval = self.next_poke_interval(poke_number, elapsed)
            if self.reschedule:
                when = self.clock.now() + timedelta(seconds=interval)
                log.info("Condition not met; rescheduling at %s", when.isoformat())
                raise Reschedule(when)
            log.info("Condition not met; poking again in %s seconds", interval)
            self.clock.sleep(interval)
            poke_number += 1

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None,
                         context: Context) -> Any:
        """A deferred sensor resuming: as :meth:`BaseOperator.resume_execution`, but with
        ``soft_fail`` an Airflow-exception failure (the trigger failed or timed out, or the
        resumed method raised one: :class:`SquallError`, ``AirflowFailException``,
        ``AirflowSensorTimeout``, ``AirflowTaskTimeout``) skips the task instead, as Airflow
        2.10's ``BaseSensorOperator.resume_execution``. Other exceptions fail it."""
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except (SquallError, TaskFailedNoRetry, TaskTimedOut) as exc:
            if self.soft_fail:
                raise TaskSkipped(str(exc)) from exc
            raise

    def next_poke_interval(self, poke_number: int, elapsed: float) -> float:
        """Seconds to wait after false poke number ``poke_number`` (1 for the first),
        ``elapsed`` seconds after the sensor started; never past the timeout."""
        interval = self.poke_interval
        if self.exponential_backoff:
            interval = self.poke_interval * 2.0 ** min(max(poke_number - 1, 0), 40)
            if self.max_wait is not None:
                interval = min(interval, self.max_wait.total_seconds())
        return max(min(interval, self.timeout - elapsed), 0.0)

    def _poke_once(self, context: Context) -> bool | PokeReturnValue:
        try:
            return self.poke(context)
        except (TaskFailedNoRetry, TaskTimedOut) as exc:
            if self.soft_fail or self.never_fail:
                raise TaskSkipped(f"Skipping due to soft_fail/never_fail: {exc}") from exc
            raise
        except TaskControl:
            raise
        except Exception as exc:
            if self.silent_fail:
                log.exception("Sensor poke failed; silent_fail is set, so poking on")
                return False
            if self.never_fail:
                raise TaskSkipped(f"Skipping due to never_fail: poke raised {exc!r}") from exc
            raise


def _started_at(ti: Any, clock: SensorClock) -> pendulum.DateTime:
    value = getattr(ti, "sensor_started_at", None)
    if not isinstance(value, datetime):
        return clock.now()
    if isinstance(value, pendulum.DateTime):
        return value
    return pendulum.instance(value, tz="UTC")
