"""PythonOperator: op_args, op_kwargs, templates_dict, context by parameter name or
``**context``, and XCom push / pull."""

import pendulum

from squall import DAG, PythonOperator


def produce(base, factor=1, ti=None):
    ti.xcom_push(key="note", value="pushed by produce")
    return base * factor


def consume(ti, templates_dict, **context):
    value = ti.xcom_pull(task_ids="produce")
    note = ti.xcom_pull(task_ids="produce", key="note")
    if value != 42 or note != "pushed by produce":
        raise ValueError(f"unexpected XComs: {value!r}, {note!r}")
    if templates_dict["day"] != context["ds"]:
        raise ValueError("templates_dict was not rendered")
    return {"value": value, "run_id": context["run_id"]}


with DAG(
    dag_id="example_python_operator",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    tags=["example"],
) as dag:
    p = PythonOperator(task_id="produce", python_callable=produce, op_args=[21],
                       op_kwargs={"factor": 2})
    c = PythonOperator(task_id="consume", python_callable=consume,
                       templates_dict={"day": "{{ ds }}"})
    p >> c
