"""Mapping over a mapped task's values: one instance per value its instances returned."""
import pendulum
from airflow.decorators import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def map_over_mapped():
    @task
    def double(x):
        return x * 2

    @task
    def plus_one(x):
        return x + 1

    @task
    def check(values):
        assert list(values) == [3, 5, 7], list(values)

    check(plus_one.expand(x=double.expand(x=[1, 2, 3])))


map_over_mapped()
