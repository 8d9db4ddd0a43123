"""ExternalTaskSensor(deferrable=True) with WorkflowTrigger, and TriggerDagRunOperator(
deferrable=True, wait_for_completion=True) with DagStateTrigger (Airflow 2.10's
airflow/sensors/external_task.py, airflow/operators/trigger_dagrun.py,
airflow/triggers/external_task.py).

af210_defer_controller triggers af210_defer_target and af210_defer_failing at its own
logical date and waits for them in a triggerer; its sensors wait there for the target's
task, task group and run at the same date. As Airflow 2.10.5: trigger succeeds (the target
run succeeds), trigger_fails fails (``af210_defer_failing failed with failed state failed``,
TriggerDagRunOperator.execute_complete), wait_task / wait_group / wait_run succeed
({"status": "success"}); wait_yesterday_soft looks a day back, where there is no run, until
its execution_timeout (5 s, the deferral's timeout) passes: it fails, soft_fail or not. The
timed-out deferral resumes in __fail__ (SchedulerJobRunner.check_trigger_timeouts), but
TaskInstance._execute_task counts execution_timeout from the try's start and raises
AirflowTaskTimeout before resume_execution runs, so BaseSensorOperator.resume_execution's
soft_fail never sees it (checked with Airflow 2.10.5's scheduler and triggerer: failed,
AirflowTaskTimeout)."""

import datetime

import pendulum
from airflow import DAG
from airflow.operators.bash import BashOperator
from airflow.operators.empty import EmptyOperator
from airflow.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sensors.external_task import ExternalTaskSensor
from airflow.utils.task_group import TaskGroup

START = pendulum.datetime(2024, 1, 1, tz="UTC")
TARGET = "af210_defer_target"

with DAG(TARGET, schedule=None, start_date=START, catchup=False):
    work = BashOperator(task_id="work", bash_command="sleep 2")
    with TaskGroup("grp") as grp:
        EmptyOperator(task_id="inner")
    work >> grp

with DAG("af210_defer_failing", schedule=None, start_date=START, catchup=False,
         default_args={"retries": 0}):
    BashOperator(task_id="boom", bash_command="exit 1")

with DAG("af210_defer_controller", schedule=None, start_date=START, catchup=False,
         default_args={"retries": 0}):
    TriggerDagRunOperator(task_id="trigger", trigger_dag_id=TARGET,
                          logical_date="{{ logical_date }}", wait_for_completion=True,
                          deferrable=True, poke_interval=1)
    TriggerDagRunOperator(task_id="trigger_fails", trigger_dag_id="af210_defer_failing",
                          logical_date="{{ logical_date }}", wait_for_completion=True,
                          deferrable=True, poke_interval=1)
    ExternalTaskSensor(task_id="wait_task", external_dag_id=TARGET, external_task_id="work",
                       deferrable=True, poll_interval=1)
    ExternalTaskSensor(task_id="wait_group", external_dag_id=TARGET,
                       external_task_group_id="grp", deferrable=True, poll_interval=1)
    ExternalTaskSensor(task_id="wait_run", external_dag_id=TARGET, external_task_id=None,
                       deferrable=True, poll_interval=1)
    ExternalTaskSensor(task_id="wait_yesterday_soft", external_dag_id=TARGET,
                       external_task_id="work", execution_delta=datetime.timedelta(days=1),
                       deferrable=True, poll_interval=1, soft_fail=True,
                       execution_timeout=datetime.timedelta(seconds=5))
