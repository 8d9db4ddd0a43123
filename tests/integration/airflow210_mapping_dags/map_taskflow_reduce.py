"""TaskFlow map + reduce: one add_one instance per item, then sum over all of them."""
import pendulum
from airflow.decorators import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def map_taskflow_reduce():
    @task
    def make_list():
        return [1, 2, 3]

    @task
    def add_one(x: int, inc: int):
        return x + inc

    @task
    def total(values):
        result = sum(values)
        if result != 9:
            raise ValueError(f"expected 9, got {result}")
        return result

    total(add_one.partial(inc=1).expand(x=make_list()))


map_taskflow_reduce()
