"""Consumers in Airflow 2.10's dataset idioms: a list schedule (all of them; one waiting
for a dataset no producer updates), ``&`` / ``|``, an alias, and ``DatasetOrTimeSchedule``.
The consumer reads ``triggering_dataset_events`` (in code and in a template) and
``inlet_events``; the alias consumer reads both for what its alias resolved to.

Airflow 2.10.5: the schedule of a dataset DAG is "Dataset" (an alias not resolved yet:
"Unresolved DatasetAlias"; with a timetable: "Dataset or <its summary>") and its timetable
description "Triggered by datasets" (airflow/timetables/simple.py, datasets.py).
"""

from __future__ import annotations

import pendulum
from airflow.datasets import Dataset, DatasetAlias
from airflow.decorators import dag, task
from airflow.operators.bash import BashOperator
from airflow.timetables.datasets import DatasetOrTimeSchedule
from airflow.timetables.trigger import CronTriggerTimetable

ORDERS = Dataset("s3://warehouse/orders")
REPORT = Dataset("s3://warehouse/report")
START = pendulum.datetime(2024, 1, 1, tz="UTC")


@dag(schedule=[ORDERS, REPORT], start_date=START, catchup=False)
def af210_ds_consumer():
    @task(inlets=[ORDERS])
    def read_events(*, triggering_dataset_events, inlet_events):
        return {
            "triggering": {uri: [e.extra for e in events]
                           for uri, events in sorted(triggering_dataset_events.items())},
            "sources": sorted({e.source_dag_run.dag_id
                               for events in triggering_dataset_events.values()
                               for e in events}),
            "inlet": [e.extra for e in inlet_events[ORDERS]],
        }

    read_events()
    BashOperator(
        task_id="templated",
        bash_command=("echo '{% for uri, events in triggering_dataset_events.items() %}"
                      "{{ uri }}={{ events[0].source_task_id }};{% endfor %}'"),
    )


af210_ds_consumer()


@dag(schedule=(ORDERS | Dataset("s3://warehouse/never")) & REPORT, start_date=START,
     catchup=False)
def af210_ds_either():
    @task
    def nothing():
        pass

    nothing()


af210_ds_either()


@dag(schedule=[ORDERS, Dataset("s3://warehouse/never")], start_date=START, catchup=False)
def af210_ds_waiting():
    """All of two datasets, one of which no producer updates: never a run."""

    @task
    def nothing():
        pass

    nothing()


af210_ds_waiting()


@dag(schedule=DatasetAlias("orders-alias"), start_date=START, catchup=False)
def af210_ds_alias_consumer():
    @task(inlets=[DatasetAlias("orders-alias")])
    def read_alias(*, triggering_dataset_events, inlet_events):
        return {
            "triggering": {uri: [e.extra for e in events]
                           for uri, events in sorted(triggering_dataset_events.items())},
            "inlet": [e.extra for e in inlet_events[DatasetAlias("orders-alias")]],
        }

    read_alias()


af210_ds_alias_consumer()


@dag(schedule=DatasetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 1 * * *", timezone="UTC"), datasets=[ORDERS]),
     start_date=START, catchup=False)
def af210_ds_or_time():
    @task
    def nothing():
        pass

    nothing()


af210_ds_or_time()
