# ruff: noqa: E501  (each probe is one line of Python source)
"""One small Airflow 2.10 DAG file per core authoring feature (issue 24 item 6).

``tests/unit/test_airflow210_features.py`` loads each under ``[core] airflow_compat`` and
checks it against the table "Every Airflow 2.10 core authoring feature" in
``docs/airflow-compat.md``: a feature listed as supported imports cleanly; one listed as not
supported fails at import with the one-line error the table quotes. The behaviour of each
supported feature is tested elsewhere (the table names where)."""

from __future__ import annotations

#: the lines every probe starts with
HEADER = (
    "import pendulum\n"
    "from airflow import DAG\n"
    "from airflow.operators.empty import EmptyOperator\n"
    "from airflow.operators.bash import BashOperator\n"
    "from airflow.operators.python import PythonOperator\n"
    "START = pendulum.datetime(2024, 1, 1, tz='UTC')\n"
)

FEATURES: dict[str, str] = {}


def f(name: str, body: str) -> None:
    assert name not in FEATURES, name
    FEATURES[name] = body

# ---------------------------------------------------------------- DAG
f("DAG with a cron schedule", 'with DAG("probe", schedule="0 3 * * *", start_date=START): EmptyOperator(task_id="t")')
f("DAG with a preset schedule", 'with DAG("probe", schedule="@daily", start_date=START): EmptyOperator(task_id="t")')
f("DAG with a timedelta schedule", 'import datetime\nwith DAG("probe", schedule=datetime.timedelta(hours=6), start_date=START): EmptyOperator(task_id="t")')
f("DAG with schedule=None", 'with DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t")')
f("DAG with schedule=\"@once\"", 'with DAG("probe", schedule="@once", start_date=START): EmptyOperator(task_id="t")')
f("DAG with schedule=\"@continuous\"", 'with DAG("probe", schedule="@continuous", max_active_runs=1, start_date=START): EmptyOperator(task_id="t")')
f("DAG with a time-zone-aware start_date", 'with DAG("probe", schedule="0 3 * * *", start_date=pendulum.datetime(2024, 1, 1, tz="Europe/Amsterdam")): EmptyOperator(task_id="t")')
f("schedule_interval= (deprecated)", 'with DAG("probe", schedule_interval="@daily", start_date=START): EmptyOperator(task_id="t")')
f("@dag decorator", 'from airflow.decorators import dag, task\n@dag(schedule=None, start_date=START)\ndef probe():\n    @task\n    def t(): pass\n    t()\nprobe()')
f("DAG catchup, end_date, default_args", 'import datetime\nwith DAG("probe", schedule="@daily", start_date=START, end_date=START.add(days=3), catchup=True, default_args={"retries": 2, "retry_delay": datetime.timedelta(seconds=5)}): EmptyOperator(task_id="t")')
f("DAG max_active_runs, max_active_tasks", 'with DAG("probe", schedule=None, start_date=START, max_active_runs=2, max_active_tasks=4): EmptyOperator(task_id="t")')
f("DAG max_consecutive_failed_dag_runs", 'with DAG("probe", schedule="@daily", start_date=START, max_consecutive_failed_dag_runs=3): EmptyOperator(task_id="t")')
f("DAG dagrun_timeout", 'import datetime\nwith DAG("probe", schedule=None, start_date=START, dagrun_timeout=datetime.timedelta(hours=1)): EmptyOperator(task_id="t")')
f("DAG tags, description, doc_md, owner_links", 'with DAG("probe", schedule=None, start_date=START, tags=["a"], description="d", doc_md="# x", owner_links={"me": "https://example.com"}): EmptyOperator(task_id="t", owner="me")')
f("DAG on_success_callback, on_failure_callback", 'def cb(context): pass\nwith DAG("probe", schedule=None, start_date=START, on_success_callback=cb, on_failure_callback=[cb]): EmptyOperator(task_id="t")')
f("DAG sla_miss_callback", 'def cb(*args): pass\nwith DAG("probe", schedule=None, start_date=START, sla_miss_callback=cb): EmptyOperator(task_id="t")')
f("DAG user_defined_macros, user_defined_filters", 'with DAG("probe", schedule=None, start_date=START, user_defined_macros={"x": 1}, user_defined_filters={"up": str.upper}): BashOperator(task_id="t", bash_command="echo {{ x }} {{ \'a\' | up }}")')
f("DAG template_searchpath", 'with DAG("probe", schedule=None, start_date=START, template_searchpath=["/tmp"]): EmptyOperator(task_id="t")')
f("DAG template_undefined", 'import jinja2\nwith DAG("probe", schedule=None, start_date=START, template_undefined=jinja2.Undefined): EmptyOperator(task_id="t")')
f("DAG jinja_environment_kwargs", 'with DAG("probe", schedule=None, start_date=START, jinja_environment_kwargs={"keep_trailing_newline": True}): EmptyOperator(task_id="t")')
f("DAG render_template_as_native_obj", 'with DAG("probe", schedule=None, start_date=START, render_template_as_native_obj=True): EmptyOperator(task_id="t")')
f("DAG is_paused_upon_creation", 'with DAG("probe", schedule=None, start_date=START, is_paused_upon_creation=True): EmptyOperator(task_id="t")')
f("DAG access_control", 'with DAG("probe", schedule=None, start_date=START, access_control={"Viewer": {"can_read"}}): EmptyOperator(task_id="t")')
f("DAG default_view, orientation", 'with DAG("probe", schedule=None, start_date=START, default_view="graph", orientation="TB"): EmptyOperator(task_id="t")')
f("DAG auto_register", 'with DAG("probe", schedule=None, start_date=START, auto_register=True): EmptyOperator(task_id="t")')
f("DAG fail_stop", 'with DAG("probe", schedule=None, start_date=START, fail_stop=True): EmptyOperator(task_id="t")')
f("DAG dag_display_name", 'with DAG("probe", schedule=None, start_date=START, dag_display_name="Probe DAG"): EmptyOperator(task_id="t")')
f("DAG params", 'with DAG("probe", schedule=None, start_date=START, params={"n": 1}): EmptyOperator(task_id="t")')
f("Param with JSON schema", 'from airflow.models.param import Param\nwith DAG("probe", schedule=None, start_date=START, params={"n": Param(5, type="integer", minimum=0)}): EmptyOperator(task_id="t")')
f("@dag function arguments as params", 'from airflow.decorators import dag, task\n@dag(schedule=None, start_date=START)\ndef probe(n: int = 1):\n    @task\n    def t(n): pass\n    t(n)\nprobe()')
# ---------------------------------------------------------------- timetables
f("CronTriggerTimetable", 'from airflow.timetables.trigger import CronTriggerTimetable\nwith DAG("probe", schedule=CronTriggerTimetable("0 3 * * *", timezone="UTC"), start_date=START): EmptyOperator(task_id="t")')
f("CronDataIntervalTimetable, DeltaDataIntervalTimetable", 'import datetime\nfrom airflow.timetables.interval import CronDataIntervalTimetable, DeltaDataIntervalTimetable\nwith DAG("probe", schedule=CronDataIntervalTimetable("0 3 * * *", timezone="UTC"), start_date=START): EmptyOperator(task_id="t")\nwith DAG("probe2", schedule=DeltaDataIntervalTimetable(datetime.timedelta(hours=1)), start_date=START): EmptyOperator(task_id="t")')
f("EventsTimetable", 'from airflow.timetables.events import EventsTimetable\nwith DAG("probe", schedule=EventsTimetable(event_dates=[START.add(days=1)]), start_date=START): EmptyOperator(task_id="t")')
f("custom Timetable subclass", 'from airflow.timetables.base import Timetable, DagRunInfo, DataInterval\nclass Weekly(Timetable):\n    def infer_manual_data_interval(self, *, run_after): return DataInterval(run_after, run_after)\n    def next_dagrun_info(self, *, last_automated_data_interval, restriction): return None\nwith DAG("probe", schedule=Weekly(), start_date=START): EmptyOperator(task_id="t")')
f("dataset schedule", 'from airflow.datasets import Dataset\nwith DAG("probe", schedule=[Dataset("s3://b/k")], start_date=START): EmptyOperator(task_id="t")')
f("DatasetOrTimeSchedule", 'from airflow.datasets import Dataset\nfrom airflow.timetables.datasets import DatasetOrTimeSchedule\nfrom airflow.timetables.trigger import CronTriggerTimetable\nwith DAG("probe", schedule=DatasetOrTimeSchedule(timetable=CronTriggerTimetable("0 1 * * *", timezone="UTC"), datasets=[Dataset("s3://b/k")]), start_date=START): EmptyOperator(task_id="t")')
# ---------------------------------------------------------------- BaseOperator arguments
f("retries, retry_delay, retry_exponential_backoff, max_retry_delay", 'import datetime\nwith DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t", retries=3, retry_delay=datetime.timedelta(seconds=1), retry_exponential_backoff=True, max_retry_delay=datetime.timedelta(minutes=1))')
f("execution_timeout", 'import datetime\nwith DAG("probe", schedule=None, start_date=START): BashOperator(task_id="t", bash_command="true", execution_timeout=datetime.timedelta(seconds=30))')
f("pool, pool_slots, queue, priority_weight, weight_rule", 'with DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t", pool="default_pool", pool_slots=1, queue="default", priority_weight=3, weight_rule="upstream")')
f("depends_on_past, wait_for_downstream, ignore_first_depends_on_past", 'with DAG("probe", schedule="@daily", start_date=START): EmptyOperator(task_id="t", depends_on_past=True, wait_for_downstream=True, ignore_first_depends_on_past=True)')
f("wait_for_past_depends_before_skipping", 'with DAG("probe", schedule="@daily", start_date=START): EmptyOperator(task_id="t", depends_on_past=True, wait_for_past_depends_before_skipping=True)')
f("every trigger_rule", 'from airflow.utils.trigger_rule import TriggerRule\nwith DAG("probe", schedule=None, start_date=START):\n    a = EmptyOperator(task_id="a")\n    for r in TriggerRule:\n        a >> EmptyOperator(task_id="t_" + r.value, trigger_rule=r)')
f("max_active_tis_per_dag", 'with DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t", max_active_tis_per_dag=1)')
f("max_active_tis_per_dagrun", 'with DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t", max_active_tis_per_dagrun=1)')
f("task_concurrency (deprecated)", 'with DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t", task_concurrency=1)')
f("on_execute_callback, on_retry_callback, on_success_callback, on_failure_callback", 'def cb(context): pass\nwith DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t", on_execute_callback=cb, on_retry_callback=cb, on_success_callback=cb, on_failure_callback=cb)')
f("on_skipped_callback", 'def cb(context): pass\nwith DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t", on_skipped_callback=cb)')
f("pre_execute, post_execute arguments", 'def cb(context, result=None): pass\nwith DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t", pre_execute=cb, post_execute=cb)')
f("sla", 'import datetime\nwith DAG("probe", schedule="@daily", start_date=START): EmptyOperator(task_id="t", sla=datetime.timedelta(hours=1))')
f("email, email_on_failure, email_on_retry", 'with DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t", email=["a@example.com"], email_on_failure=True, email_on_retry=False)')
f("executor_config", 'with DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t", executor_config={"k": 1})')
f("executor (per-task executor)", 'with DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t", executor="CeleryExecutor")')
f("resources", 'with DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t", resources={"cpus": 1})')
f("run_as_user", 'with DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t", run_as_user="nobody")')
f("map_index_template", 'from airflow.decorators import task\nwith DAG("probe", schedule=None, start_date=START):\n    @task(map_index_template="{{ x }}")\n    def t(x): pass\n    t.expand(x=[1, 2])')
f("doc, doc_md, doc_json, doc_yaml, doc_rst", 'with DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t", doc="d", doc_md="d", doc_json="{}", doc_yaml="a: 1", doc_rst="d")')
f("task_display_name", 'with DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t", task_display_name="The task")')
f("logger_name", 'with DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t", logger_name="custom")')
f("inlets, outlets (plain values)", 'with DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t", inlets=["a"], outlets=["b"])')
f("dataset outlets", 'from airflow.datasets import Dataset\nwith DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t", outlets=[Dataset("s3://b/k")])')
f("do_xcom_push, multiple_outputs", 'with DAG("probe", schedule=None, start_date=START): PythonOperator(task_id="t", python_callable=lambda: {"a": 1}, do_xcom_push=True, multiple_outputs=True)')
# ---------------------------------------------------------------- operators
f("BashOperator env, append_env, cwd, skip_on_exit_code, output_encoding", 'with DAG("probe", schedule=None, start_date=START): BashOperator(task_id="t", bash_command="echo $X", env={"X": "1"}, append_env=True, cwd="/tmp", skip_on_exit_code=99, output_encoding="utf-8")')
f("PythonOperator op_args, op_kwargs, templates_dict, show_return_value_in_logs", 'with DAG("probe", schedule=None, start_date=START): PythonOperator(task_id="t", python_callable=lambda *a, **k: None, op_args=[1], op_kwargs={"a": 2}, templates_dict={"d": "{{ ds }}"}, show_return_value_in_logs=False)')
f("BranchPythonOperator", 'from airflow.operators.python import BranchPythonOperator\nwith DAG("probe", schedule=None, start_date=START): BranchPythonOperator(task_id="b", python_callable=lambda: "x") >> EmptyOperator(task_id="x")')
f("ShortCircuitOperator ignore_downstream_trigger_rules", 'from airflow.operators.python import ShortCircuitOperator\nwith DAG("probe", schedule=None, start_date=START): ShortCircuitOperator(task_id="s", python_callable=lambda: False, ignore_downstream_trigger_rules=False) >> EmptyOperator(task_id="x")')
f("PythonVirtualenvOperator", 'from airflow.operators.python import PythonVirtualenvOperator\ndef fn(): return 1\nwith DAG("probe", schedule=None, start_date=START): PythonVirtualenvOperator(task_id="t", python_callable=fn, requirements=["six"])')
f("ExternalPythonOperator", 'import sys\nfrom airflow.operators.python import ExternalPythonOperator\ndef fn(): return 1\nwith DAG("probe", schedule=None, start_date=START): ExternalPythonOperator(task_id="t", python_callable=fn, python=sys.executable)')
f("BranchPythonVirtualenvOperator", 'from airflow.operators.python import BranchPythonVirtualenvOperator\ndef fn(): return "x"\nwith DAG("probe", schedule=None, start_date=START): BranchPythonVirtualenvOperator(task_id="b", python_callable=fn) >> EmptyOperator(task_id="x")')
f("BranchExternalPythonOperator", 'import sys\nfrom airflow.operators.python import BranchExternalPythonOperator\ndef fn(): return "x"\nwith DAG("probe", schedule=None, start_date=START): BranchExternalPythonOperator(task_id="b", python_callable=fn, python=sys.executable) >> EmptyOperator(task_id="x")')
f("BaseBranchOperator subclass", 'from airflow.operators.branch import BaseBranchOperator\nclass B(BaseBranchOperator):\n    def choose_branch(self, context): return "x"\nwith DAG("probe", schedule=None, start_date=START): B(task_id="b") >> EmptyOperator(task_id="x")')
f("BranchDateTimeOperator", 'import datetime\nfrom airflow.operators.datetime import BranchDateTimeOperator\nwith DAG("probe", schedule=None, start_date=START): BranchDateTimeOperator(task_id="b", follow_task_ids_if_true=["x"], follow_task_ids_if_false=["y"], target_lower=datetime.time(0), target_upper=datetime.time(12)) >> [EmptyOperator(task_id="x"), EmptyOperator(task_id="y")]')
f("BranchDayOfWeekOperator", 'from airflow.operators.weekday import BranchDayOfWeekOperator\nwith DAG("probe", schedule=None, start_date=START): BranchDayOfWeekOperator(task_id="b", follow_task_ids_if_true="x", follow_task_ids_if_false="y", week_day="Monday") >> [EmptyOperator(task_id="x"), EmptyOperator(task_id="y")]')
f("EmptyOperator, DummyOperator", 'from airflow.operators.dummy import DummyOperator\nwith DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t") >> DummyOperator(task_id="u")')
f("LatestOnlyOperator", 'from airflow.operators.latest_only import LatestOnlyOperator\nwith DAG("probe", schedule="@daily", start_date=START): LatestOnlyOperator(task_id="l") >> EmptyOperator(task_id="x")')
f("TriggerDagRunOperator", 'from airflow.operators.trigger_dagrun import TriggerDagRunOperator\nwith DAG("probe", schedule=None, start_date=START): TriggerDagRunOperator(task_id="t", trigger_dag_id="other", conf={"a": 1}, wait_for_completion=False)')
f("EmailOperator", 'from airflow.operators.email import EmailOperator\nwith DAG("probe", schedule=None, start_date=START): EmailOperator(task_id="t", to="a@example.com", subject="s", html_content="c")')
f("SmoothOperator", 'from airflow.operators.smooth import SmoothOperator\nwith DAG("probe", schedule=None, start_date=START): SmoothOperator(task_id="t")')
f("GenericTransfer", 'from airflow.operators.generic_transfer import GenericTransfer\nwith DAG("probe", schedule=None, start_date=START): GenericTransfer(task_id="t", sql="select 1", destination_table="x", source_conn_id="a", destination_conn_id="b")')
f("SubDagOperator", 'from airflow.operators.subdag import SubDagOperator\nwith DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t")')
f("custom BaseOperator with template_fields", 'from airflow.models import BaseOperator\nclass Op(BaseOperator):\n    template_fields = ("msg",)\n    def __init__(self, msg, **kw):\n        super().__init__(**kw)\n        self.msg = msg\n    def execute(self, context): return self.msg\nwith DAG("probe", schedule=None, start_date=START): Op(task_id="t", msg="{{ ds }}")')
# ---------------------------------------------------------------- sensors
f("BaseSensorOperator poke/reschedule, soft_fail, exponential_backoff, timeout", 'from airflow.sensors.base import BaseSensorOperator\nclass S(BaseSensorOperator):\n    def poke(self, context): return True\nwith DAG("probe", schedule=None, start_date=START): S(task_id="s", mode="reschedule", soft_fail=True, exponential_backoff=True, timeout=60, poke_interval=5)')
f("PokeReturnValue", 'from airflow.sensors.base import PokeReturnValue\nfrom airflow.decorators import task\nwith DAG("probe", schedule=None, start_date=START):\n    @task.sensor(poke_interval=1, timeout=10)\n    def s(): return PokeReturnValue(is_done=True, xcom_value=1)\n    s()')
f("PythonSensor", 'from airflow.sensors.python import PythonSensor\nwith DAG("probe", schedule=None, start_date=START): PythonSensor(task_id="s", python_callable=lambda: True)')
f("FileSensor", 'from airflow.sensors.filesystem import FileSensor\nwith DAG("probe", schedule=None, start_date=START): FileSensor(task_id="s", filepath="/tmp/x")')
f("ExternalTaskSensor, ExternalTaskMarker", 'from airflow.sensors.external_task import ExternalTaskSensor, ExternalTaskMarker\nwith DAG("probe", schedule="@daily", start_date=START):\n    ExternalTaskSensor(task_id="s", external_dag_id="other", external_task_id="t")\n    ExternalTaskMarker(task_id="m", external_dag_id="other", external_task_id="t")')
f("TimeDeltaSensor", 'import datetime\nfrom airflow.sensors.time_delta import TimeDeltaSensor\nwith DAG("probe", schedule="@daily", start_date=START): TimeDeltaSensor(task_id="s", delta=datetime.timedelta(minutes=1))')
f("TimeSensor", 'import datetime\nfrom airflow.sensors.time_sensor import TimeSensor\nwith DAG("probe", schedule="@daily", start_date=START): TimeSensor(task_id="s", target_time=datetime.time(1))')
f("DateTimeSensor", 'from airflow.sensors.date_time import DateTimeSensor\nwith DAG("probe", schedule="@daily", start_date=START): DateTimeSensor(task_id="s", target_time="{{ data_interval_end }}")')
f("DayOfWeekSensor", 'from airflow.sensors.weekday import DayOfWeekSensor\nwith DAG("probe", schedule="@daily", start_date=START): DayOfWeekSensor(task_id="s", week_day="Monday")')
f("BashSensor", 'from airflow.sensors.bash import BashSensor\nwith DAG("probe", schedule=None, start_date=START): BashSensor(task_id="s", bash_command="true")')
f("deferrable sensors (TimeDeltaSensorAsync)", 'import datetime\nfrom airflow.sensors.time_delta import TimeDeltaSensorAsync\nwith DAG("probe", schedule="@daily", start_date=START): TimeDeltaSensorAsync(task_id="s", delta=datetime.timedelta(minutes=1))')
f("BaseOperator.defer and triggers", 'from airflow.triggers.temporal import TimeDeltaTrigger\nwith DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t")')
f("DateTimeSensorAsync, TimeSensorAsync", 'import datetime\nfrom airflow.sensors.date_time import DateTimeSensorAsync\nfrom airflow.sensors.time_sensor import TimeSensorAsync\nwith DAG("probe", schedule="@daily", start_date=START):\n    DateTimeSensorAsync(task_id="d", target_time="{{ data_interval_end }}", end_from_trigger=True)\n    TimeSensorAsync(task_id="t", target_time=datetime.time(1))')
f("deferrable=True on FileSensor, ExternalTaskSensor, TriggerDagRunOperator", 'from airflow.sensors.filesystem import FileSensor\nfrom airflow.sensors.external_task import ExternalTaskSensor\nfrom airflow.operators.trigger_dagrun import TriggerDagRunOperator\nwith DAG("probe", schedule="@daily", start_date=START):\n    FileSensor(task_id="f", filepath="/tmp/x", deferrable=True)\n    ExternalTaskSensor(task_id="e", external_dag_id="other", external_task_id="t", deferrable=True, poll_interval=5)\n    TriggerDagRunOperator(task_id="r", trigger_dag_id="other", wait_for_completion=True, deferrable=True)')
f("custom triggers (BaseTrigger, TriggerEvent) and TaskDeferred", 'from airflow.models.baseoperator import BaseOperator\nfrom airflow.exceptions import TaskDeferred\nfrom airflow.triggers.base import BaseTrigger, TriggerEvent\nfrom airflow.triggers.file import FileTrigger\nfrom airflow.triggers.external_task import WorkflowTrigger, DagStateTrigger\nclass Once(BaseTrigger):\n    def serialize(self): return ("probe.Once", {})\n    async def run(self): yield TriggerEvent(1)\nclass Op(BaseOperator):\n    def execute(self, context): raise TaskDeferred(trigger=Once(), method_name="done")\n    def done(self, context, event=None): return event\nwith DAG("probe", schedule=None, start_date=START): Op(task_id="t")')
# ---------------------------------------------------------------- decorators
f("@task, @task.python, multiple_outputs", 'from airflow.decorators import task\nwith DAG("probe", schedule=None, start_date=START):\n    @task(multiple_outputs=True)\n    def a(): return {"x": 1}\n    @task.python\n    def b(x): pass\n    b(a()["x"])')
f("@task.bash", 'from airflow.decorators import task\nwith DAG("probe", schedule=None, start_date=START):\n    @task.bash\n    def t(): return "echo hi"\n    t()')
f("@task.branch", 'from airflow.decorators import task\nwith DAG("probe", schedule=None, start_date=START):\n    @task.branch\n    def b(): return "x"\n    b() >> EmptyOperator(task_id="x")')
f("@task.short_circuit", 'from airflow.decorators import task\nwith DAG("probe", schedule=None, start_date=START):\n    @task.short_circuit\n    def s(): return True\n    s() >> EmptyOperator(task_id="x")')
f("@task.sensor", 'from airflow.decorators import task\nwith DAG("probe", schedule=None, start_date=START):\n    @task.sensor(poke_interval=1, timeout=5)\n    def s(): return True\n    s()')
f("@task.virtualenv", 'from airflow.decorators import task\nwith DAG("probe", schedule=None, start_date=START):\n    @task.virtualenv(requirements=["six"])\n    def t(): return 1\n    t()')
f("@task.external_python", 'import sys\nfrom airflow.decorators import task\nwith DAG("probe", schedule=None, start_date=START):\n    @task.external_python(python=sys.executable)\n    def t(): return 1\n    t()')
f("@task.branch_virtualenv", 'from airflow.decorators import task\nwith DAG("probe", schedule=None, start_date=START):\n    @task.branch_virtualenv\n    def b(): return "x"\n    b() >> EmptyOperator(task_id="x")')
f("@task.branch_external_python", 'import sys\nfrom airflow.decorators import task\nwith DAG("probe", schedule=None, start_date=START):\n    @task.branch_external_python(python=sys.executable)\n    def b(): return "x"\n    b() >> EmptyOperator(task_id="x")')
f("@task.run_if, @task.skip_if", 'from airflow.decorators import task\nwith DAG("probe", schedule=None, start_date=START):\n    @task.run_if(lambda context: True)\n    @task\n    def t(): pass\n    t()')
f("@task(...).override(...)", 'from airflow.decorators import task\nwith DAG("probe", schedule=None, start_date=START):\n    @task\n    def t(): pass\n    t.override(task_id="t2", retries=1)()')
f("get_current_context", 'from airflow.decorators import task\nfrom airflow.operators.python import get_current_context\nwith DAG("probe", schedule=None, start_date=START):\n    @task\n    def t(): return get_current_context()["ds"]\n    t()')
# ---------------------------------------------------------------- structure
f("TaskGroup (prefix_group_id, tooltip, ui_color, default_args)", 'from airflow.utils.task_group import TaskGroup\nwith DAG("probe", schedule=None, start_date=START):\n    with TaskGroup("g", prefix_group_id=True, tooltip="tip", ui_color="#fff", default_args={"retries": 1}) as g:\n        EmptyOperator(task_id="t")')
f("@task_group", 'from airflow.decorators import task, task_group\nwith DAG("probe", schedule=None, start_date=START):\n    @task_group\n    def g():\n        @task\n        def t(): pass\n        t()\n    g()')
f("@task_group called several times", 'from airflow.decorators import task, task_group\nwith DAG("probe", schedule=None, start_date=START):\n    @task_group\n    def g():\n        @task\n        def t(): pass\n        t()\n    g() >> g() >> g()')
f("edge Label", 'from airflow.utils.edgemodifier import Label\nwith DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="a") >> Label("why") >> EmptyOperator(task_id="b")')
f("chain", 'from airflow.models.baseoperator import chain\nwith DAG("probe", schedule=None, start_date=START): chain(EmptyOperator(task_id="a"), [EmptyOperator(task_id="b"), EmptyOperator(task_id="c")], [EmptyOperator(task_id="d"), EmptyOperator(task_id="e")])')
f("chain_linear", 'from airflow.models.baseoperator import chain_linear\nwith DAG("probe", schedule=None, start_date=START): chain_linear(EmptyOperator(task_id="a"), [EmptyOperator(task_id="b"), EmptyOperator(task_id="c")], EmptyOperator(task_id="d"))')
f("cross_downstream", 'from airflow.models.baseoperator import cross_downstream\nwith DAG("probe", schedule=None, start_date=START): cross_downstream([EmptyOperator(task_id="a"), EmptyOperator(task_id="b")], [EmptyOperator(task_id="c"), EmptyOperator(task_id="d")])')
f("setup and teardown (as_setup, as_teardown)", 'with DAG("probe", schedule=None, start_date=START):\n    s = EmptyOperator(task_id="s")\n    w = EmptyOperator(task_id="w")\n    t = EmptyOperator(task_id="t")\n    s >> w >> t.as_teardown(setups=s)')
f("@setup, @teardown", 'from airflow.decorators import task, setup, teardown\nwith DAG("probe", schedule=None, start_date=START):\n    @setup\n    def s(): pass\n    @task\n    def w(): pass\n    @teardown\n    def t(): pass\n    s() >> w() >> t()')
# ---------------------------------------------------------------- mapping
f("partial().expand() of a classic operator", 'with DAG("probe", schedule=None, start_date=START): BashOperator.partial(task_id="t").expand(bash_command=["echo 1", "echo 2"])')
f("@task .expand over an upstream output", 'from airflow.decorators import task\nwith DAG("probe", schedule=None, start_date=START):\n    @task\n    def a(): return [1, 2]\n    @task\n    def b(x): return x\n    @task\n    def c(xs): return sum(xs)\n    c(b.expand(x=a()))')
f("expand_kwargs", 'from airflow.decorators import task\nwith DAG("probe", schedule=None, start_date=START):\n    @task\n    def b(x, y): return x\n    b.expand_kwargs([{"x": 1, "y": 2}])')
f("XComArg.map, XComArg.zip", 'from airflow.decorators import task\nwith DAG("probe", schedule=None, start_date=START):\n    @task\n    def a(): return [1, 2]\n    @task\n    def b(x): return x\n    b.expand(x=a().map(lambda v: v * 2))\n    b.override(task_id="z").expand(x=a().zip(a()))')
f("mapped task group", 'from airflow.decorators import task, task_group\nwith DAG("probe", schedule=None, start_date=START):\n    @task_group\n    def g(x):\n        @task\n        def t(x): return x\n        t(x)\n    g.expand(x=[1, 2])')
# ---------------------------------------------------------------- paths and helpers
f("airflow.models.xcom_arg.XComArg", 'from airflow.models.xcom_arg import XComArg\nwith DAG("probe", schedule=None, start_date=START):\n    a = PythonOperator(task_id="a", python_callable=lambda: 1)\n    PythonOperator(task_id="b", python_callable=lambda x: x, op_args=[XComArg(a)])')
f("operator.output", 'with DAG("probe", schedule=None, start_date=START):\n    a = PythonOperator(task_id="a", python_callable=lambda: 1)\n    PythonOperator(task_id="b", python_callable=lambda x: x, op_args=[a.output])')
f("Variable, Connection, BaseHook", 'from airflow.models import Variable, Connection\nfrom airflow.hooks.base import BaseHook\nwith DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t")')
f("airflow.macros", 'from airflow import macros\nwith DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t")')
f("exceptions (AirflowSkipException, AirflowFailException, ...)", 'from airflow.exceptions import AirflowSkipException, AirflowFailException, AirflowException, AirflowSensorTimeout\nwith DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t")')
f("plugins (AirflowPlugin)", 'from airflow.plugins_manager import AirflowPlugin\nwith DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t")')
f("Dataset, DatasetAlias", 'from airflow.datasets import Dataset, DatasetAlias\nwith DAG("probe", schedule=None, start_date=START): EmptyOperator(task_id="t")')
