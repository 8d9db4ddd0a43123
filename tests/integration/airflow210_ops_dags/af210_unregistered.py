"""A custom timetable no plugin registers: Airflow refuses to serialize the DAG
("Timetable class ... is not registered"), an import error of this file."""

import pendulum
from airflow import DAG
from airflow.operators.empty import EmptyOperator
from airflow.timetables.base import DagRunInfo, DataInterval, Timetable


class NotRegistered(Timetable):
    def infer_manual_data_interval(self, *, run_after):
        return DataInterval.exact(run_after)

    def next_dagrun_info(self, *, last_automated_data_interval, restriction):
        return None if last_automated_data_interval else DagRunInfo.exact(restriction.earliest)


with DAG("af210_unregistered", schedule=NotRegistered(),
         start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    EmptyOperator(task_id="never")
