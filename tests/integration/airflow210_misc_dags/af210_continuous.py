"""schedule="@continuous" (Airflow 2.6's ContinuousTimetable): one run after another."""

import pendulum
from airflow import DAG
from airflow.operators.empty import EmptyOperator

with DAG("af210_continuous", schedule="@continuous", max_active_runs=1, catchup=False,
         start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    EmptyOperator(task_id="tick")
