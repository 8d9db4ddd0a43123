"""Airflow 2 idiom: ExternalTaskSensor in poke and reschedule modes."""
from datetime import timedelta

import pendulum
from airflow import DAG
from airflow.operators.bash import BashOperator
from airflow.operators.empty import EmptyOperator
from airflow.sensors.external_task import ExternalTaskSensor
from airflow.utils.state import State

START = pendulum.datetime(2024, 1, 1, tz="UTC")

with DAG("af2_upstream", schedule_interval=None, start_date=START, tags=["airflow2"]) as up:
    BashOperator(task_id="produce", bash_command="echo produced")
    BashOperator(task_id="broken", bash_command="exit 3")

with DAG("af2_downstream", schedule_interval=None, start_date=START,
         tags=["airflow2"]) as down:
    wait_produce = ExternalTaskSensor(
        task_id="wait_produce", external_dag_id="af2_upstream", external_task_id="produce",
        allowed_states=[State.SUCCESS], failed_states=[State.FAILED],
        mode="reschedule", poke_interval=1, timeout=120)
    wait_produce_fn = ExternalTaskSensor(
        task_id="wait_produce_fn", external_dag_id="af2_upstream", external_task_id="produce",
        execution_date_fn=lambda dt: dt, mode="poke", poke_interval=1, timeout=120)
    wait_broken = ExternalTaskSensor(
        task_id="wait_broken", external_dag_id="af2_upstream", external_task_id="broken",
        failed_states=[State.FAILED], mode="reschedule", poke_interval=1, timeout=120)
    wait_yesterday = ExternalTaskSensor(
        task_id="wait_yesterday", external_dag_id="af2_upstream", external_task_id="produce",
        execution_delta=timedelta(days=1), mode="reschedule", poke_interval=1, timeout=3,
        soft_fail=True)
    [wait_produce, wait_produce_fn] >> EmptyOperator(task_id="done")
