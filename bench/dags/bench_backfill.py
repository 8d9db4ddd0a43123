"""WB backfill: ``bench_backfill``, a daily DAG whose 10 no-op tasks have W3's shape,
``head >> [p0 .. p7] >> tail``. The workload backfills 100 daily dates of it (1,000 task
instances) with ``squall dags backfill``; see bench/README.md.

``catchup=False`` and paused at creation: the scheduler never makes a scheduled run of it
(not even when the bench crosses midnight UTC), so the only runs it has are the backfills'
(a paused DAG's backfill runs still run). ``max_active_runs=16`` matches the
``--max-active-runs 16`` the workload passes."""

from __future__ import annotations

import pendulum

from squall import DAG, PythonOperator


def noop() -> None:
    return None


with DAG("bench_backfill", schedule="@daily", catchup=False, max_active_runs=16,
         is_paused_upon_creation=True,
         start_date=pendulum.datetime(2024, 1, 1, tz="UTC")) as dag:
    head = PythonOperator(task_id="head", python_callable=noop)
    tail = PythonOperator(task_id="tail", python_callable=noop)
    head >> [PythonOperator(task_id=f"p{i}", python_callable=noop) for i in range(8)] >> tail
