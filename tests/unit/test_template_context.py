"""The template context as Airflow 2 gives it (issue 14 item 4): the neighbouring schedule
dates, the previous successful run, ``conf`` as the configuration, ``macros``, and XCom's
``include_prior_dates`` and ``task_ids=None``."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pendulum
import pytest
from sqlalchemy import select

from squall.common.db import SessionFactory, session_scope
from squall.common.errors import SettingsError
from squall.common.models import DagRun
from squall.common.settings import Settings
from squall.scheduler.local_run import run_dag_locally
from squall.sdk.dag import DAG
from squall.sdk.operators.empty import EmptyOperator
from squall.sdk.operators.python import PythonOperator
from squall.sdk.templating import ConfigView, build_context, make_jinja_env, render_template

START = pendulum.datetime(2024, 1, 1, tz="UTC")
LOGICAL = pendulum.datetime(2024, 3, 5, tz="UTC")


def _context(dag: DAG, *, external_trigger: bool, logical: pendulum.DateTime = LOGICAL,
             end: pendulum.DateTime | None = None, **kwargs: Any) -> dict[str, Any]:
    task = dag.tasks[0]
    run = SimpleNamespace(run_id="r", conf={}, external_trigger=external_trigger,
                          logical_date=logical, data_interval_start=logical,
                          data_interval_end=end or logical.add(days=1))
    return build_context(dag=dag, task=task, dag_run=run, **kwargs)


def test_scheduled_run_gets_the_neighbouring_schedule_dates() -> None:
    with DAG("daily", start_date=START, schedule="@daily") as dag:
        EmptyOperator(task_id="t")
    ctx = _context(dag, external_trigger=False)
    assert (ctx["prev_ds"], ctx["prev_ds_nodash"]) == ("2024-03-04", "20240304")
    assert (ctx["next_ds"], ctx["next_ds_nodash"]) == ("2024-03-06", "20240306")
    assert ctx["prev_execution_date"] == pendulum.datetime(2024, 3, 4, tz="UTC")
    assert ctx["next_execution_date"] == pendulum.datetime(2024, 3, 6, tz="UTC")
    assert isinstance(ctx["prev_execution_date"], pendulum.DateTime)
    assert (ctx["yesterday_ds"], ctx["yesterday_ds_nodash"]) == ("2024-03-04", "20240304")
    assert (ctx["tomorrow_ds"], ctx["tomorrow_ds_nodash"]) == ("2024-03-06", "20240306")
    assert ctx["execution_date"] == ctx["logical_date"] == LOGICAL
    assert ctx["ts_nodash"] == "20240305T000000"
    assert ctx["ts_nodash_with_tz"] == "20240305T000000+0000"


def test_an_hourly_cron_steps_by_the_hour() -> None:
    with DAG("hourly", start_date=START, schedule="0 * * * *") as dag:
        EmptyOperator(task_id="t")
    at = pendulum.datetime(2024, 3, 5, 10, tz="UTC")
    ctx = _context(dag, external_trigger=False, logical=at, end=at.add(hours=1))
    assert ctx["prev_execution_date"] == at.subtract(hours=1)
    assert ctx["next_execution_date"] == at.add(hours=1)
    assert ctx["prev_ds"] == ctx["next_ds"] == ctx["ds"] == "2024-03-05"
    assert ctx["yesterday_ds"] == "2024-03-04"


def test_a_manual_run_has_its_own_date_as_prev_and_next() -> None:
    """Airflow 2.2+: for an externally triggered run, prev and next are its logical date."""
    with DAG("manual", start_date=START, schedule="@daily") as dag:
        EmptyOperator(task_id="t")
    ctx = _context(dag, external_trigger=True)
    assert ctx["prev_ds"] == ctx["ds"] == ctx["next_ds"] == "2024-03-05"
    assert ctx["prev_execution_date"] == ctx["next_execution_date"] == LOGICAL


def test_a_dag_without_a_schedule_has_no_neighbours() -> None:
    with DAG("unscheduled", start_date=START, schedule=None) as dag:
        EmptyOperator(task_id="t")
    ctx = _context(dag, external_trigger=False)
    assert ctx["prev_ds"] is None and ctx["prev_ds_nodash"] is None
    assert ctx["next_ds"] is None and ctx["next_execution_date"] is None
    assert ctx["yesterday_ds"] == "2024-03-04"


def test_conf_is_the_configuration_and_the_runs_conf_is_dag_run_conf() -> None:
    settings = Settings.load(env={}, overrides={"core": {"dags_folder": "/srv/dags",
                                                         "load_examples": False,
                                                         "parallelism": 7}})
    loads: list[int] = []

    def load() -> Settings:
        loads.append(1)
        return settings

    with DAG("c", start_date=START, schedule=None) as dag:
        EmptyOperator(task_id="t")
    view = ConfigView(load)
    ctx = _context(dag, external_trigger=True, config=view, conf={"x": 1})
    assert loads == []  # not read until asked
    assert ctx["conf"].get("core", "dags_folder") == "/srv/dags"
    assert ctx["conf"].getboolean("core", "load_examples") is False
    assert ctx["conf"].get("core", "load_examples") == "False"
    assert ctx["conf"].getint("core", "parallelism") == 7
    assert ctx["conf"].get("core", "no_such_key", fallback="dflt") == "dflt"
    assert ctx["conf"].has_option("core", "dags_folder")
    with pytest.raises(SettingsError):
        ctx["conf"].get("core", "no_such_key")
    assert loads == [1]  # read once
    assert ctx["dag_run"].conf == {} and ctx["params"]["x"] == 1
    env = make_jinja_env(dag)
    assert render_template("{{ conf.get('core', 'dags_folder') }}", ctx, env) == "/srv/dags"


def test_macros_and_test_mode() -> None:
    with DAG("m", start_date=START, schedule="@daily") as dag:
        EmptyOperator(task_id="t")
    ctx = _context(dag, external_trigger=False, test_mode=True)
    env = make_jinja_env(dag)
    assert ctx["test_mode"] is True
    assert render_template("{{ macros.ds_add(ds, -5) }}", ctx, env) == "2024-02-29"
    assert render_template("{{ macros.ds_format(ds, '%Y-%m-%d', '%d.%m.%Y') }}", ctx,
                           env) == "05.03.2024"
    assert render_template(
        "{{ (execution_date + macros.dateutil.relativedelta.relativedelta(months=1)).month }}",
        ctx, env) == "4"
    assert render_template("{{ macros.datetime(2024, 1, 2).day }}", ctx, env) == "2"
    assert render_template("{{ macros.timedelta(hours=2).seconds }}", ctx, env) == "7200"
    assert len(render_template("{{ macros.uuid.uuid4() }}", ctx, env)) == 36
    assert float(render_template("{{ macros.time.time() }}", ctx, env)) > 0
    assert 0 <= float(render_template("{{ macros.random() }}", ctx, env)) < 1


# --------------------------------------------------------------------------- with the database


def _record(**context: Any) -> dict[str, Any]:
    ti = context["ti"]
    if context["ds"] == "2024-01-01":
        ti.xcom_push(key="only_first", value="from " + context["ds"])
    ti.xcom_push(key="every", value=context["ds"])
    return {"ds": context["ds"]}


def _read(**context: Any) -> dict[str, Any]:
    ti = context["ti"]

    def iso(value: Any) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "prior": ti.xcom_pull(task_ids="record", key="only_first", include_prior_dates=True),
        "this_run_only": ti.xcom_pull(task_ids="record", key="only_first"),
        "any_task": ti.xcom_pull(key="every"),  # task_ids=None: any task of this run
        "any_task_any_key": ti.xcom_pull(task_ids=None, key=None) is not None,
        "listed": ti.xcom_pull(task_ids=["record", "nobody"], key="every"),
        "prev_start": iso(context["prev_data_interval_start_success"]),
        "prev_end": iso(context["prev_data_interval_end_success"]),
        "prev_started": iso(context["prev_start_date_success"]),
        "prev_execution_date_success": iso(context["prev_execution_date_success"]),
    }


def _returned(factory: SessionFactory, dag_id: str, run_id: str) -> Any:
    from squall.execution import xcom

    with session_scope(factory) as session:
        return xcom.pull(session, dag_id=dag_id, run_id=run_id, task_ids="read")


def test_previous_success_and_xcom_across_runs(sqlite_session_factory: SessionFactory) -> None:
    with DAG("ctxdb", start_date=START, schedule="@daily") as dag:
        record = PythonOperator(task_id="record", python_callable=_record)
        read = PythonOperator(task_id="read", python_callable=_read)
        record >> read

    first = run_dag_locally(dag, sqlite_session_factory, logical_date=START)
    assert first.state == "success"
    got = _returned(sqlite_session_factory, "ctxdb", first.run_id)
    assert got["prior"] == got["this_run_only"] == "from 2024-01-01"
    assert got["prev_start"] is None and got["prev_started"] is None  # no earlier success

    second = run_dag_locally(dag, sqlite_session_factory, logical_date=START.add(days=1))
    assert second.state == "success"
    got = _returned(sqlite_session_factory, "ctxdb", second.run_id)
    assert got["prior"] == "from 2024-01-01"  # pushed by the earlier run only
    assert got["this_run_only"] is None
    assert got["any_task"] == "2024-01-02"
    assert got["any_task_any_key"] is True
    assert got["listed"] == ["2024-01-02", None]
    with session_scope(sqlite_session_factory) as session:
        run1 = session.scalars(select(DagRun).where(DagRun.run_id == first.run_id)).one()
        start1 = run1.data_interval_start
        end1 = run1.data_interval_end
    assert got["prev_start"] == start1.isoformat()
    assert got["prev_end"] == end1.isoformat()
    assert got["prev_execution_date_success"] == START.isoformat()
    record_ti = next(t for t in first.task_instances if t.task_id == "read")
    assert record_ti.start_date is not None
    assert got["prev_started"] == pendulum.instance(record_ti.start_date).in_timezone(
        "UTC").isoformat()
    assert abs(pendulum.parse(got["prev_started"]) - pendulum.instance(  # type: ignore[operator]
        record_ti.start_date)) < timedelta(seconds=1)


def test_test_mode_is_true_under_tasks_test(sqlite_session_factory: SessionFactory) -> None:
    from squall.execution import xcom
    from squall.scheduler.local_run import run_task_locally

    with DAG("tm", start_date=START, schedule=None) as dag:
        PythonOperator(task_id="t", python_callable=lambda test_mode: {"test_mode": test_mode})
    single = run_task_locally(dag, "t", sqlite_session_factory, logical_date=START)
    whole = run_dag_locally(dag, sqlite_session_factory, logical_date=START.add(days=1))
    with session_scope(sqlite_session_factory) as session:
        runs = dict(session.execute(select(DagRun.logical_date, DagRun.run_id)).all())
        got = {when: xcom.pull(session, dag_id="tm", run_id=run_id, task_ids="t")
               for when, run_id in runs.items()}
    assert single.state == whole.state == "success"
    assert got == {START: {"test_mode": True}, START.add(days=1): {"test_mode": False}}
