"""A classic operator mapped over a templated field: BashOperator.partial(...).expand(...).
A literal item is a template (rendered per instance); an item read from XCom is data (not
rendered, Airflow's resolved_oids)."""
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
    def commands():
        return ["echo '{{ ds }}'"]

    raw = BashOperator.partial(task_id="raw").expand(bash_command=commands())

    @task
    def check(lines, raw_lines):
        assert list(lines) == ["one mapped", "2024-01-01 1", "three"], list(lines)
        assert list(raw_lines) == ["{{ ds }}"], list(raw_lines)

    check(echo.output, raw.output)
