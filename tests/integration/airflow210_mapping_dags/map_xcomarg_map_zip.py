"""XComArg.map(fn) and XComArg.zip(...), with and without a fillvalue."""
import pendulum
from airflow.decorators import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def map_xcomarg_map_zip():
    @task
    def numbers():
        return [1, 2, 3]

    @task
    def letters():
        return ["a", "b"]

    @task
    def show(item):
        return str(item)

    nums = numbers()
    lets = letters()
    doubled = show.override(task_id="doubled").expand(item=nums.map(lambda n: n * 2))
    zipped = show.override(task_id="zipped").expand(item=nums.zip(lets))
    filled = show.override(task_id="filled").expand(item=nums.zip(lets, fillvalue="-"))

    @task
    def check(d, z, f):
        assert list(d) == ["2", "4", "6"], list(d)
        assert list(z) == ["(1, 'a')", "(2, 'b')"], list(z)
        assert list(f) == ["(1, 'a')", "(2, 'b')", "(3, '-')"], list(f)

    check(doubled, zipped, filled)


map_xcomarg_map_zip()
