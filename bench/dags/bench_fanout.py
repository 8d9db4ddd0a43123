"""W1 fan-out: ``start >> [t0 .. t99] >> end`` (102 no-op tasks), see WORKLOADS.md."""

from __future__ import annotations

import pendulum

from squall import DAG, PythonOperator


def noop() -> None:
    return None


with DAG("bench_fanout", schedule=None, catchup=False,
         start_date=pendulum.datetime(2024, 1, 1, tz="UTC")) as dag:
    start = PythonOperator(task_id="start", python_callable=noop)
    end = PythonOperator(task_id="end", python_callable=noop)
    middle = [PythonOperator(task_id=f"t{i}", python_callable=noop) for i in range(100)]
    start >> middle >> end
