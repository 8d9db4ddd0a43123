"""Jinja templating: ds, ds_nodash, ts, logical_date, data_interval_*, run_id, params (with
dag_run.conf overriding), macros.ds_add / ds_format, task_instance_key_str."""

import pendulum

from squall import DAG, BashOperator, PythonOperator


def check(templates_dict):
    t = templates_dict
    if t["tomorrow"] <= t["ds"] or t["nodash"] != t["ds"].replace("-", ""):
        raise ValueError(f"bad dates: {t}")
    if t["who"] not in ("world", "conf"):
        raise ValueError(f"bad param: {t['who']}")
    return t


with DAG(
    dag_id="example_templating",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    params={"who": "world"},
    tags=["example"],
) as dag:
    BashOperator(
        task_id="echo",
        bash_command=(
            "echo 'hello {{ params.who }} on {{ ds }} ({{ ds_nodash }}), ts={{ ts }}, "
            "interval {{ data_interval_start }} - {{ data_interval_end }}, "
            "key {{ task_instance_key_str }}, "
            "next day {{ macros.ds_add(ds, 1) }} "
            "{{ macros.ds_format(ds, \"%Y-%m-%d\", \"%d/%m/%Y\") }}'"
        ),
    ) >> PythonOperator(
        task_id="check",
        python_callable=check,
        templates_dict={"ds": "{{ ds }}", "nodash": "{{ ds_nodash }}",
                        "tomorrow": "{{ macros.ds_add(ds, 1) }}", "who": "{{ params.who }}",
                        "logical": "{{ logical_date }}", "run": "{{ run_id }}"},
    )
