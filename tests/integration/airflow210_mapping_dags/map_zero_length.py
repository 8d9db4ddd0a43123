"""An upstream returning an empty list: the mapped task is skipped (map index -1), and so is
its all_success downstream."""
import pendulum
from airflow.decorators import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def map_zero_length():
    @task
    def nothing():
        return []

    @task
    def each(x):
        return x

    @task
    def after(values):
        return list(values)

    after(each.expand(x=nothing()))


map_zero_length()
