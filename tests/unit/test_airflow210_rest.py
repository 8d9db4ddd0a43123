"""Airflow 2.10's remaining core authoring surface (issue 24): the pure logic of the DAG and
task arguments, the sensors, run_if / skip_if, ``@continuous`` and the compat helpers.

Airflow's rules are cited per test (files of the 2.10.5 wheel)."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import jinja2
import pendulum
import pytest

from squall.common.errors import (
    DagDefinitionError,
    SquallError,
    TaskDeferred,
    TaskFailedNoRetry,
    TaskSkipped,
)
from squall.dag_processing.loading import load_file
from squall.dag_processing.serialization import deserialize_dag, serialize_dag
from squall.scheduler.readiness import PreviousInstance, past_wait_reason
from squall.sdk.current_context import get_current_context, set_current_context
from squall.sdk.dag import DAG
from squall.sdk.dag_defaults import DagDefaults, authoring_defaults
from squall.sdk.decorators import task
from squall.sdk.operators.empty import EmptyOperator
from squall.sdk.sensors.bash import BashSensor
from squall.sdk.sensors.date_time import DateTimeSensor, TimeSensor
from squall.sdk.sensors.weekday import DayOfWeekSensor, WeekDay
from squall.sdk.task_conditions import run_if, skip_if
from squall.sdk.taskgroup import TaskGroup
from squall.sdk.templating import make_jinja_env
from squall.sdk.timetables import ContinuousTimetable, DataInterval
from tests.unit.fake_ti import FakeTI, make_context, run_task

START = pendulum.datetime(2024, 1, 1, tz="UTC")


class Clock:
    def __init__(self, at: pendulum.DateTime) -> None:
        self.at = at

    def now(self) -> pendulum.DateTime:
        return self.at

    def sleep(self, seconds: float) -> None:
        self.at = self.at.add(seconds=seconds)


# --------------------------------------------------------------------------- DAG arguments


def test_dag_ui_hints_are_validated_as_airflow_does() -> None:
    """airflow/models/dag.py: DEFAULT_VIEW_PRESETS, ORIENTATION_PRESETS, 'tree' -> 'grid'."""
    dag = DAG("d", start_date=START, default_view="graph", orientation="TB")
    assert (dag.default_view, dag.orientation) == ("graph", "TB")
    assert DAG("d2", start_date=START).default_view == "grid"
    with pytest.warns(Warning, match="renamed to 'grid'"):
        assert DAG("d3", start_date=START, default_view="tree").default_view == "grid"
    with pytest.raises(DagDefinitionError, match="invalid default_view 'list'"):
        DAG("d4", start_date=START, default_view="list")
    with pytest.raises(DagDefinitionError, match="invalid orientation 'XY'"):
        DAG("d5", start_date=START, orientation="XY")
    rebuilt = deserialize_dag(serialize_dag(dag))
    assert (rebuilt.default_view, rebuilt.orientation) == ("graph", "TB")


def test_max_consecutive_failed_dag_runs_zero_takes_the_deployment_default() -> None:
    """airflow/models/dag.py DAG.__init__: 0 reads [core] max_consecutive_failed_dag_runs_per_dag;
    a negative value is an error."""
    assert DAG("d", start_date=START).max_consecutive_failed_dag_runs == 0
    with authoring_defaults(DagDefaults(max_consecutive_failed_dag_runs=4)):
        assert DAG("d", start_date=START).max_consecutive_failed_dag_runs == 4
        assert DAG("d", start_date=START,
                   max_consecutive_failed_dag_runs=2).max_consecutive_failed_dag_runs == 2
    with pytest.raises(DagDefinitionError, match="max_consecutive_failed_dag_runs >= 0"):
        DAG("d", start_date=START, max_consecutive_failed_dag_runs=-1)
    dag = DAG("d", start_date=START, max_consecutive_failed_dag_runs=3, fail_stop=True)
    rebuilt = deserialize_dag(serialize_dag(dag))
    assert (rebuilt.max_consecutive_failed_dag_runs, rebuilt.fail_stop) == (3, True)


def test_fail_stop_allows_only_all_success() -> None:
    """airflow/exceptions.py FailStopDagInvalidTriggerRule, checked in DAG.add_task."""
    with DAG("d", start_date=START, fail_stop=True):
        EmptyOperator(task_id="ok")
        with pytest.raises(DagDefinitionError, match="fail_stop DAG can only have the "
                                                     "all_success trigger rule"):
            EmptyOperator(task_id="bad", trigger_rule="all_done")
    with DAG("d2", start_date=START):  # without fail_stop any rule goes
        EmptyOperator(task_id="any", trigger_rule="all_done")


def test_template_undefined_and_jinja_environment_kwargs_reach_the_environment() -> None:
    """airflow/models/dag.py DAG.get_template_env: undefined=template_undefined, then the
    jinja_environment_kwargs update the options."""
    dag = DAG("d", start_date=START, template_undefined=jinja2.Undefined,
              jinja_environment_kwargs={"keep_trailing_newline": True})
    env = make_jinja_env(dag)
    assert env.from_string("[{{ missing }}]\n").render() == "[]\n"
    strict = make_jinja_env(DAG("d2", start_date=START))
    with pytest.raises(jinja2.UndefinedError):
        strict.from_string("{{ missing }}").render()
    with pytest.raises(DagDefinitionError, match="template_undefined must be"):
        DAG("d3", start_date=START, template_undefined=str)


def test_access_control_is_accepted_and_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="squall.sdk.dag_options"):
        DAG("acl_dag", start_date=START, access_control={"Viewer": {"can_read"}})
        DAG("acl_dag", start_date=START, access_control={"Viewer": {"can_read"}})
    reported = [r for r in caplog.records if "access_control is ignored" in r.getMessage()]
    assert len(reported) == 1


def test_auto_register_false_keeps_only_module_globals(tmp_path: Path) -> None:
    """airflow/models/dagbag.py process_modules: module globals plus DagContext's
    autoregistered DAGs (those used in ``with`` with auto_register=True)."""
    path = tmp_path / "auto.py"
    path.write_text(
        "import pendulum\n"
        "from squall.sdk.dag import DAG\n"
        "from squall.sdk.operators.empty import EmptyOperator\n"
        "S = pendulum.datetime(2024, 1, 1, tz='UTC')\n"
        "def make(dag_id, auto):\n"
        "    with DAG(dag_id, start_date=S, auto_register=auto) as d:\n"
        "        EmptyOperator(task_id='t')\n"
        "    return d\n"
        "make('registered', True)\n"
        "make('not_registered', False)\n"
        "kept = make('global_kept', False)\n")
    result = load_file(path, tmp_path)
    assert result.error is None
    assert sorted(d.dag_id for d in result.dags) == ["global_kept", "registered"]


def test_continuous_schedule() -> None:
    """airflow/timetables/simple.py ContinuousTimetable: first run from start_date to now,
    then from the last run's end to now; active_runs_limit 1 (DAG.__init__ check)."""
    with pytest.raises(DagDefinitionError, match="'@continuous' requires max_active_runs <= 1"):
        DAG("c", schedule="@continuous", start_date=START)
    dag = DAG("c", schedule="@continuous", start_date=START, max_active_runs=1)
    timetable = dag.timetable
    assert isinstance(timetable, ContinuousTimetable)
    now = pendulum.datetime(2024, 6, 1, 12, tz="UTC")
    first = timetable.next_dagrun_info(last_automated_data_interval=None, start_date=START,
                                       end_date=None, catchup=False, now=now)
    assert first is not None
    assert (first.logical_date, first.data_interval.end, first.run_after) == (START, now, now)
    second = timetable.next_dagrun_info(last_automated_data_interval=first.data_interval,
                                        start_date=START, end_date=None, catchup=False,
                                        now=now)
    assert second is not None and second.logical_date == now  # logical dates never repeat
    assert second.data_interval.end > now
    assert timetable.next_dagrun_info(
        last_automated_data_interval=DataInterval(now, now), start_date=START,
        end_date=now, catchup=False, now=now.add(hours=1)) is None
    assert isinstance(deserialize_dag(serialize_dag(dag)).timetable, ContinuousTimetable)


# --------------------------------------------------------------------------- task arguments


def test_task_arguments_kept_and_validated() -> None:
    """airflow/models/baseoperator.py: doc_*, logger_name, resources, executor."""
    calls: list[Any] = []
    with DAG("d", start_date=START):
        op = EmptyOperator(task_id="t", doc="d", doc_json="{}", doc_yaml="a: 1", doc_rst="r",
                           logger_name="custom", resources={"cpus": 1},
                           executor="CeleryExecutor", allow_nested_operators=False,
                           pre_execute=lambda ctx: calls.append("pre"),
                           post_execute=lambda ctx, result: calls.append(("post", result)))
        with pytest.raises(DagDefinitionError, match="executor='KubernetesExecutor' is not "
                                                     "available"):
            EmptyOperator(task_id="k", executor="KubernetesExecutor")
    assert (op.doc, op.doc_json, op.doc_yaml, op.doc_rst) == ("d", "{}", "a: 1", "r")
    assert op.log.name == "squall.task.operators.custom"
    assert op.resources == {"cpus": 1} and op.ignore_first_depends_on_past is True
    op.pre_execute({})
    op.post_execute({}, 5)
    assert calls == ["pre", ("post", 5)]
    rebuilt = deserialize_dag(serialize_dag(op.dag)).task_dict["t"]  # type: ignore[arg-type]
    assert (rebuilt.doc_json, rebuilt.executor) == ("{}", "CeleryExecutor")


def test_ignore_first_depends_on_past() -> None:
    """airflow/ti_deps/deps/prev_dagrun_dep.py: a previous run without the task's instance
    passes only with ignore_first_depends_on_past (Airflow 2.10's default True)."""
    previous = PreviousInstance(dag_id="d", task_id="t", run_id="r0",
                                logical_date=START, state=None)
    assert past_wait_reason(previous) is None
    why = past_wait_reason(previous, ignore_first=False)
    assert why is not None and "has not run yet" in why
    assert past_wait_reason(None, ignore_first=False) is None  # the first run ever


# --------------------------------------------------------------------------- sensors


def test_time_sensor_compares_the_wall_time_in_the_dags_time_zone() -> None:
    """airflow/sensors/time_sensor.py: make_naive(utcnow(), dag.timezone).time() > target."""
    with DAG("d", start_date=pendulum.datetime(2024, 1, 1, tz="Europe/Amsterdam")):
        sensor = TimeSensor(task_id="t", target_time=dt.time(13, 30))
    # 12:45 UTC is 13:45 in Amsterdam (winter): past 13:30 there
    sensor.clock = Clock(pendulum.datetime(2024, 1, 10, 12, 45, tz="UTC"))
    assert sensor.poke(make_context(sensor)) is True
    sensor.clock = Clock(pendulum.datetime(2024, 1, 10, 12, 15, tz="UTC"))
    assert sensor.poke(make_context(sensor)) is False
    with pytest.raises(DagDefinitionError, match=r"datetime\.time"):
        TimeSensor(task_id="x", target_time="13:30")


def test_date_time_sensor_renders_target_time() -> None:
    """airflow/sensors/date_time.py: target_time is templated; utcnow() > parse(target)."""
    with DAG("d", start_date=START):
        sensor = DateTimeSensor(task_id="t", target_time="{{ ds }}T10:00:00+00:00")
        given = DateTimeSensor(task_id="g", target_time=dt.datetime(2024, 3, 5, 9,
                                                                    tzinfo=dt.UTC))
    assert given.target_time == "2024-03-05T09:00:00+00:00"
    ti = FakeTI(sensor)
    context = make_context(sensor, ti)
    sensor.render_template_fields(context)
    assert sensor.target_time == "2024-03-05T10:00:00+00:00"
    sensor.clock = Clock(pendulum.datetime(2024, 3, 5, 10, 0, 1, tz="UTC"))
    assert sensor.poke(context) is True
    sensor.clock = Clock(pendulum.datetime(2024, 3, 5, 9, 59, tz="UTC"))
    assert sensor.poke(context) is False
    with pytest.raises(DagDefinitionError, match=r"expected str or datetime\.datetime"):
        DateTimeSensor(task_id="bad", target_time=5)


def test_day_of_week_sensor() -> None:
    """airflow/sensors/weekday.py: the logical date's day with use_task_logical_date, else
    today's; airflow/utils/weekday.py WeekDay.validate_week_day."""
    assert WeekDay.validate_week_day({"saturday", WeekDay.SUNDAY}) == {6, 7}
    with DAG("d", start_date=START):
        by_date = DayOfWeekSensor(task_id="a", week_day="Tuesday", use_task_logical_date=True)
        today = DayOfWeekSensor(task_id="b", week_day={"Saturday", "Sunday"})
        with pytest.raises(DagDefinitionError, match="Invalid Week Day"):
            DayOfWeekSensor(task_id="c", week_day="Caturday")
    # the fake run's logical date, 2024-03-05, is a Tuesday
    assert by_date.poke(make_context(by_date)) is True
    today.clock = Clock(pendulum.datetime(2024, 3, 9, tz="UTC"))  # a Saturday
    assert today.poke(make_context(today)) is True
    today.clock = Clock(pendulum.datetime(2024, 3, 11, tz="UTC"))  # a Monday
    assert today.poke(make_context(today)) is False


def test_bash_sensor_exit_codes() -> None:
    """airflow/sensors/bash.py: 0 is done; with retry_exit_code that code pokes again and
    any other fails (AirflowFailException); without it every non-zero code pokes again."""
    with DAG("d", start_date=START):
        done = BashSensor(task_id="a", bash_command="exit 0")
        again = BashSensor(task_id="b", bash_command="exit 3")
        retry = BashSensor(task_id="c", bash_command="exit 99", retry_exit_code=99)
        fail = BashSensor(task_id="e", bash_command="exit 3", retry_exit_code=99)
        templated = BashSensor(task_id="f", bash_command='test "{{ ds }}" = 2024-03-05')
    assert done.poke(make_context(done)) is True
    assert again.poke(make_context(again)) is False
    assert retry.poke(make_context(retry)) is False
    with pytest.raises(TaskFailedNoRetry, match="return code 3"):
        fail.poke(make_context(fail))
    assert run_task(templated) is None  # poked once, true


# --------------------------------------------------------------------------- decorators


def test_run_if_and_skip_if() -> None:
    """airflow/decorators/condition.py: the condition becomes the task's pre_execute and
    raises AirflowSkipException; a (bool, message) result gives the message."""
    with DAG("d", start_date=START):
        @task.run_if(lambda context: context["params"].get("go", False))
        @task
        def runs() -> int:
            return 1

        @skip_if(lambda context: (True, "not today"))
        @task
        def skipped() -> int:
            return 2

        @run_if(lambda context: True)
        @task
        def goes() -> int:
            return 3

        a, b, c = runs(), skipped(), goes()
    with pytest.raises(TaskSkipped, match=r"Task was skipped due to condition\."):
        a.operator.pre_execute(make_context(a.operator))
    with pytest.raises(TaskSkipped, match="not today"):
        b.operator.pre_execute(make_context(b.operator))
    c.operator.pre_execute(make_context(c.operator))
    with pytest.raises(DagDefinitionError, match="decorate with @task before @run_if"):
        run_if(lambda context: True)(lambda: None)


def test_task_group_colours() -> None:
    with DAG("d", start_date=START) as dag, TaskGroup("g", ui_color="#f00", ui_fgcolor="#fff"):
        EmptyOperator(task_id="t")
    group = deserialize_dag(serialize_dag(dag)).task_group.children["g"]
    assert isinstance(group, TaskGroup)
    assert (group.ui_color, group.ui_fgcolor) == ("#f00", "#fff")


def test_get_current_context_outside_and_inside_a_task() -> None:
    with pytest.raises(SquallError, match="no context was found"):
        get_current_context()
    context = {"ds": "2024-01-01"}
    with set_current_context(context):
        assert get_current_context() is context
    with pytest.raises(SquallError):
        get_current_context()


def test_defer_raises_task_deferred_with_its_arguments() -> None:
    with DAG("d", start_date=START):
        op = EmptyOperator(task_id="t")
    trigger = object()
    with pytest.raises(TaskDeferred) as info:
        op.defer(trigger=trigger, method_name="resume", kwargs={"a": 1},
                 timeout=dt.timedelta(minutes=5))
    assert info.value.trigger is trigger
    assert info.value.method_name == "resume"
    assert info.value.kwargs == {"a": 1}
    assert info.value.timeout == dt.timedelta(minutes=5)
