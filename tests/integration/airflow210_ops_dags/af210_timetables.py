"""Timetables in Airflow 2.10 idioms: a custom one from a plugin, CronTriggerTimetable and
EventsTimetable, each with catchup over a closed range of dates."""

from datetime import timedelta

import pendulum
from af210_workday import AfterWorkdayTimetable
from airflow import DAG
from airflow.operators.empty import EmptyOperator
from airflow.timetables.events import EventsTimetable
from airflow.timetables.trigger import CronTriggerTimetable

with DAG("af210_workday", schedule=AfterWorkdayTimetable(),
         start_date=pendulum.datetime(2024, 1, 5, tz="UTC"),
         end_date=pendulum.datetime(2024, 1, 10, tz="UTC"), catchup=True):
    EmptyOperator(task_id="work")

with DAG("af210_cron_trigger",
         schedule=CronTriggerTimetable("0 6 * * 1", timezone="UTC",
                                       interval=timedelta(hours=6)),
         start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         end_date=pendulum.datetime(2024, 1, 20, tz="UTC"), catchup=True):
    EmptyOperator(task_id="tick")

with DAG("af210_events",
         schedule=EventsTimetable([pendulum.datetime(2024, 1, 5, 12, tz="UTC"),
                                   pendulum.datetime(2024, 1, 2, tz="UTC"),
                                   pendulum.datetime(2024, 1, 30, tz="UTC")],
                                  restrict_to_events=True),
         start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         end_date=pendulum.datetime(2024, 1, 10, tz="UTC"), catchup=True):
    EmptyOperator(task_id="event")
