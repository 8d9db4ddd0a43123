"""FileSensor(deferrable=True) and FileTrigger (Airflow 2.10's airflow/sensors/filesystem.py,
airflow/triggers/file.py). The run's conf names a folder: ready.txt is in it before the run
starts, later/data.csv is written once file_later is deferred, never.txt never appears.

As Airflow 2.10.5 (with its default fs_default connection, path "/"): file_there pokes once
and succeeds without deferring; file_later defers to a FileTrigger and succeeds when the file
appears; the never.txt sensors defer with timeout=3 s, and when the deferral times out
(SchedulerJobRunner.check_trigger_timeouts: next_method "__fail__") resume_execution raises
TaskDeferralError: file_never fails, file_never_soft is skipped (BaseSensorOperator.
resume_execution with soft_fail)."""

import pendulum
from airflow import DAG
from airflow.operators.empty import EmptyOperator
from airflow.sensors.filesystem import FileSensor

FOLDER = "{{ dag_run.conf['folder'] }}"

with DAG("af210_defer_file", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         catchup=False, default_args={"retries": 0}):
    FileSensor(task_id="file_there", filepath=f"{FOLDER}/ready.txt", deferrable=True,
               poke_interval=1)
    file_later = FileSensor(task_id="file_later", filepath=f"{FOLDER}/later/*.csv",
                            deferrable=True, poke_interval=1, timeout=300)
    file_later >> EmptyOperator(task_id="after_later")
    FileSensor(task_id="file_never", filepath=f"{FOLDER}/never.txt", deferrable=True,
               poke_interval=1, timeout=3)
    FileSensor(task_id="file_never_soft", filepath=f"{FOLDER}/never.txt", deferrable=True,
               poke_interval=1, timeout=3, soft_fail=True)
