"""W2 chain: ``c0 >> c1 >> ... >> c19`` (20 no-op tasks), see WORKLOADS.md."""

from __future__ import annotations

import pendulum

from squall import DAG, PythonOperator


def noop() -> None:
    return None


with DAG("bench_chain", schedule=None, catchup=False,
         start_date=pendulum.datetime(2024, 1, 1, tz="UTC")) as dag:
    previous = None
    for i in range(20):
        current = PythonOperator(task_id=f"c{i}", python_callable=noop)
        if previous is not None:
            previous >> current
        previous = current
