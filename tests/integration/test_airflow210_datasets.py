"""Datasets through a Redis + PostgreSQL cluster, from Airflow 2.10 DAG files
(``tests/integration/airflow210_dataset_dags``): what the DAG processor records for them,
the events a producer's tries record (exactly one per successful try, with its extra; none
for a failed or skipped one; one for a task that failed once and then succeeded), and what a
dataset-triggered consumer run reads. The expected rows and states are those Airflow 2.10.5
gives (``airflow dags test af210_ds_producer 2024-01-01``, then its ``dataset_event`` and
``dag`` tables)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pendulum
import pytest
from sqlalchemy import insert, select

from squall.common.db import session_scope
from squall.common.models import (
    DagModel,
    DagRun,
    DatasetAliasModel,
    DatasetEvent,
    DatasetModel,
    dagrun_dataset_event,
    dataset_alias_dataset,
)
from squall.common.state import DagRunType
from squall.dag_processing.sync import load_serialized_dags
from squall.runs.run_creation import create_dag_run
from squall.sdk.timetables import DataInterval
from tests.integration.test_airflow_compat_dags import _xcom
from tests.integration.test_cluster import make_cluster
from tests.support.airflow_files import copy_dag_files, dags_test
from tests.support.cluster import Cluster

pytestmark = pytest.mark.integration

DAGS = Path(__file__).parent / "airflow210_dataset_dags"

ORDERS, REPORT = "s3://warehouse/orders", "s3://warehouse/report"

#: Airflow 2.10.5's task states of the producer's run
PRODUCER_STATES = {"produce": "success", "produce_meta": "success", "flaky": "success",
                   "broken": "failed", "skipper": "skipped", "via_alias": "success",
                   "plain_outlet": "success"}

#: Airflow 2.10.5's dataset_event rows of that run: uri -> [(extra, source task)]
PRODUCER_EVENTS = {
    ORDERS: [({"rows": 10, "source": "orders"}, "produce")],
    REPORT: [({"pages": 3}, "produce_meta")],
    "s3://warehouse/flaky": [({}, "flaky")],
    "s3://warehouse/aliased": [({"via": "alias"}, "via_alias")],
    "file:///data/plain.csv": [({}, "plain_outlet")],
}

#: Airflow 2.10.5's dag rows: schedule_interval, timetable_description, dataset_expression
DAG_ROWS = {
    "af210_ds_producer": ("None", "Never, external triggers only", None),
    "af210_ds_consumer": ("Dataset", "Triggered by datasets", {"all": [ORDERS, REPORT]}),
    "af210_ds_either": ("Dataset", "Triggered by datasets",
                        {"all": [{"any": [ORDERS, "s3://warehouse/never"]}, REPORT]}),
    "af210_ds_alias_consumer": ("Unresolved DatasetAlias", "Triggered by datasets",
                                {"alias": "orders-alias"}),
    "af210_ds_or_time": ("Dataset or 0 1 * * *", "Triggered by datasets or At 01:00",
                         {"all": [ORDERS]}),
}


@pytest.fixture
def pg_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    c = make_cluster(request, "redis-pg", tmp_path / "home")
    yield c
    c.stop_all()


def _pairs(rows: Any) -> dict[Any, Any]:
    return {k: v for k, v in rows}


def wait_for(what: str, check: Any, cluster: Cluster, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"{what}: not after {timeout} s:\n{cluster.logs()}")


def events_by_uri(cluster: Cluster) -> dict[str, list[tuple[Any, ...]]]:
    """uri -> [(extra, source task, source try, alias names)], oldest first."""
    with session_scope(cluster.session_factory) as session:
        rows = session.execute(
            select(DatasetModel.uri, DatasetEvent.extra, DatasetEvent.source_task_id,
                   DatasetEvent.source_try_number, DatasetEvent.source_alias_names)
            .join(DatasetModel, DatasetModel.id == DatasetEvent.dataset_id)
            .order_by(DatasetEvent.id)).all()
    out: dict[str, list[tuple[Any, ...]]] = {}
    for uri, extra, task_id, try_number, aliases in rows:
        out.setdefault(uri, []).append((extra, task_id, try_number, aliases))
    return out


def dag_rows(cluster: Cluster) -> dict[str, DagModel]:
    with session_scope(cluster.session_factory) as session:
        return {r.dag_id: r for r in session.scalars(select(DagModel))}


def start_consumer_run(cluster: Cluster, dag_id: str, uris: list[str]) -> str:
    """A dataset-triggered run of ``dag_id`` linked to the latest event of each of ``uris``,
    as the scheduler's dataset step creates one (made here, so this test does not depend on
    that step; when it creates a run too, this run is still the one looked at)."""
    now = pendulum.now("UTC")
    with session_scope(cluster.session_factory) as session:
        dag = load_serialized_dags(session, [dag_id])[dag_id]
        run = create_dag_run(session, dag, run_type=DagRunType.DATASET_TRIGGERED,
                             logical_date=now, data_interval=DataInterval(now, now),
                             run_id=f"dataset_triggered__test_{now.isoformat()}")
        for uri in uris:
            event_id = session.scalar(
                select(DatasetEvent.id).join(DatasetModel,
                                             DatasetModel.id == DatasetEvent.dataset_id)
                .where(DatasetModel.uri == uri).order_by(DatasetEvent.id.desc()).limit(1))
            session.execute(insert(dagrun_dataset_event).values(dag_run_id=run.id,
                                                                event_id=event_id))
        return run.run_id


def test_datasets_through_a_cluster(pg_cluster: Cluster) -> None:
    cluster = pg_cluster
    copy_dag_files(cluster, DAGS)
    cluster.cli("db", "migrate")
    cluster.start_scheduler()
    cluster.start_worker(concurrency=4)

    # the DAG processor's rows (airflow/models/dag.py DAG.bulk_write_to_db)
    rows = wait_for("the five DAGs", lambda: (r := dag_rows(cluster)) and len(r) == 5 and r,
                    cluster)
    assert {d: (r.schedule, r.timetable_description, r.dataset_expression)
            for d, r in rows.items()} == DAG_ROWS
    # a pure dataset schedule gets no time-based run; DatasetOrTimeSchedule its timetable's
    assert rows["af210_ds_consumer"].next_dagrun is None
    assert rows["af210_ds_or_time"].next_dagrun is not None
    with session_scope(cluster.session_factory) as session:
        datasets = _pairs(session.execute(select(DatasetModel.uri, DatasetModel.is_orphaned)))
    # every URI of a schedule or an outlet (inlets name none), none orphaned
    assert datasets == {uri: False for uri in (
        ORDERS, REPORT, "s3://warehouse/flaky", "s3://warehouse/broken",
        "s3://warehouse/skipped", "file:///data/plain.csv", "s3://warehouse/never")}

    # DatasetOrTimeSchedule's timetable (a CronTriggerTimetable, no catchup) gives a run at
    # its latest tick at once
    def scheduled_runs(dag_id: str) -> list[str]:
        with session_scope(cluster.session_factory) as session:
            return list(session.scalars(select(DagRun.run_id).where(
                DagRun.dag_id == dag_id, DagRun.run_type == DagRunType.SCHEDULED.value)))

    wait_for("a time-based run of af210_ds_or_time",
             lambda: scheduled_runs("af210_ds_or_time"), cluster)

    producer = cluster.trigger("af210_ds_producer")
    assert cluster.wait_for_run("af210_ds_producer", producer, timeout=120) == "failed"
    assert {t: ti.state for t, ti in cluster.task_instances(
        "af210_ds_producer", producer).items()} == PRODUCER_STATES
    assert cluster.task_instances("af210_ds_producer", producer)["flaky"].try_number == 2

    events = events_by_uri(cluster)
    assert {uri: [(extra, task) for extra, task, _, _ in e] for uri, e in events.items()} \
        == PRODUCER_EVENTS
    # flaky's event is its second (successful) try's; the alias named on its event
    assert events["s3://warehouse/flaky"][0][2] == 2
    assert events["s3://warehouse/aliased"][0][3] == ["orders-alias"]
    with session_scope(cluster.session_factory) as session:
        resolved = session.execute(
            select(DatasetAliasModel.name, DatasetModel.uri)
            .join(dataset_alias_dataset,
                  dataset_alias_dataset.c.alias_id == DatasetAliasModel.id)
            .join(DatasetModel, DatasetModel.id == dataset_alias_dataset.c.dataset_id)).all()
    assert [tuple(r) for r in resolved] == [("orders-alias", "s3://warehouse/aliased")]

    # a consumer run reads the events it was created from, and its inlets' events
    consumer = start_consumer_run(cluster, "af210_ds_consumer", [ORDERS, REPORT])
    assert cluster.wait_for_run("af210_ds_consumer", consumer, timeout=120) == "success"
    assert _xcom(cluster, "af210_ds_consumer", consumer, "read_events") == {
        "triggering": {ORDERS: [{"rows": 10, "source": "orders"}], REPORT: [{"pages": 3}]},
        "sources": ["af210_ds_producer"],
        "inlet": [{"rows": 10, "source": "orders"}],
    }
    logs = list(cluster.home.glob(
        f"logs/dag_id=af210_ds_consumer/run_id={consumer}/task_id=templated/attempt=1.log"))
    assert logs, "no log of the templated task"
    assert f"{ORDERS}=produce;{REPORT}=produce_meta;" in logs[0].read_text()
    # a pure dataset schedule never got a time-based run
    assert scheduled_runs("af210_ds_consumer") == []
    assert scheduled_runs("af210_ds_either") == []


def test_producer_under_dags_test(tmp_path: Path) -> None:
    """``squall dags test`` records the events as ``airflow dags test`` does (Airflow
    2.10.5's run above: the same states and the same dataset_event rows)."""
    cluster = Cluster(home=tmp_path / "home", db_url=f"sqlite:///{tmp_path / 'squall.db'}",
                      broker_url="", result_backend="")
    copy_dag_files(cluster, DAGS)
    cluster.cli("db", "migrate")
    cluster.cli("dags", "list")  # parses the files and records them (their dataset rows)
    ran = dags_test(cluster, "af210_ds_producer", "2024-01-01")
    assert (ran["state"], ran["states"]) == ("failed", PRODUCER_STATES)
    events = events_by_uri(cluster)
    assert {uri: [(extra, task) for extra, task, _, _ in e] for uri, e in events.items()} \
        == PRODUCER_EVENTS
    assert events["s3://warehouse/flaky"][0][2] == 2
