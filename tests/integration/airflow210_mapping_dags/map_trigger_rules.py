"""One mapped instance fails: an all_success downstream is upstream_failed, an all_done one
runs, and a one_failed one runs."""
import pendulum
from airflow.decorators import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def map_trigger_rules():
    @task
    def maybe_fail(x):
        if x == 2:
            raise ValueError("two is not allowed")
        return x

    mapped = maybe_fail.expand(x=[1, 2, 3])

    @task
    def strict():
        return "ran"

    @task(trigger_rule="all_done")
    def cleanup():
        return "ran"

    @task(trigger_rule="one_failed")
    def alert():
        return "ran"

    mapped >> [strict(), cleanup(), alert()]


map_trigger_rules()
