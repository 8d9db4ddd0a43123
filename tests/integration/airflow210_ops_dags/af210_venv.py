"""Functions in other interpreters, Airflow 2.10 idioms: @task.virtualenv (requirements,
multiple_outputs from the dict annotation, a context entry), PythonVirtualenvOperator
(op_args, op_kwargs, string_args, system_site_packages=False), @task.external_python,
skip_on_exit_code and a failing function."""

import sys

import pendulum
from airflow import DAG
from airflow.decorators import task
from airflow.operators.python import ExternalPythonOperator, PythonVirtualenvOperator


def add(a, b):
    import tomli

    return {"sum": a + b, "string_args": virtualenv_string_args,  # noqa: F821
            "parsed": tomli.loads("x = 1")}


def interpreter_major():
    import sys

    return sys.version_info[0]


with DAG("af210_venv", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), schedule=None,
         catchup=False):

    @task.virtualenv(requirements=["six==1.16.0"], system_site_packages=False)
    def with_six(n: int, ds=None) -> dict:
        import six

        return {"six": six.__version__, "n": n * 2, "ds": ds}

    classic = PythonVirtualenvOperator(
        task_id="classic", python_callable=add, requirements="tomli==2.0.1",
        system_site_packages=False, op_args=[1], op_kwargs={"b": 2},
        string_args=["first", "second"])

    @task.external_python(python=sys.executable)
    def external(values):
        import sys

        return [values["n"] + 1, sys.version_info[0]]

    ext_classic = ExternalPythonOperator(task_id="ext_classic", python=sys.executable,
                                         python_callable=interpreter_major)

    @task.virtualenv(skip_on_exit_code=99)
    def skipper():
        import sys

        sys.exit(99)

    @task.virtualenv
    def broken():
        raise ValueError("boom in the venv")

    @task(trigger_rule="all_done")
    def report(a, b):
        return {"a": a, "b": b}

    six_out = with_six(21)
    report(external(six_out), classic.output)
    [ext_classic, skipper(), broken()]
