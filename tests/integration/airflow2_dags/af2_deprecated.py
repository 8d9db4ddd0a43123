"""Airflow 2 idiom: arguments Airflow 2.10 still accepts with a deprecation warning."""
import pendulum
from airflow import DAG
from airflow.operators.bash import BashOperator
from airflow.operators.python import PythonOperator


def greet(**context):
    return f"hello {context['ds']}"


with DAG(
    "af2_deprecated",
    schedule_interval=None,  # schedule
    concurrency=4,  # max_active_tasks
    full_filepath="/somewhere/else.py",  # no effect
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    default_args={"task_concurrency": 2},  # max_active_tis_per_dag
    tags=["airflow2"],
) as dag:
    hello = PythonOperator(task_id="greet", python_callable=greet, provide_context=True)
    skipped = BashOperator(task_id="skipped", bash_command="exit 42", skip_exit_code=42)
    ok = BashOperator(task_id="ok", bash_command="echo ok", task_concurrency=1)
    # none_failed_or_skipped is none_failed_min_one_success: runs after a skipped upstream
    joined = BashOperator(task_id="joined", bash_command="echo joined",
                          trigger_rule="none_failed_or_skipped")
    # dummy is always: runs although its only upstream task was skipped
    after_skip = BashOperator(task_id="after_skip", bash_command="echo always",
                              trigger_rule="dummy")
    hello >> [skipped, ok] >> joined
    skipped >> after_skip
