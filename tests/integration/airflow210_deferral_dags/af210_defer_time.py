"""The time triggers and sensors of Airflow 2.10 (airflow/triggers/temporal.py,
airflow/sensors/{time_delta,date_time,time_sensor}.py) and BaseOperator.defer in a custom
operator. Triggered manually (schedule=None): the data interval ends at the logical date,
"now", so the sensors below with a delay wait some seconds in a triggerer.

Airflow 2.10.5 gives every task success (``airflow dags test af210_defer_time``, no date),
with the XComs return_value: delta_past True (TimeDeltaSensorAsync.execute returns True for
a past target without deferring); report {"note": "waited", "event_is_a_moment": True} (the
resumed method gets the defer() kwargs and the event: TaskInstance.defer_task stores the
kwargs as next_kwargs, TriggerEvent.handle_submit adds "event"; Airflow's dags test alone
drops the kwargs, dag.py _run_task); none for the others (execute_complete returns None;
delta_end's trigger yields TaskSuccessEvent: success, which Airflow's triggerer writes and
Squall's worker reaches by resuming it)."""

import datetime

import pendulum
from airflow import DAG
from airflow.models.baseoperator import BaseOperator
from airflow.sensors.date_time import DateTimeSensorAsync
from airflow.sensors.time_delta import TimeDeltaSensorAsync
from airflow.sensors.time_sensor import TimeSensorAsync
from airflow.triggers.temporal import TimeDeltaTrigger


class WaitThenReport(BaseOperator):
    """Defers to a TimeDeltaTrigger with kwargs for the method it resumes in."""

    def __init__(self, *, seconds: int, **kwargs):
        super().__init__(**kwargs)
        self.seconds = seconds

    def execute(self, context):
        self.defer(trigger=TimeDeltaTrigger(datetime.timedelta(seconds=self.seconds)),
                   method_name="report", kwargs={"note": "waited"},
                   timeout=datetime.timedelta(minutes=10))

    def report(self, context, event=None, note=None):
        return {"note": note, "event_is_a_moment": isinstance(event, datetime.datetime)}


with DAG("af210_defer_time", schedule=None,
         start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False):
    TimeDeltaSensorAsync(task_id="delta_wait", delta=datetime.timedelta(seconds=20))
    TimeDeltaSensorAsync(task_id="delta_past", delta=datetime.timedelta(0))
    TimeDeltaSensorAsync(task_id="delta_end", delta=datetime.timedelta(seconds=20),
                         end_from_trigger=True)
    DateTimeSensorAsync(task_id="date_wait",
                        target_time="{{ data_interval_end.add(seconds=20) }}")
    DateTimeSensorAsync(task_id="date_past",
                        target_time=pendulum.datetime(2024, 1, 1, tz="UTC"))
    TimeSensorAsync(task_id="time_past", target_time=datetime.time(0, 0))
    WaitThenReport(task_id="report", seconds=2)
