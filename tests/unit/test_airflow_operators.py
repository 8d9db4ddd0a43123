"""The operators and module paths Airflow 2 DAG files commonly use (issue 14 item 7):
custom BaseOperator subclasses, the deprecated modules, State, TriggerDagRunOperator,
ExternalTaskSensor, LatestOnlyOperator, run_as_user, and the e-mail / SLA arguments."""

# the airflow modules exist only at run time, once the compatibility layer is installed
# mypy: disable-error-code="import-not-found"

from __future__ import annotations

import logging
import os
import pwd
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
import pytest
from sqlalchemy import select

from squall.common.db import SessionFactory, session_scope
from squall.common.errors import DagDefinitionError, Reschedule, SquallError, TaskSkipped
from squall.common.models import DagRun, TaskInstance
from squall.common.state import DagRunState, TaskInstanceState
from squall.compat import airflow as compat
from squall.dag_processing.serialization import serialize_dag
from squall.execution.try_hooks import become_run_as_user
from squall.runs.trigger import trigger_dag_run
from squall.scheduler.local_run import ensure_dag_row, run_dag_locally
from squall.sdk.dag import DAG
from squall.sdk.deprecation import DeprecatedArgumentWarning
from squall.sdk.operators.empty import EmptyOperator
from squall.sdk.operators.latest_only import LatestOnlyOperator
from squall.sdk.operators.python import PythonOperator
from squall.sdk.operators.trigger_dagrun import TriggerDagRunOperator, install_dag_run_trigger
from squall.sdk.sensors.external_task import ExternalTaskSensor
from tests.unit.fake_ti import FakeTI, make_context

START = pendulum.datetime(2024, 1, 1, tz="UTC")


@pytest.fixture
def airflow_installed() -> Iterator[None]:
    compat.install()
    yield
    compat.uninstall()


# --------------------------------------------------------------------------- module paths


def test_deprecated_module_paths_serve_squalls_objects(airflow_installed: None) -> None:
    from airflow.models import BaseOperator as ModelsBaseOperator
    from airflow.models.baseoperator import BaseOperator
    from airflow.operators.bash_operator import BashOperator
    from airflow.operators.dagrun_operator import TriggerDagRunOperator as OldTrigger
    from airflow.operators.dummy_operator import DummyOperator
    from airflow.operators.latest_only import LatestOnlyOperator as Latest
    from airflow.operators.python_operator import BranchPythonOperator, PythonOperator
    from airflow.operators.trigger_dagrun import TriggerDagRunOperator as Trigger
    from airflow.sensors.base_sensor_operator import BaseSensorOperator
    from airflow.sensors.external_task import ExternalTaskMarker, ExternalTaskSensor
    from airflow.utils.decorators import apply_defaults
    from airflow.utils.state import State

    from squall.sdk.operators import bash, dummy, python
    from squall.sdk.operators.base import BaseOperator as SquallBase
    from squall.sdk.sensors import base as sensors_base
    from squall.sdk.sensors import external_task

    assert BaseOperator is ModelsBaseOperator is SquallBase
    assert BashOperator is bash.BashOperator
    assert PythonOperator is python.PythonOperator
    assert BranchPythonOperator is python.BranchPythonOperator
    assert DummyOperator is dummy.DummyOperator
    assert BaseSensorOperator is sensors_base.BaseSensorOperator
    assert Trigger is OldTrigger is TriggerDagRunOperator
    assert Latest is LatestOnlyOperator
    assert ExternalTaskSensor is external_task.ExternalTaskSensor
    assert ExternalTaskMarker is external_task.ExternalTaskMarker
    assert State.SUCCESS == "success" and State.NONE is None
    assert State.FAILED in State.failed_states and State.SKIPPED in State.success_states
    assert State.UPSTREAM_FAILED in State.finished and None in State.unfinished

    def f() -> int:
        return 1

    assert apply_defaults(f) is f


def test_a_custom_operator_in_airflows_idiom(airflow_installed: None, tmp_path: Path) -> None:
    from airflow.models import BaseOperator
    from airflow.utils.decorators import apply_defaults

    (tmp_path / "query.sql").write_text("SELECT '{{ ds }}' AS day, {{ params.n }} AS n")

    class SqlishOperator(BaseOperator):
        template_fields = ("sql", "title")
        template_ext = (".sql",)
        ui_color = "#ededed"

        @apply_defaults
        def __init__(self, *, sql: str, title: str = "x", **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.sql = sql
            self.title = title

        def execute(self, context: Any) -> str:
            self.log.info("running %s", self.title)
            return f"{self.title}: {self.sql}"

    with DAG("custom", start_date=START, schedule="@daily", template_searchpath=[str(tmp_path)],
             default_args={"retries": 2, "email": ["ops@example.com"],
                           "email_on_failure": False, "sla": timedelta(hours=1)},
             sla_miss_callback=lambda *a: None) as dag:
        op = SqlishOperator(task_id="q", sql="query.sql", title="{{ ds_nodash }}",
                            params={"n": 3}, run_as_user="nobody",
                            email_on_retry=False)
    assert op.retries == 2 and op.email == ["ops@example.com"]
    assert op.email_on_failure is False and op.email_on_retry is False
    assert op.sla == timedelta(hours=1) and op.run_as_user == "nobody"
    assert op.ui_color == "#ededed" and dag.sla_miss_callback is not None
    assert op.log.name.endswith("SqlishOperator")
    context = make_context(op, logical_date=pendulum.datetime(2024, 3, 5, tz="UTC"))
    op.render_template_fields(context)
    assert op.execute(context) == "20240305: SELECT '2024-03-05' AS day, 3 AS n"
    # serialization keeps the e-mail address
    assert serialize_dag(dag)["dag"]["tasks"][0]["email"] == ["ops@example.com"]


def test_the_email_and_sla_arguments_are_checked() -> None:
    with pytest.raises(DagDefinitionError, match="sla must be a timedelta"):
        EmptyOperator(task_id="t", sla=3600)  # type: ignore[arg-type]
    with pytest.raises(DagDefinitionError, match="run_as_user"):
        EmptyOperator(task_id="t", run_as_user="")


# --------------------------------------------------------------------------- run_as_user


def test_run_as_user_switches_the_process_when_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("switching users needs root")
    task = EmptyOperator(task_id="t", run_as_user="nobody")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child switches, as a worker's task process does
        os.close(read)
        refused = become_run_as_user(task)
        os.write(write, f"{refused}|{os.getuid()}|{os.getgid()}|{os.environ['USER']}".encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as fh:
        got = fh.read()
    os.waitpid(pid, 0)
    nobody = pwd.getpwnam("nobody")
    assert got == f"None|{nobody.pw_uid}|{nobody.pw_gid}|nobody"
    assert os.geteuid() == 0  # this process is left as it was


def test_run_as_user_is_refused_clearly() -> None:
    assert become_run_as_user(EmptyOperator(task_id="a")) is None
    missing = become_run_as_user(EmptyOperator(task_id="b", run_as_user="no-such-user-x"))
    assert missing is not None and "no such user" in missing
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert become_run_as_user(EmptyOperator(task_id="c", run_as_user=me)) is None
    if os.geteuid() == 0:
        return
    refused = become_run_as_user(EmptyOperator(task_id="d", run_as_user="root"))
    assert refused is not None and "not root" in refused


# --------------------------------------------------------------------------- database-backed


class DbTI(FakeTI):
    """A FakeTI with the database the operators read and write."""

    def __init__(self, task: Any, factory: SessionFactory) -> None:
        super().__init__(task)
        self.session_factory = factory


def _upstream_dag() -> DAG:
    with DAG("upstream", start_date=START, schedule="@daily") as dag:
        EmptyOperator(task_id="ok")

        def boom() -> None:
            raise RuntimeError("boom")

        PythonOperator(task_id="bad", python_callable=boom)
    return dag


def _sync(factory: SessionFactory, dag: DAG) -> None:
    from squall.common.models import SerializedDagModel

    with session_scope(factory) as session:
        ensure_dag_row(session, dag)
        data = serialize_dag(dag)
        session.merge(SerializedDagModel(dag_id=dag.dag_id, fileloc="x.py", data=data,
                                         dag_hash="h"))


def test_external_task_sensor_poke(sqlite_session_factory: SessionFactory) -> None:
    factory = sqlite_session_factory
    upstream = _upstream_dag()
    _sync(factory, upstream)
    ran = run_dag_locally(upstream, factory, logical_date=START)
    assert {t.task_id: t.state for t in ran.task_instances} == {"ok": "success",
                                                                "bad": "failed"}

    with DAG("down", start_date=START, schedule="@daily"):
        ok = ExternalTaskSensor(task_id="ok", external_dag_id="upstream",
                                external_task_id="ok", execution_delta=timedelta(hours=6))
        fails = ExternalTaskSensor(task_id="fails", external_dag_id="upstream",
                                   external_task_ids=["ok", "bad"],
                                   failed_states=["failed"])
        soft = ExternalTaskSensor(task_id="soft", external_dag_id="upstream",
                                  external_task_id="bad", failed_states=["failed"],
                                  soft_fail=True)
        whole = ExternalTaskSensor(task_id="whole", external_dag_id="upstream",
                                   external_task_id=None, allowed_states=["failed"])
        by_fn = ExternalTaskSensor(
            task_id="by_fn", external_dag_id="upstream", external_task_id="ok",
            # gets the logical date and the context entries it names, as in Airflow
            execution_date_fn=lambda dt, ds: [pendulum.parse(ds).subtract(days=1)])
        waiting = ExternalTaskSensor(task_id="waiting", external_dag_id="upstream",
                                     external_task_id="ok", mode="reschedule",
                                     poke_interval=30, execution_delta=timedelta(days=1))
    at = START.add(hours=6)

    def poke(sensor: ExternalTaskSensor, logical: pendulum.DateTime = at) -> Any:
        return sensor.poke(make_context(sensor, DbTI(sensor, factory), logical_date=logical))

    assert poke(ok) is True
    assert poke(ok, START) is False  # no run at START - 6h
    with pytest.raises(SquallError, match=r"Some of the external tasks \['ok', 'bad'\]"):
        poke(fails, START)
    with pytest.raises(TaskSkipped, match="soft_fail"):
        poke(soft, START)
    assert poke(whole, START) is True  # the run failed, and failed is what it waits for
    assert poke(by_fn, START.add(days=1)) is True  # the day before: START's run
    assert poke(by_fn, START.add(days=2)) is False  # the day before has no run
    context = make_context(waiting, DbTI(waiting, factory), logical_date=START)
    with pytest.raises(Reschedule):
        waiting.execute(context)  # the day before has no run: give the slot back


def test_external_task_sensor_refuses_bad_arguments() -> None:
    with pytest.raises(DagDefinitionError, match="not both"):
        ExternalTaskSensor(task_id="a", external_dag_id="x", external_task_id="t",
                           execution_delta=timedelta(1), execution_date_fn=lambda d: d)
    with pytest.raises(DagDefinitionError, match="allowed and as failed"):
        ExternalTaskSensor(task_id="b", external_dag_id="x", external_task_id="t",
                           allowed_states=["success"], failed_states=["success"])
    with pytest.raises(DagDefinitionError, match="not valid"):
        ExternalTaskSensor(task_id="c", external_dag_id="x", allowed_states=["skipped"])


@pytest.fixture
def trigger_installed() -> Iterator[None]:
    install_dag_run_trigger(trigger_dag_run)
    yield
    install_dag_run_trigger(None)


def test_trigger_dag_run_creates_a_queued_run(sqlite_session_factory: SessionFactory,
                                              trigger_installed: None) -> None:
    factory = sqlite_session_factory
    target = _upstream_dag()
    _sync(factory, target)
    with DAG("controller", start_date=START, schedule=None), pytest.warns(
            DeprecatedArgumentWarning, match="execution_date is deprecated; use logical_date"):
        trigger = TriggerDagRunOperator(task_id="go", trigger_dag_id="upstream",
                                        trigger_run_id="from_{{ ds_nodash }}",
                                        conf={"day": "{{ ds }}"},
                                        execution_date="{{ logical_date }}")
    ti = DbTI(trigger, factory)
    context = make_context(trigger, ti, logical_date=START)
    trigger.render_template_fields(context)
    trigger.execute(context)
    with session_scope(factory) as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == "upstream")).one()
        states = sorted(session.scalars(select(TaskInstance.state).where(
            TaskInstance.run_id == run.run_id)).all())
        assert (run.run_id, run.state, run.conf, run.external_trigger) == (
            "from_20240101", DagRunState.QUEUED, {"day": "2024-01-01"}, True)
        assert run.logical_date == START
    assert states == ["none", "none"]
    assert ti.xcoms[("go", "trigger_run_id")] == "from_20240101"
    assert ti.xcoms[("go", "trigger_execution_date_iso")] == START.isoformat()

    # the same run again fails, unless reset_dag_run clears it
    again = make_context(trigger, DbTI(trigger, factory), logical_date=START)
    with pytest.raises(SquallError, match="already has a run"):
        trigger.execute(again)
    trigger.reset_dag_run = True
    trigger.execute(again)


def test_trigger_dag_run_waits_for_completion(sqlite_session_factory: SessionFactory,
                                              trigger_installed: None) -> None:
    factory = sqlite_session_factory
    _sync(factory, _upstream_dag())

    class Clock:
        """Ends the triggered run in ``state`` at the first wait."""

        def __init__(self, state: str) -> None:
            self.state = state
            self.sleeps: list[float] = []

        def now(self) -> pendulum.DateTime:
            return pendulum.now("UTC")

        def sleep(self, seconds: float) -> None:
            self.sleeps.append(seconds)
            with session_scope(factory) as session:
                for run in session.scalars(select(DagRun).where(DagRun.dag_id == "upstream")):
                    run.state = self.state

    for n, (state, fails) in enumerate([("success", False), ("failed", True)]):
        with DAG(f"waiter{n}", start_date=START, schedule=None):
            op = TriggerDagRunOperator(task_id="go", trigger_dag_id="upstream",
                                       wait_for_completion=True, poke_interval=5,
                                       logical_date=START.add(days=n))
        op.clock = Clock(state)
        context = make_context(op, DbTI(op, factory), logical_date=START)
        if fails:
            with pytest.raises(SquallError, match="upstream failed with failed states failed"):
                op.execute(context)
        else:
            op.execute(context)
        assert op.clock.sleeps == [5.0]  # type: ignore[attr-defined]


def test_trigger_dag_run_names_a_dag_that_is_not_in_the_database(
        sqlite_session_factory: SessionFactory, trigger_installed: None) -> None:
    with DAG("c2", start_date=START, schedule=None):
        op = TriggerDagRunOperator(task_id="go", trigger_dag_id="nowhere")
    with pytest.raises(SquallError, match="'nowhere' to trigger is not in the metadata"):
        op.execute(make_context(op, DbTI(op, sqlite_session_factory)))


# --------------------------------------------------------------------------- LatestOnly


@pytest.mark.parametrize(("latest", "manual"), [(True, False), (False, False), (False, True)])
def test_latest_only(latest: bool, manual: bool) -> None:
    from types import SimpleNamespace

    with DAG("lo", start_date=START, schedule="@daily"):
        gate = LatestOnlyOperator(task_id="latest_only")
        after = EmptyOperator(task_id="after")
        gate >> after
    today = pendulum.now("UTC").start_of("day")
    # the latest run covers yesterday; an older one covers the day before that
    logical = today.subtract(days=1) if latest else today.subtract(days=3)
    run = SimpleNamespace(run_id="r", conf={}, external_trigger=manual, logical_date=logical,
                          data_interval_start=logical, data_interval_end=logical.add(days=1))
    ti = FakeTI(gate)
    context = make_context(gate, ti, logical_date=logical, dag_run=run)
    chosen = gate.execute(context)
    proceeds = latest or manual
    assert chosen == (["after"] if proceeds else [])
    assert ti.skipped == ([] if proceeds else ["after"])


def test_loggers_reach_the_task_log(caplog: pytest.LogCaptureFixture) -> None:
    op = EmptyOperator(task_id="t")
    with caplog.at_level(logging.INFO):
        op.log.info("hello from the task")
    assert "hello from the task" in caplog.text
    assert TaskInstanceState.SUCCESS == "success"


def test_airflow_configuration_and_mapping(airflow_installed: None) -> None:
    from airflow.configuration import conf
    from airflow.operators.bash import BashOperator

    from squall.common.settings import Settings

    assert conf.getint("core", "parallelism") == Settings.load().core.parallelism
    assert conf.get("core", "no_such_key", fallback=None) is None
    from airflow.models.mappedoperator import MappedOperator

    mapped = BashOperator.partial(task_id="many").expand(bash_command=["a", "b"])
    assert isinstance(mapped, MappedOperator)
    with pytest.raises(DagDefinitionError, match="unexpected type 'str'"):
        BashOperator.partial(task_id="one").expand(bash_command="a")


def test_operator_xcom_helpers() -> None:
    op = EmptyOperator(task_id="t")
    ti = FakeTI(op, xcoms={("up", "return_value"): 5})
    context = make_context(op, ti)
    op.xcom_push(context, "k", "v")
    assert ti.xcoms[("t", "k")] == "v"
    assert op.xcom_pull(context, task_ids="up") == 5


def test_external_task_sensor_on_a_task_group(sqlite_session_factory: SessionFactory) -> None:
    from squall.sdk.taskgroup import TaskGroup

    factory = sqlite_session_factory
    with DAG("grouped", start_date=START, schedule="@daily") as upstream:
        with TaskGroup("load"):
            EmptyOperator(task_id="a")
            EmptyOperator(task_id="b")
        EmptyOperator(task_id="outside")
    _sync(factory, upstream)
    assert run_dag_locally(upstream, factory, logical_date=START).state == "success"
    with DAG("watcher", start_date=START, schedule="@daily"):
        group = ExternalTaskSensor(task_id="g", external_dag_id="grouped",
                                   external_task_group_id="load", check_existence=True)
        missing = ExternalTaskSensor(task_id="m", external_dag_id="grouped",
                                     external_task_group_id="nope")
        unknown = ExternalTaskSensor(task_id="u", external_dag_id="grouped",
                                     external_task_id="zzz", check_existence=True)
    assert group.poke(make_context(group, DbTI(group, factory), logical_date=START)) is True
    assert group.poke(make_context(group, DbTI(group, factory),
                                   logical_date=START.add(days=1))) is False
    with pytest.raises(SquallError, match="'nope' in DAG 'grouped' does not exist"):
        missing.poke(make_context(missing, DbTI(missing, factory), logical_date=START))
    with pytest.raises(SquallError, match=r"\['zzz'\] in DAG grouped do not exist"):
        unknown.poke(make_context(unknown, DbTI(unknown, factory), logical_date=START))
