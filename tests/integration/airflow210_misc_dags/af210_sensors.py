"""TimeSensor, DateTimeSensor, DayOfWeekSensor and BashSensor (Airflow 2.10's
airflow/sensors/{time_sensor,date_time,weekday,bash}.py). Runs on 2024-01-01, a Monday."""

import datetime

import pendulum
from airflow import DAG
from airflow.sensors.bash import BashSensor
from airflow.sensors.date_time import DateTimeSensor
from airflow.sensors.time_sensor import TimeSensor
from airflow.sensors.weekday import DayOfWeekSensor

with DAG("af210_sensors", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         default_args={"poke_interval": 1, "timeout": 3}):
    TimeSensor(task_id="time_passed", target_time=datetime.time(0, 0))
    DateTimeSensor(task_id="date_passed", target_time="{{ ds }}T00:00:00+00:00")
    DayOfWeekSensor(task_id="monday", week_day="Monday", use_task_logical_date=True)
    DayOfWeekSensor(task_id="sunday_soft", week_day={"Sunday"}, use_task_logical_date=True,
                    soft_fail=True)
    BashSensor(task_id="bash_ok", bash_command='test "{{ ds }}" = 2024-01-01')
    BashSensor(task_id="bash_fails", bash_command="exit 3", retry_exit_code=99)
