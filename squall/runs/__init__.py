"""The operations on DAG runs, one home each (issue 23, ADR 13).

Trigger a run; create scheduled and backfill runs; clear, mark and end runs and their task
instances; plan a backfill. The API, the CLI, the web UI and the scheduler all call these;
each operation wakes the scheduler itself, so no caller has to remember to. Below the
scheduler: nothing here imports :mod:`squall.scheduler`.
"""
