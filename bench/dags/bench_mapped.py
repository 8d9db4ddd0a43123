"""W6 (issue 24): one task mapped 1,000 ways over its upstream's output:
``make`` returns ``list(range(1000))``, ``noop.expand(x=make())`` (1,001 no-op tries)."""

from __future__ import annotations

import pendulum

from squall import DAG, task

MAP_LENGTH = 1000


@task
def make() -> list[int]:
    return list(range(MAP_LENGTH))


@task
def noop(x: int) -> None:
    return None


with DAG("bench_mapped", schedule=None, catchup=False,
         start_date=pendulum.datetime(2024, 1, 1, tz="UTC")) as dag:
    noop.expand(x=make())
