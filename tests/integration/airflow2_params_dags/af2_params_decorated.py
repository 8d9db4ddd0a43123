"""``@dag`` function arguments are DagParams (Airflow 2.10's ``airflow.decorators.dag``):
a task given one gets the run's conf value of that name, else the argument's value; they are
the DAG's params too. Checked with Airflow 2.10.5: ``airflow dags test af2_params_decorated``
returns ``{"rows": 3, "label": "x", "params_rows": 3}`` from ``show``; with ``-c '{"rows":
8}'`` ``{"rows": 8, "label": "x", "params_rows": 8}``; ``-c '{"rows": "many"}'`` exits 1
with ``Invalid input for param rows: 'many' is not of type 'integer'``.
"""

import pendulum
from airflow.decorators import dag, task
from airflow.models.param import Param
from airflow.operators.bash import BashOperator


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
     params={"rows": Param(1, type="integer")})
def af2_params_decorated(rows=3, label="x"):
    @task
    def show(rows, label, params=None):
        return {"rows": rows, "label": label, "params_rows": params["rows"]}

    done = show(rows, label)
    done >> BashOperator(task_id="echo", bash_command="echo {{ params.rows }}", do_xcom_push=True)


af2_params_decorated()
