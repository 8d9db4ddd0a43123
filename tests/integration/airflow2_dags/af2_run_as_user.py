"""Airflow 2 idiom: run_as_user (the worker runs the task as that user when it is root)."""
import pendulum
from airflow import DAG
from airflow.operators.bash import BashOperator

with DAG("af2_run_as_user", schedule_interval=None,
         start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), tags=["airflow2"]) as dag:
    whoami = BashOperator(task_id="whoami", bash_command="id -un", run_as_user="nobody",
                          email="ops@example.com", email_on_failure=False)
