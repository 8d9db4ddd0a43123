"""Airflow 2 idiom: variables through ``airflow.models.Variable`` and ``{{ var }}``.

Under Airflow 2 (with the variables the test sets) read_vars, templated, from_env and
deploy_staging (named from a variable read when the file is parsed) succeed, missing_var
fails (KeyError) and after_failure is upstream_failed.
"""

from datetime import datetime

from airflow import DAG
from airflow.models import Variable
from airflow.operators.bash import BashOperator
from airflow.operators.python import PythonOperator

# read at parse time, as many Airflow DAG files do
ENVIRONMENT = Variable.get("environment", default_var="dev")


def read_vars():
    environment = Variable.get("environment")
    config = Variable.get("pipeline_config", deserialize_json=True)
    fallback = Variable.get("not_there", default_var="fallback")
    assert environment == "staging", environment
    assert config["batch"] == 100, config
    assert fallback == "fallback"
    return config["tables"]


def missing_var():
    Variable.get("does_not_exist")


with DAG(
    dag_id="af_variables",
    start_date=datetime(2024, 1, 1),
    schedule_interval=None,
    catchup=False,
    tags=["airflow-idiom"],
) as dag:
    read = PythonOperator(task_id="read_vars", python_callable=read_vars)
    templated = BashOperator(
        task_id="templated",
        bash_command='test "{{ var.value.environment }}" = staging '
        '&& test "{{ var.json.pipeline_config.batch }}" = 100 '
        "&& test \"{{ var.value.get('nope', 'dflt') }}\" = dflt",
    )
    from_env = BashOperator(
        task_id="from_env", bash_command='test "{{ var.value.region }}" = eu-west-1'
    )
    failing = PythonOperator(task_id="missing_var", python_callable=missing_var)
    after = BashOperator(task_id="after_failure", bash_command="echo never")
    deploy = BashOperator(task_id=f"deploy_{ENVIRONMENT}", bash_command="echo deploying")
    read >> templated >> deploy
    failing >> after
