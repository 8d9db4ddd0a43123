"""Return values a mapped task cannot expand over fail the *upstream* (Airflow 2.10:
UnmappableXComLengthPushed past [core] max_map_length, 1024 by default, and
UnmappableXComTypePushed for a value that is not a list or dict)."""
import pendulum
from airflow.decorators import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def map_unmappable():
    @task
    def too_long():
        return list(range(1025))

    @task
    def not_a_list():
        return 5

    @task
    def each(x):
        return x

    each.override(task_id="each_long").expand(x=too_long())
    each.override(task_id="each_int").expand(x=not_a_list())


map_unmappable()
