"""Airflow 2 idiom: TriggerDagRunOperator, with and without wait_for_completion."""
import pendulum
from airflow import DAG
from airflow.operators.bash_operator import BashOperator
from airflow.operators.dummy import DummyOperator
from airflow.operators.python import PythonOperator
from airflow.operators.trigger_dagrun import TriggerDagRunOperator

START = pendulum.datetime(2024, 1, 1, tz="UTC")


def read_conf(dag_run, **_):
    return dag_run.conf["message"]


with DAG("af2_target", schedule_interval=None, start_date=START, tags=["airflow2"]) as target:
    PythonOperator(task_id="read_conf", python_callable=read_conf)

with DAG("af2_target_fails", schedule_interval=None, start_date=START) as target_fails:
    BashOperator(task_id="fail", bash_command="exit 1")

with DAG("af2_controller", schedule_interval=None, start_date=START) as controller:
    TriggerDagRunOperator(
        task_id="trigger",
        trigger_dag_id="af2_target",
        trigger_run_id="from_controller_{{ ds_nodash }}",
        execution_date="{{ ds }}",
        conf={"message": "hello from {{ ds }}"},
    )

with DAG("af2_controller_wait", schedule_interval=None, start_date=START) as controller_wait:
    ok = TriggerDagRunOperator(
        task_id="trigger_and_wait",
        trigger_dag_id="af2_target",
        trigger_run_id="waited_{{ ts_nodash }}",
        conf={"message": "waited"},
        wait_for_completion=True,
        poke_interval=1,
    )
    failing = TriggerDagRunOperator(
        task_id="trigger_failing",
        trigger_dag_id="af2_target_fails",
        wait_for_completion=True,
        poke_interval=1,
    )
    ok >> DummyOperator(task_id="after_ok")
