"""Airflow 2 idiom: ExternalTaskMarker, so that clearing a task clears the task that waits
for it in another DAG (and on, recursively)."""
import pendulum
from airflow import DAG
from airflow.operators.bash import BashOperator
from airflow.operators.empty import EmptyOperator
from airflow.sensors.external_task import ExternalTaskMarker, ExternalTaskSensor

START = pendulum.datetime(2024, 1, 1, tz="UTC")

with DAG("af210_parent", schedule=None, start_date=START, tags=["airflow210"]):
    BashOperator(task_id="produce", bash_command="echo produced") >> ExternalTaskMarker(
        task_id="mark_child", external_dag_id="af210_child", external_task_id="wait_parent")

with DAG("af210_child", schedule=None, start_date=START, tags=["airflow210"]):
    wait = ExternalTaskSensor(task_id="wait_parent", external_dag_id="af210_parent",
                              external_task_id="mark_child", mode="reschedule",
                              poke_interval=1, timeout=60)
    process = BashOperator(task_id="process", bash_command="echo processed")
    wait >> process >> ExternalTaskMarker(
        task_id="mark_grandchild", external_dag_id="af210_grandchild",
        external_task_id="finish", execution_date="{{ ds }}")

with DAG("af210_grandchild", schedule=None, start_date=START, tags=["airflow210"]):
    EmptyOperator(task_id="finish") >> EmptyOperator(task_id="after_finish")
    EmptyOperator(task_id="unrelated")

# a marker allowing one level only: the child's own marker is one too many
with DAG("af210_shallow", schedule=None, start_date=START, tags=["airflow210"]):
    ExternalTaskMarker(task_id="mark_child", external_dag_id="af210_child",
                       external_task_id="wait_parent", recursion_depth=1)
