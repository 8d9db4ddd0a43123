"""TaskFlow: ``@dag`` and ``@task``; return values travel by XCom and create the
dependencies; ``multiple_outputs`` splits a dict into keys."""

import pendulum

from squall import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), tags=["example"])
def example_taskflow(multiplier: int = 3):
    @task
    def extract():
        return [1, 2, 3, 4]

    @task(multiple_outputs=True)
    def transform(values, params=None):
        factor = params["multiplier"]
        return {"total": sum(values) * factor, "count": len(values)}

    @task
    def load(total, count):
        if (total, count) != (30, 4):
            raise ValueError(f"unexpected {total}, {count}")
        return f"loaded {count} rows, total {total}"

    summary = transform(extract())
    load(summary["total"], summary["count"])


example_taskflow()
