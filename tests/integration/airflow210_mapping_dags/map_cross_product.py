"""Several expanded arguments: their cross product (the last one varies fastest)."""
import pendulum
from airflow.decorators import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def map_cross_product():
    @task
    def pair(x, y):
        return f"{x}{y}"

    @task
    def check(values):
        assert list(values) == ["1a", "1b", "1c", "2a", "2b", "2c"], list(values)

    check(pair.expand(x=[1, 2], y=["a", "b", "c"]))


map_cross_product()
