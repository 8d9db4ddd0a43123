"""A classic operator mapped over a templated field: BashOperator.partial(...).expand(...)."""
import pendulum
from airflow import DAG
from airflow.decorators import task
from airflow.operators.bash import BashOperator

with DAG("map_bash_partial", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         catchup=False):
    echo = BashOperator.partial(task_id="echo", env={"WHO": "mapped"}).expand(
        bash_command=["echo one $WHO", "echo {{ ds }} {{ ti.map_index }}", "echo three"],
    )

    @task
    def check(lines):
        assert list(lines) == ["one mapped", "2024-01-01 1", "three"], list(lines)

    check(echo.output)
