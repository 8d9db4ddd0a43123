"""fail_stop (Airflow 2.7): 'boom' fails; the run's other unfinished tasks are stopped
(airflow/models/taskinstance.py _stop_remaining_tasks): a running one fails, the others
are skipped. 'slow' runs alongside 'boom' on a cluster (failed there); under dags test the
tasks run one at a time, 'slow' before 'boom' (as Airflow 2.10.5's dags test runs them), so
'slow' succeeds, 'after' is skipped and, every leaf having succeeded or been skipped, the
run succeeds."""

import pendulum
from airflow import DAG
from airflow.exceptions import AirflowException
from airflow.operators.bash import BashOperator
from airflow.operators.empty import EmptyOperator
from airflow.operators.python import PythonOperator


def _boom():
    import time

    time.sleep(3)
    raise AirflowException("boom")


with DAG("af210_fail_stop", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         fail_stop=True, catchup=False):
    start = EmptyOperator(task_id="start")
    boom = PythonOperator(task_id="boom", python_callable=_boom, priority_weight=10)
    slow = BashOperator(task_id="slow", bash_command="sleep 20")
    after = EmptyOperator(task_id="after")
    start >> [boom, slow]
    boom >> after
