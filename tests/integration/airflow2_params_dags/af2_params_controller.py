"""TriggerDagRunOperator and params: a conf that the target's params refuse fails the
triggering task (Airflow 2.10's ``trigger_dag`` -> ``DAG.create_dagrun`` raises
``ParamValidationError``), a good one triggers the run. Checked with Airflow 2.10.5 under
``airflow dags test af2_params_controller``: ``trigger_bad`` failed, ``trigger_good``
success."""

import pendulum
from airflow import DAG
from airflow.operators.trigger_dagrun import TriggerDagRunOperator

with DAG("af2_params_controller", schedule=None,
         start_date=pendulum.datetime(2024, 1, 1, tz="UTC")) as dag:
    TriggerDagRunOperator(task_id="trigger_good", trigger_dag_id="af2_params",
                          trigger_run_id="from_controller_{{ ds_nodash }}", conf={"count": 6})
    TriggerDagRunOperator(task_id="trigger_bad", trigger_dag_id="af2_params",
                          conf={"count": "x"})
