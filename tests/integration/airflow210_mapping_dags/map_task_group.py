"""A mapped task group: its tasks get the group's map index; instance N of a task reads
instance N of the group's other tasks; one failing index only fails its own chain."""
import pendulum
from airflow.decorators import dag, task, task_group


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def map_task_group():
    @task
    def numbers():
        return [1, 2, 3]

    @task_group
    def process(x):
        @task
        def double(v):
            return v * 2

        @task
        def describe(v, d):
            return f"{v}->{d}"

        return describe(x, double(x))

    @task
    def check(values):
        assert list(values) == ["1->2", "2->4", "3->6"], list(values)

    check(process.expand(x=numbers()))

    @task_group
    def fragile(x, limit):
        @task
        def guard(v, lim):
            if v > lim:
                raise ValueError(f"{v} is over {lim}")
            return v

        @task
        def after(v):
            return v

        return after(guard(x, limit))

    @task(trigger_rule="all_done")
    def summary(values):
        return sorted(v for v in values if v is not None)

    summary(fragile.partial(limit=2).expand(x=[1, 2, 3]))


map_task_group()
