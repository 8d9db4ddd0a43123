"""Airflow 2 idiom: a task SLA, the DAG's sla_miss_callback and the SLA e-mail."""
import json
import os
from datetime import timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator
from airflow.utils.dates import days_ago


def sla_missed(dag, task_list, blocking_task_list, slas, blocking_tis):
    marker = os.environ.get("SLA_MARKER")
    if marker:
        with open(marker, "a") as f:
            f.write(json.dumps({"dag_id": dag.dag_id, "task_list": task_list,
                                "tasks": [s.task_id for s in slas],
                                "blocking": [ti.task_id for ti in blocking_tis]}) + "\n")


default_args = {"owner": "airflow", "email": "sla@example.com", "email_on_failure": False,
                "retries": 0}

with DAG(
    "af2_sla",
    default_args=default_args,
    schedule_interval="@daily",
    start_date=days_ago(3),
    catchup=False,
    sla_miss_callback=sla_missed,
) as dag:
    slow = BashOperator(task_id="slow", bash_command="sleep 3", sla=timedelta(seconds=1))
    after = BashOperator(task_id="after", bash_command="true")
    slow >> after
