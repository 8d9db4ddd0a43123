"""Params as Airflow 2.10 DAG files write them (tests/integration/test_airflow_params.py).

Checked against Airflow 2.10.5: ``airflow dags test af2_params`` succeeds with the defaults
and with ``-c '{"count": 5}'``; ``-c '{"count": "x"}'`` exits 1 with
``ParamValidationError: Invalid input for param count: 'x' is not of type 'integer'``
(``DAG.create_dagrun`` validates the params updated with the conf); conf keys that are not
params join ``params``; ``af2_params_required`` without a conf exits 1 with ``Invalid input
for param must: No value passed and Param has no default value``.
"""

import pendulum
from airflow import DAG
from airflow.models.param import Param
from airflow.operators.bash import BashOperator
from airflow.operators.python import PythonOperator

START = pendulum.datetime(2024, 1, 1, tz="UTC")


def _show(params, **_):
    return dict(params)


with DAG(
    "af2_params",
    schedule=None,
    start_date=START,
    params={
        "count": Param(2, type="integer", minimum=1, maximum=10, title="Count",
                       description="How many rows to load"),
        "name": Param("world", type="string", enum=["world", "moon"]),
        "flag": Param(False, type="boolean"),
        "when": Param("2024-01-01T00:00:00+00:00", type="string", format="date-time"),
        "maybe": Param(None, type=["null", "integer"]),
        "tags": Param(["a"], type="array"),
        "plain": 1,
    },
) as dag:
    show = PythonOperator(task_id="show", python_callable=_show)
    moon = PythonOperator(task_id="moon", python_callable=_show, params={"name": "moon"})
    echo = BashOperator(task_id="echo", bash_command="echo count={{ params.count }}",
                        do_xcom_push=True)
    show >> moon >> echo

with DAG("af2_params_required", schedule=None, start_date=START,
         params={"must": Param(type="string", minLength=2)}) as required:
    PythonOperator(task_id="show", python_callable=_show)

# A task whose own Param default does not validate: the DAG imports (its schedule is None),
# the try fails when its context is built (Airflow's process_params in
# TaskInstance.get_template_context raises ParamValidationError). Airflow 2.10's scheduler
# then fails the task; its `dags test` retries it forever (the error escapes
# _run_raw_task before the try is marked), where Squall's fails it.
with DAG("af2_params_task_bad", schedule=None, start_date=START) as task_bad:
    bad = PythonOperator(task_id="bad", python_callable=_show,
                         params={"n": Param("x", type="integer")})
    after = PythonOperator(task_id="after", python_callable=_show)
    PythonOperator(task_id="ok", python_callable=_show)
    bad >> after
