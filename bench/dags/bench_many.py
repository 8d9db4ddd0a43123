"""W3 many DAGs: ``bench_many_0 .. bench_many_19``, each ``head >> [p0 .. p7] >> tail``
(10 no-op tasks each, 200 in all), see WORKLOADS.md."""

from __future__ import annotations

import pendulum

from squall import DAG, PythonOperator


def noop() -> None:
    return None


for n in range(20):
    with DAG(f"bench_many_{n}", schedule=None, catchup=False,
             start_date=pendulum.datetime(2024, 1, 1, tz="UTC")) as dag:
        head = PythonOperator(task_id="head", python_callable=noop)
        tail = PythonOperator(task_id="tail", python_callable=noop)
        head >> [PythonOperator(task_id=f"p{i}", python_callable=noop) for i in range(8)] >> tail
    globals()[f"dag_{n}"] = dag
