"""Airflow 2 idiom: LatestOnlyOperator over a catch-up of three daily runs."""
from airflow import DAG
from airflow.operators.bash import BashOperator
from airflow.operators.dummy import DummyOperator
from airflow.operators.latest_only import LatestOnlyOperator
from airflow.utils.dates import days_ago
from airflow.utils.trigger_rule import TriggerRule

with DAG("af2_latest_only", schedule_interval="@daily", start_date=days_ago(3), catchup=True,
         tags=["airflow2"]) as dag:
    latest_only = LatestOnlyOperator(task_id="latest_only")
    work = BashOperator(task_id="work", bash_command="echo {{ ds }}")
    after = DummyOperator(task_id="after", trigger_rule=TriggerRule.ALL_DONE)
    latest_only >> work >> after
