"""Retries, a failure that must not be retried, and an execution timeout.

* ``flaky`` fails on its first two tries and succeeds on the third (retries=2).
* ``no_retry`` raises TaskFailedNoRetry: failed at try 1 although it has retries left.
* ``too_slow`` runs past its execution_timeout: failed.
* ``backoff`` fails twice with exponential backoff capped by max_retry_delay, then succeeds.
"""

from datetime import timedelta

import pendulum

from squall import DAG, EmptyOperator, PythonOperator, TaskFailedNoRetry, TriggerRule


def flaky(ti):
    if ti.try_number < 3:
        raise RuntimeError(f"try {ti.try_number} fails on purpose")
    return ti.try_number


def give_up():
    raise TaskFailedNoRetry("this input can never work; retrying is pointless")


def slow():
    import time

    time.sleep(30)


with DAG(
    dag_id="example_retries",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    default_args={"retry_delay": timedelta(seconds=0.2)},
    tags=["example"],
) as dag:
    f = PythonOperator(task_id="flaky", python_callable=flaky, retries=2)
    n = PythonOperator(task_id="no_retry", python_callable=give_up, retries=3)
    s = PythonOperator(task_id="too_slow", python_callable=slow,
                       execution_timeout=timedelta(seconds=1))
    b = PythonOperator(task_id="backoff", python_callable=flaky, retries=3,
                       retry_exponential_backoff=True,
                       max_retry_delay=timedelta(seconds=0.5))
    report = EmptyOperator(task_id="report", trigger_rule=TriggerRule.ALL_DONE)
    [f, n, s, b] >> report
