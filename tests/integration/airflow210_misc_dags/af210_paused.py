"""max_consecutive_failed_dag_runs (Airflow 2.9): two daily runs, both failing; after the
second failure the scheduler pauses the DAG (airflow/models/dagrun.py
DagRun._check_last_n_dagruns_failed)."""

import pendulum
from airflow import DAG
from airflow.operators.bash import BashOperator

with DAG("af210_paused", schedule="@daily", max_consecutive_failed_dag_runs=2,
         max_active_runs=1, catchup=True,
         start_date=pendulum.now("UTC").start_of("day").subtract(days=2)):
    BashOperator(task_id="fails", bash_command="exit 1")
