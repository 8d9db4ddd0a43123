"""Mapping over an upstream's dict: one instance per (key, value) pair."""
import pendulum
from airflow.decorators import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def map_over_dict():
    @task
    def prices():
        return {"apple": 3, "pear": 5}

    @task
    def describe(pair):
        key, value = pair
        return f"{key}={value}"

    @task
    def check(lines):
        assert sorted(lines) == ["apple=3", "pear=5"], list(lines)

    check(describe.expand(pair=prices()))


map_over_dict()
