"""Sensors in both modes: poke (holds its slot and waits) and reschedule (gives the slot back
between pokes), a FileSensor, a TimeDeltaSensor, and a rescheduling sensor that times out
with soft_fail and so ends skipped."""

from datetime import timedelta

import pendulum

from squall import DAG, BashOperator, FileSensor, PythonSensor, TimeDeltaSensor

MARKER = "/tmp/squall_example_sensors_{{ run_id | replace(':', '_') | replace('+', '_') }}"


def second_poke(ti):
    # poke mode: true on the second poke within one execution of the task
    count = ti.xcom_pull(task_ids=ti.task_id, key="pokes") or 0
    ti.xcom_push("pokes", count + 1)
    return count >= 1


def after_one_reschedule(ti):
    # reschedule mode: each poke is a new execution; true once it has been rescheduled once
    return ti.reschedule_count >= 1


with DAG(
    dag_id="example_sensors",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    tags=["example"],
) as dag:
    touch = BashOperator(task_id="touch", bash_command=f"touch {MARKER}")
    wait_file = FileSensor(task_id="wait_file", filepath=MARKER, poke_interval=0.2, timeout=30)
    cleanup = BashOperator(task_id="cleanup", bash_command=f"rm -f {MARKER}")
    touch >> wait_file >> cleanup

    PythonSensor(task_id="poke_twice", python_callable=second_poke, poke_interval=0.2,
                 timeout=30, mode="poke")
    PythonSensor(task_id="reschedule_twice", python_callable=after_one_reschedule,
                 poke_interval=0.2, timeout=30, mode="reschedule")
    PythonSensor(task_id="never_true_soft_fail", python_callable=lambda: False,
                 poke_interval=0.2, timeout=1, mode="reschedule", soft_fail=True)
    TimeDeltaSensor(task_id="after_interval", delta=timedelta(seconds=0), poke_interval=0.2)
