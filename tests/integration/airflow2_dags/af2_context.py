"""Airflow 2 idiom: the template context (prev_ds, next_ds, yesterday_ds, conf, macros...)."""
from airflow import DAG
from airflow.exceptions import AirflowFailException
from airflow.operators.bash_operator import BashOperator
from airflow.operators.python import PythonOperator
from airflow.utils.dates import days_ago

default_args = {"owner": "airflow", "depends_on_past": False, "retries": 0,
                "email_on_failure": False, "email_on_retry": False}


def check_context(**context):
    macros = context["macros"]
    ds = context["ds"]
    run = context["dag_run"]
    if run.external_trigger:  # a triggered run: prev and next are its own date
        prev_ds = next_ds = ds
    elif run.run_type == "scheduled":  # the schedule's neighbouring ticks
        prev_ds, next_ds = macros.ds_add(ds, -1), macros.ds_add(ds, 1)
    else:  # `dags test` at noon (not externally triggered, as in Airflow 2.10): the tick
        # before it (that midnight) and the logical date of the run after its inferred
        # data interval (that midnight too)
        prev_ds = next_ds = ds
    checks = {
        "prev_ds": (context["prev_ds"], prev_ds),
        "prev_ds_nodash": (context["prev_ds_nodash"], prev_ds.replace("-", "")),
        "next_ds": (context["next_ds"], next_ds),
        "next_ds_nodash": (context["next_ds_nodash"], next_ds.replace("-", "")),
        "yesterday_ds": (context["yesterday_ds"], macros.ds_add(ds, -1)),
        "tomorrow_ds": (context["tomorrow_ds"], macros.ds_add(ds, 1)),
        "execution_date": (context["execution_date"].strftime("%Y-%m-%d"), ds),
        "prev_execution_date": (context["prev_execution_date"].strftime("%Y-%m-%d"), prev_ds),
        "next_execution_date": (context["next_execution_date"].strftime("%Y-%m-%d"), next_ds),
        "ts_nodash": (context["ts_nodash"][:8], context["ds_nodash"]),
        "test_mode": (context["test_mode"], False),
        "conf": (context["conf"].getboolean("core", "airflow_compat"), True),
        "dag_run.conf": (context["dag_run"].conf.get("who", "nobody"),
                         context["params"].get("who", "nobody")),
    }
    wrong = {name: got for name, got in checks.items() if got[0] != got[1]}
    if wrong:
        raise AirflowFailException(f"the context is not Airflow 2's: {wrong}")
    return {"prev_ds": context["prev_ds"], "next_ds": context["next_ds"]}


def pull(ti, **_):
    latest = ti.xcom_pull()  # task_ids=None: the latest return value of any task of the run
    echoed = ti.xcom_pull(task_ids="echo", include_prior_dates=True)
    if not isinstance(latest, dict) or "prev_ds" not in latest or not echoed:
        raise AirflowFailException(f"xcom_pull gave {latest!r} and {echoed!r}")
    return latest["prev_ds"]


with DAG(
    dag_id="af2_context",
    default_args=default_args,
    schedule_interval="@daily",
    start_date=days_ago(2),
    catchup=False,
    tags=["airflow2"],
) as dag:
    echo = BashOperator(
        task_id="echo",
        bash_command="echo {{ prev_ds }} {{ next_ds_nodash }} {{ yesterday_ds }} "
                     "{{ tomorrow_ds }} {{ macros.ds_add(ds, 7) }} {{ ts_nodash_with_tz }}",
    )
    check = PythonOperator(task_id="check", python_callable=check_context)
    read_back = PythonOperator(task_id="pull", python_callable=pull)
    echo >> check >> read_back
