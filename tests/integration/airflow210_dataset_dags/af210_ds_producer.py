"""A producer in Airflow 2.10's dataset idioms: outlets with an extra set through
``outlet_events``, a yielded ``Metadata``, an alias a dataset is attached to at run time, a
task that fails once and then succeeds, one that fails and one that skips.

Airflow 2.10.5 (``airflow dags test af210_ds_producer 2024-01-01``) gives: produce,
produce_meta, flaky, via_alias and plain_outlet success; broken failed; skipper skipped; and
records one dataset event per successful task (flaky's from its second try), none for
broken or skipper (airflow/models/taskinstance.py ``_run_raw_task``: ``_register_dataset_changes``
only when the state is SUCCESS).
"""

from __future__ import annotations

import pendulum
from airflow.datasets import Dataset, DatasetAlias
from airflow.datasets.metadata import Metadata
from airflow.decorators import dag, task
from airflow.exceptions import AirflowSkipException
from airflow.operators.empty import EmptyOperator

ORDERS = Dataset("s3://warehouse/orders/")
REPORT = Dataset("s3://warehouse/report", extra={"team": "bi"})
FLAKY = Dataset("s3://warehouse/flaky")
BROKEN = Dataset("s3://warehouse/broken")
SKIPPED = Dataset("s3://warehouse/skipped")
PLAIN = Dataset("file:///data/plain.csv")
ALIAS = DatasetAlias("orders-alias")


@dag(schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False)
def af210_ds_producer():
    @task(outlets=[ORDERS])
    def produce(*, outlet_events):
        outlet_events[ORDERS].extra = {"rows": 10}
        outlet_events[ORDERS].extra["source"] = "orders"

    @task(outlets=[REPORT])
    def produce_meta():
        yield Metadata(REPORT, {"pages": 3})
        return "done"

    @task(outlets=[FLAKY], retries=1, retry_delay=pendulum.duration(seconds=0))
    def flaky(ti=None):
        if ti.try_number == 1:
            raise RuntimeError("first try fails")

    @task(outlets=[BROKEN])
    def broken():
        raise RuntimeError("always fails")

    @task(outlets=[SKIPPED])
    def skipper():
        raise AirflowSkipException("nothing new")

    @task(outlets=[ALIAS])
    def via_alias(*, outlet_events):
        outlet_events[ALIAS].add(Dataset("s3://warehouse/aliased"), extra={"via": "alias"})

    produce()
    produce_meta()
    flaky()
    broken()
    skipper()
    via_alias()
    EmptyOperator(task_id="plain_outlet", outlets=[PLAIN])


af210_ds_producer()
