"""Airflow 2 idiom: a custom operator and sensor, and the Airflow 1 module paths."""
from datetime import timedelta

import pendulum
from airflow import DAG
from airflow.models import BaseOperator
from airflow.operators.bash_operator import BashOperator
from airflow.operators.dummy_operator import DummyOperator
from airflow.operators.python_operator import BranchPythonOperator
from airflow.sensors.base_sensor_operator import BaseSensorOperator
from airflow.utils.decorators import apply_defaults
from airflow.utils.trigger_rule import TriggerRule


class GreetOperator(BaseOperator):
    template_fields = ("greeting", "sql")
    template_ext = (".sql",)
    ui_color = "#f0ede4"

    @apply_defaults
    def __init__(self, greeting, sql, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.greeting = greeting
        self.sql = sql

    def execute(self, context):
        self.log.info("%s: %s", self.greeting, self.sql)
        return f"{self.greeting}|{self.sql.strip()}"


class GreetingSensor(BaseSensorOperator):
    def poke(self, context):
        return context["ti"].xcom_pull(task_ids="greet") is not None


def sla_missed(dag, task_list, blocking_task_list, slas, blocking_tis):
    print("SLA missed", task_list)


default_args = {
    "owner": "data",
    "email": ["data-team@example.com"],
    "email_on_failure": True,
    "email_on_retry": False,
    "retries": 1,
    "retry_delay": timedelta(seconds=1),
    "sla": timedelta(hours=2),
}

with DAG(
    "af2_custom",
    default_args=default_args,
    schedule_interval=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    sla_miss_callback=sla_missed,
    tags=["airflow2"],
) as dag:
    greet = GreetOperator(task_id="greet", greeting="hello {{ ds }}", sql="af2_greeting.sql",
                          params={"table": "events"})
    wait = GreetingSensor(task_id="wait_for_greeting", poke_interval=1, timeout=30,
                          mode="reschedule")
    branch = BranchPythonOperator(task_id="branch", python_callable=lambda: "taken")
    taken = BashOperator(task_id="taken", bash_command="echo taken")
    not_taken = DummyOperator(task_id="not_taken")
    join = DummyOperator(task_id="join", trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    greet >> wait >> branch >> [taken, not_taken] >> join
