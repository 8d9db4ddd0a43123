"""Airflow 2 idiom: LatestOnlyOperator, run by `dags test` for a past date."""
import pendulum
from airflow import DAG
from airflow.operators.bash import BashOperator
from airflow.operators.empty import EmptyOperator
from airflow.operators.latest_only import LatestOnlyOperator
from airflow.utils.trigger_rule import TriggerRule

with DAG("af210_latest_only", schedule="@daily",
         start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False,
         tags=["airflow210"]):
    latest_only = LatestOnlyOperator(task_id="latest_only")
    work = BashOperator(task_id="work", bash_command="echo {{ ds }}")
    after = EmptyOperator(task_id="after", trigger_rule=TriggerRule.ALL_DONE)
    latest_only >> work >> after
