"""A scheduled DAG whose Param default does not validate: Airflow 2.10 refuses the file
(``DAG.validate_schedule_and_params``: "DAG is not allowed to define a Schedule, if there
are any required params without default values or default values are not valid")."""

import pendulum
from airflow import DAG
from airflow.models.param import Param
from airflow.operators.empty import EmptyOperator

with DAG("af2_params_bad", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         params={"count": Param("zz", type="integer")}) as dag:
    EmptyOperator(task_id="noop")
