"""BaseSensorOperator (poke / reschedule, timeouts, backoff) and the shipped sensors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
import pytest

from squall.common.errors import (
    DagDefinitionError,
    Reschedule,
    SensorTimeout,
    TaskFailedNoRetry,
    TaskSkipped,
)
from squall.sdk.dag import DAG
from squall.sdk.operators.base import Context
from squall.sdk.sensors.base import BaseSensorOperator, PokeReturnValue
from squall.sdk.sensors.filesystem import FileSensor
from squall.sdk.sensors.python import PythonSensor
from squall.sdk.sensors.time_delta import TimeDeltaSensor
from tests.unit.fake_ti import FakeTI, make_context, run_task

START = pendulum.datetime(2024, 1, 1, tz="UTC")
T0 = pendulum.datetime(2024, 6, 1, 12, 0, 0, tz="UTC")


class Clock:
    """A fake :class:`~squall.sdk.sensors.base.SensorClock`: the time is ``at``; ``sleep``
    advances it and is recorded."""

    def __init__(self) -> None:
        self.at = T0
        self.sleeps: list[float] = []

    def now(self) -> pendulum.DateTime:
        return self.at

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.at = self.at.add(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


class CountingSensor(BaseSensorOperator):
    """True from poke number ``succeed_on`` on (never when 0)."""

    def __init__(self, *, succeed_on: int = 0, result: Any = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.succeed_on = succeed_on
        self.result = result
        self.pokes = 0

    def poke(self, context: Context) -> bool | PokeReturnValue:
        self.pokes += 1
        if self.succeed_on and self.pokes >= self.succeed_on:
            return self.result
        return False


def _sensor(clock: Clock | None = None, **kwargs: Any) -> CountingSensor:
    with DAG("sensors", start_date=START, schedule=None):
        sensor = CountingSensor(task_id="s", **kwargs)
    if clock is not None:
        sensor.clock = clock
    return sensor


def test_poke_mode_succeeds(clock: Clock) -> None:
    sensor = _sensor(clock, succeed_on=3, poke_interval=10)
    assert run_task(sensor, FakeTI(sensor, sensor_started_at=clock.now())) is None
    assert sensor.pokes == 3
    assert clock.sleeps == [10, 10]


def test_poke_return_value_is_result(clock: Clock) -> None:
    sensor = _sensor(clock, succeed_on=2, poke_interval=timedelta(seconds=5),
                     result=PokeReturnValue(True, xcom_value={"found": 1}))
    assert run_task(sensor, FakeTI(sensor, sensor_started_at=clock.now())) == {"found": 1}
    assert clock.sleeps == [5]


def test_poke_mode_timeout(clock: Clock) -> None:
    sensor = _sensor(clock, poke_interval=10, timeout=25)
    with pytest.raises(SensorTimeout, match="timed out") as info:
        run_task(sensor, FakeTI(sensor, sensor_started_at=clock.now()))
    assert isinstance(info.value, TaskFailedNoRetry)  # never retried
    assert clock.sleeps == [10, 10, 5]  # the last wait stops at the timeout
    assert sensor.pokes == 4


def test_soft_fail_skips_on_timeout(clock: Clock) -> None:
    sensor = _sensor(clock, poke_interval=10, timeout=timedelta(seconds=15), soft_fail=True)
    with pytest.raises(TaskSkipped, match="timed out"):
        run_task(sensor, FakeTI(sensor, sensor_started_at=clock.now()))


def test_reschedule_mode_raises_reschedule() -> None:
    sensor = _sensor(poke_interval=30, mode="reschedule")
    before = pendulum.now("UTC")
    with pytest.raises(Reschedule) as info:
        run_task(sensor, FakeTI(sensor, sensor_started_at=before))
    after = pendulum.now("UTC")
    when = info.value.reschedule_date
    assert before.add(seconds=30) <= when <= after.add(seconds=30)
    assert sensor.pokes == 1


def test_reschedule_mode_success(clock: Clock) -> None:
    sensor = _sensor(clock, succeed_on=1, mode="reschedule")
    assert run_task(sensor, FakeTI(sensor, sensor_started_at=clock.now())) is None


def test_reschedule_mode_timeout_counts_from_sensor_started_at(clock: Clock) -> None:
    sensor = _sensor(clock, poke_interval=60, timeout=3600, mode="reschedule")
    ti = FakeTI(sensor, sensor_started_at=clock.now().subtract(hours=2), reschedule_count=5)
    with pytest.raises(SensorTimeout):
        run_task(sensor, ti)
    soft = _sensor(clock, poke_interval=60, timeout=3600, mode="reschedule", soft_fail=True)
    ti = FakeTI(soft, sensor_started_at=clock.now().subtract(hours=2))
    with pytest.raises(TaskSkipped):
        run_task(soft, ti)
    # not yet timed out: rescheduled, never past the timeout
    late = _sensor(clock, poke_interval=600, timeout=3600, mode="reschedule")
    ti = FakeTI(late, sensor_started_at=clock.now().subtract(minutes=55))
    with pytest.raises(Reschedule) as info:
        run_task(late, ti)
    assert info.value.reschedule_date == clock.now().add(minutes=5)


def test_exponential_backoff_poke_mode(clock: Clock) -> None:
    sensor = _sensor(clock, succeed_on=7, poke_interval=5, exponential_backoff=True, max_wait=30)
    run_task(sensor, FakeTI(sensor, sensor_started_at=clock.now()))
    assert clock.sleeps == [5, 10, 20, 30, 30, 30]


def test_exponential_backoff_reschedule_mode(clock: Clock) -> None:
    sensor = _sensor(clock, poke_interval=5, exponential_backoff=True, mode="reschedule")
    ti = FakeTI(sensor, sensor_started_at=clock.now(), reschedule_count=3)
    with pytest.raises(Reschedule) as info:
        run_task(sensor, ti)
    assert info.value.reschedule_date == clock.now().add(seconds=40)
    assert sensor.next_poke_interval(1, 0) == 5
    assert sensor.next_poke_interval(2, 0) == 10


def test_invalid_mode_and_intervals() -> None:
    with pytest.raises(DagDefinitionError, match="mode"):
        _sensor(mode="sometimes")
    with pytest.raises(DagDefinitionError, match="poke_interval"):
        _sensor(poke_interval=-1)
    with pytest.raises(DagDefinitionError, match="timeout"):
        _sensor(timeout="soon")


def test_silent_fail_and_errors(clock: Clock) -> None:
    calls: list[int] = []

    def flaky() -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("boom")
        return True

    with DAG("pys", start_date=START, schedule=None):
        silent = PythonSensor(task_id="silent", python_callable=flaky, poke_interval=1,
                              silent_fail=True)
        loud = PythonSensor(task_id="loud", python_callable=flaky, poke_interval=1)
        never = PythonSensor(task_id="never", python_callable=flaky, poke_interval=1,
                             never_fail=True)
    for sensor in (silent, loud, never):
        sensor.clock = clock
    run_task(silent, FakeTI(silent, sensor_started_at=clock.now()))
    assert len(calls) == 2
    calls.clear()
    with pytest.raises(ValueError, match="boom"):
        run_task(loud, FakeTI(loud, sensor_started_at=clock.now()))
    calls.clear()
    with pytest.raises(TaskSkipped, match="boom"):
        run_task(never, FakeTI(never, sensor_started_at=clock.now()))


def test_python_sensor_arguments(clock: Clock) -> None:
    def check(path: str, ds: str, minimum: int, templates_dict: dict[str, Any]) -> Any:
        return PokeReturnValue(True, xcom_value=[path, ds, minimum, templates_dict["t"]])

    with DAG("pys2", start_date=START, schedule=None):
        sensor = PythonSensor(task_id="s", python_callable=check, op_args=["/x/{{ ds }}"],
                              op_kwargs={"minimum": 3}, templates_dict={"t": "{{ ds_nodash }}"})
    assert run_task(sensor, FakeTI(sensor, sensor_started_at=clock.now())) == [
        "/x/2024-03-05", "2024-03-05", 3, "20240305"
    ]


def test_file_sensor(tmp_path: Path) -> None:
    with DAG("fs", start_date=START, schedule=None):
        exact = FileSensor(task_id="exact", filepath=str(tmp_path / "data" / "x.csv"))
        pattern = FileSensor(task_id="pattern", filepath=str(tmp_path / "data" / "*.csv"))
        templated = FileSensor(task_id="tpl", filepath=str(tmp_path) + "/{{ ds }}.done")
        folder = FileSensor(task_id="folder", filepath=str(tmp_path / "data"))
        deep = FileSensor(task_id="deep", filepath=str(tmp_path / "**" / "y.txt"),
                          recursive=True)

    def poke(sensor: FileSensor) -> bool:
        context = make_context(sensor)
        sensor.render_template_fields(context)
        return sensor.poke(context)

    assert not poke(exact)
    assert not poke(pattern)
    (tmp_path / "data").mkdir()
    assert not poke(folder)  # an empty directory does not count
    (tmp_path / "data" / "x.csv").write_text("1")
    assert poke(exact)
    assert poke(pattern)
    assert poke(folder)
    assert not poke(templated)
    (tmp_path / "2024-03-05.done").write_text("")
    assert poke(templated)
    assert not poke(deep)
    (tmp_path / "data" / "a" / "b").mkdir(parents=True)
    (tmp_path / "data" / "a" / "b" / "y.txt").write_text("")
    assert poke(deep)


def test_time_delta_sensor(clock: Clock) -> None:
    with DAG("td", start_date=START, schedule="@daily"):
        sensor = TimeDeltaSensor(task_id="s", delta=timedelta(hours=1))
    sensor.clock = clock
    end = T0
    context = make_context(sensor, data_interval_start=end.subtract(days=1),
                           data_interval_end=end, logical_date=end.subtract(days=1))
    clock.at = end.add(minutes=30)
    assert sensor.poke(context) is False
    clock.at = end.add(hours=1)
    assert sensor.poke(context) is True
    with pytest.raises(DagDefinitionError, match="delta"):
        TimeDeltaSensor(task_id="bad", delta=5)  # type: ignore[arg-type]
