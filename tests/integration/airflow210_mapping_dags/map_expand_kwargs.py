"""expand_kwargs: over a literal list of dicts (@task) and over an upstream's list of dicts
(BashOperator)."""
import pendulum
from airflow import DAG
from airflow.decorators import task
from airflow.operators.bash import BashOperator

with DAG("map_expand_kwargs", schedule=None,
         start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False):
    @task
    def power(base, exp):
        return base ** exp

    powers = power.expand_kwargs([{"base": 2, "exp": 3}, {"base": 3, "exp": 2}])

    @task
    def commands():
        return [{"bash_command": "echo a"}, {"bash_command": "echo b", "env": {"X": "1"}}]

    run = BashOperator.partial(task_id="run").expand_kwargs(commands())

    @task
    def check(p, r):
        assert list(p) == [8, 9], list(p)
        assert list(r) == ["a", "b"], list(r)

    check(powers, run.output)
