"""Airflow 2 idiom: e-mail on failure (default_args), and EmailOperator."""
from datetime import datetime

from airflow import DAG
from airflow.operators.bash import BashOperator
from airflow.operators.email import EmailOperator

default_args = {
    "owner": "airflow",
    "email": ["oncall@example.com"],
    "email_on_failure": True,
    "email_on_retry": False,
    "retries": 0,
}

with DAG(
    "af2_email",
    default_args=default_args,
    schedule_interval=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
) as dag:
    notify = EmailOperator(
        task_id="notify",
        to="team@example.com",
        subject="[{{ dag.dag_id }}] run {{ ds }}",
        html_content="<p>{{ dag.dag_id }} ran on {{ ds }}</p>",
    )
    broken = BashOperator(task_id="broken", bash_command="echo boom; exit 3")
    quiet = BashOperator(task_id="quiet", bash_command="exit 4", email_on_failure=False)
    notify >> [broken, quiet]
