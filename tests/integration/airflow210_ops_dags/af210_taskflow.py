"""TaskFlow in Airflow 2.10 idioms: @task.bash, @task.sensor, a @task_group function called
three times (ids process, process__1, process__2) with default_args, chain, chain_linear,
cross_downstream (both import paths), XComArg, display names."""

import pendulum
from airflow.decorators import dag, task, task_group
from airflow.models.baseoperator import chain, chain_linear
from airflow.models.xcom_arg import XComArg
from airflow.operators.empty import EmptyOperator
from airflow.sensors.base import PokeReturnValue
from airflow.utils.helpers import cross_downstream


@dag(dag_id="af210_taskflow", dag_display_name="TaskFlow: groups and chains",
     start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), schedule=None, catchup=False)
def taskflow():
    @task.bash
    def say(word: str) -> str:
        return f"echo {word} {{{{ ds }}}}"

    @task.sensor(poke_interval=1, timeout=30, mode="poke")
    def ready() -> PokeReturnValue:
        return PokeReturnValue(is_done=True, xcom_value="ready")

    @task_group(default_args={"retries": 2})
    def process(n: int):
        """Doubles n."""

        @task
        def double(x: int) -> int:
            return x * 2

        @task
        def store(y: int) -> int:
            return y

        return store(double(n))

    @task(task_display_name="Add them up")
    def total(a: int, b: int, c: int) -> int:
        return a + b + c

    said = say("hello")
    sensed = ready()
    summed = total(process(1), process(2), process(3))
    [said, sensed] >> summed

    a, b, c, d, e, f = (EmptyOperator(task_id=f"ch_{x}") for x in "abcdef")
    chain(summed, a, [b, c], [d, e], f)
    g, h, i, j = (EmptyOperator(task_id=f"cl_{x}") for x in "ghij")
    chain_linear(f, g, [h, i], j)
    k, m = EmptyOperator(task_id="cd_k"), EmptyOperator(task_id="cd_m")
    cross_downstream([j, XComArg(sensed.operator)], [k, m])


taskflow()


@dag(dag_id="af210_conditions", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
     schedule=None, catchup=False)
def conditions():
    """@task.run_if / @task.skip_if (Airflow 2.10) and @task.branch_external_python."""
    import sys

    @task.run_if(lambda context: context["ds"] == "2024-01-03")
    @task
    def on_the_3rd():
        return "ran"

    @task.run_if(lambda context: context["ds"] == "2024-01-04", skip_message="not the 4th")
    @task
    def on_the_4th():
        return "ran"

    @task.skip_if(lambda context: (True, "skipped by its condition"))
    @task.run_if(lambda context: True)
    @task
    def both():
        return "ran"

    @task.branch_external_python(python=sys.executable)
    def choose():
        return "chosen"

    on_the_3rd() >> on_the_4th()
    both()
    choose() >> [EmptyOperator(task_id="chosen"), EmptyOperator(task_id="not_chosen")]


conditions()
