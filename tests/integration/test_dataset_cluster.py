"""Dataset-triggered runs end to end: a real ``squall scheduler`` and a Celery worker on
Redis + PostgreSQL; events recorded as the API records an external one; the consumer runs'
tasks executed on the worker.

The rules asserted are Airflow 2.10's (``SchedulerJobRunner._create_dag_runs_dataset_triggered``,
``DagModel.dags_needing_dagruns``, ``DatasetManager.register_dataset_change``): one run per
set of queued events, every event taken by one run at most, all-of waits for each
dataset, a DAG at ``max_active_runs`` keeps its queue and gets exactly one more run when
there is room, a paused DAG is not queued.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import func, select

from squall.common.db import session_scope
from squall.common.models import (
    DagModel,
    DagRun,
    DatasetDagRunQueue,
    DatasetEvent,
    Job,
    dagrun_dataset_event,
)
from squall.common.settings import Settings
from squall.common.state import DagRunType
from tests.integration.test_cluster import make_cluster
from tests.support.api import serve
from tests.support.cluster import Cluster
from tests.support.dataset_queue import emit
from tests.support.services import wait_until

pytestmark = pytest.mark.integration

A, B = "s3://lake/orders", "s3://lake/customers"
V1 = "/api/v1"

CONSUMERS = '''
import os
import time
from pathlib import Path

import pendulum
from squall import DAG, PythonOperator
from squall.sdk.datasets import Dataset

A, B = Dataset("s3://lake/orders"), Dataset("s3://lake/customers")

LOG = os.environ["SQUALL_TEST_EXEC_LOG"]
GATE = Path(os.environ["SQUALL_TEST_GATE"])


def record(ti):
    with open(LOG, "a") as f:
        f.write(f"{ti.dag_id} {ti.task_id} {ti.run_id}\\n")


def held(ti):
    record(ti)
    deadline = time.monotonic() + 120
    while not GATE.exists() and time.monotonic() < deadline:
        time.sleep(0.1)


START = pendulum.datetime(2024, 1, 1, tz="UTC")
for dag_id, schedule, kwargs, fn in (
        ("consume_one", A, {}, record), ("consume_both", [A, B], {}, record),
        ("consume_limited", [A], {"max_active_runs": 1}, held),
        ("consume_paused", A, {"is_paused_upon_creation": True}, record)):
    with DAG(dag_id, schedule=schedule, start_date=START, **kwargs) as dag:
        PythonOperator(task_id="work", python_callable=fn)
    globals()[dag_id] = dag

with DAG("producer", schedule=None, start_date=START) as producer:
    PythonOperator(task_id="make", python_callable=record, outlets=[A])
'''


@pytest.fixture
def pg_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    c = make_cluster(request, "redis-pg", tmp_path / "home")
    yield c
    c.stop_all()


def dataset_runs(cluster: Cluster, dag_id: str) -> list[DagRun]:
    with session_scope(cluster.session_factory) as session:
        return list(session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id,
                                 DagRun.run_type == DagRunType.DATASET_TRIGGERED.value)
            .order_by(DagRun.logical_date)))


def linked(cluster: Cluster, dag_id: str) -> dict[str, list[int]]:
    """run_id -> the ids of the events it was created from."""
    found: dict[str, list[int]] = {}
    with session_scope(cluster.session_factory) as session:
        for run_id, event_id in session.execute(
            select(DagRun.run_id, dagrun_dataset_event.c.event_id)
            .join(dagrun_dataset_event, dagrun_dataset_event.c.dag_run_id == DagRun.id)
            .where(DagRun.dag_id == dag_id)
        ).all():
            found.setdefault(run_id, []).append(event_id)
    return {k: sorted(v) for k, v in found.items()}


def queue_size(cluster: Cluster, dag_id: str) -> int:
    with session_scope(cluster.session_factory) as session:
        return int(session.scalar(select(func.count()).select_from(DatasetDagRunQueue).where(
            DatasetDagRunQueue.target_dag_id == dag_id)) or 0)


def scheduler_looped_since(cluster: Cluster, since: datetime, seconds: float = 2.0) -> None:
    """Wait until the scheduler's job heartbeat is ``seconds`` past ``since`` (it beats
    every second here, between loops): the loops in between have seen what was there."""
    def beaten() -> bool:
        with session_scope(cluster.session_factory) as session:
            latest = session.scalar(select(func.max(Job.latest_heartbeat)))
        return latest is not None and latest >= since + timedelta(seconds=seconds)
    wait_until(beaten, 60, message="the scheduler to loop")


def test_dataset_events_trigger_consumer_runs_on_the_cluster(pg_cluster: Cluster) -> None:
    cluster = pg_cluster
    exec_log = cluster.home / "executions.log"
    gate = cluster.home / "gate"
    cluster.extra_env.update(SQUALL_TEST_EXEC_LOG=str(exec_log), SQUALL_TEST_GATE=str(gate))
    (cluster.dags_folder / "consumers.py").write_text(CONSUMERS)
    cluster.cli("db", "migrate")
    cluster.start_scheduler()
    cluster.start_worker(concurrency=4)
    names = {"consume_one", "consume_both", "consume_limited", "consume_paused"}
    names_all = names | {"producer"}

    def synced() -> bool:
        with session_scope(cluster.session_factory) as session:
            return set(session.scalars(select(DagModel.dag_id).where(
                DagModel.dataset_expression.is_not(None)))) >= names and set(
                    session.scalars(select(DagModel.dag_id))) >= names_all
    wait_until(synced, 60, message="the consumer DAGs to be parsed")
    sf = cluster.session_factory
    with session_scope(sf) as session:
        assert session.get(DagModel, "consume_both").dataset_expression == {"all": [A, B]}

    first = emit(sf, A, extra={"rows": 10})
    # one run of consume_one, with the event, run on the worker
    wait_until(lambda: dataset_runs(cluster, "consume_one"), 60,
               message="consume_one's dataset-triggered run")
    (run,) = dataset_runs(cluster, "consume_one")
    assert cluster.wait_for_run("consume_one", run.run_id) == "success", cluster.logs()
    assert run.run_id == f"dataset_triggered__{run.logical_date.isoformat()}"
    assert linked(cluster, "consume_one") == {run.run_id: [first]}
    ti = cluster.task_instances("consume_one", run.run_id)["work"]
    assert ti.hostname is not None and ti.hostname.startswith("w1@")
    assert f"consume_one work {run.run_id}" in exec_log.read_text()

    # consume_limited's first run holds its only slot until the gate opens
    wait_until(lambda: dataset_runs(cluster, "consume_limited"), 60,
               message="consume_limited's first run")
    wait_until(lambda: "consume_limited work" in (exec_log.read_text()
                                                  if exec_log.exists() else ""),
               60, message="consume_limited's first task to start")
    second, third = emit(sf, A), emit(sf, A)

    # all-of: A alone queued nothing for consume_both to run; B completes it
    assert dataset_runs(cluster, "consume_both") == []
    assert queue_size(cluster, "consume_both") == 1
    last = emit(sf, B)
    wait_until(lambda: dataset_runs(cluster, "consume_both"), 60,
               message="consume_both's run once both datasets changed")
    (both,) = dataset_runs(cluster, "consume_both")
    assert cluster.wait_for_run("consume_both", both.run_id) == "success", cluster.logs()
    # every event of its datasets up to its logical date (Airflow's query)
    assert linked(cluster, "consume_both") == {both.run_id: [first, second, third, last]}

    # consume_one: no event taken by two runs; how many runs there are depends on how the
    # events fell between the scheduler's loops. ``third`` came while ``second`` was queued
    # and added no queue row: unless a loop ran between them, it is left for the run of a
    # later event (its timestamp is after the queue row's created_at: Airflow's window)
    def taken() -> list[int]:
        return [e for ids in linked(cluster, "consume_one").values() for e in ids]
    wait_until(lambda: queue_size(cluster, "consume_one") == 0
               and {first, second} <= set(taken()), 60,
               message="consume_one to take the queued events")
    assert len(taken()) == len(set(taken()))
    assert set(taken()) <= {first, second, third}

    # consume_limited is at max_active_runs: its queue waits, no second run yet
    scheduler_looped_since(cluster, datetime.now(UTC))
    assert len(dataset_runs(cluster, "consume_limited")) == 1
    assert queue_size(cluster, "consume_limited") == 1
    gate.touch()
    wait_until(lambda: len(dataset_runs(cluster, "consume_limited")) == 2, 60,
               message="consume_limited's run after the first one finished")
    for limited in dataset_runs(cluster, "consume_limited"):
        assert cluster.wait_for_run("consume_limited", limited.run_id) == "success"
    scheduler_looped_since(cluster, datetime.now(UTC))
    assert len(dataset_runs(cluster, "consume_limited")) == 2  # exactly one more
    assert queue_size(cluster, "consume_limited") == 0

    # the paused DAG was not queued and has no run
    assert queue_size(cluster, "consume_paused") == 0
    assert dataset_runs(cluster, "consume_paused") == []

    # the run type as the CLI and the REST API show it
    listed = cluster.cli_json("dags", "list-runs", "consume_both")
    assert [(r["run_id"], r["run_type"]) for r in listed] == [
        (both.run_id, "dataset_triggered")]
    settings = Settings.load(env={"SQUALL_HOME": str(cluster.home)})
    with serve(settings, sf) as api:
        got = api.get(f"{V1}/dags/consume_both/dagRuns").json()
        assert [(r["dag_run_id"], r["run_type"], r["external_trigger"])
                for r in got["dag_runs"]] == [(both.run_id, "dataset_triggered", False)]
        one = api.get(f"{V1}/dags/consume_both/dagRuns/{quote(both.run_id, safe='')}").json()
        assert one["data_interval_start"] is not None

    # a producing task's success: its event (recorded by the worker in its outcome write)
    # triggers consume_one, whose run's data interval is the producer run's
    before = {r.run_id for r in dataset_runs(cluster, "consume_one")}
    produced = cluster.trigger("producer")
    assert cluster.wait_for_run("producer", produced) == "success", cluster.logs()
    wait_until(lambda: {r.run_id for r in dataset_runs(cluster, "consume_one")} - before, 60,
               message="consume_one's run from the producer's event")
    (new,) = [r for r in dataset_runs(cluster, "consume_one") if r.run_id not in before]
    with session_scope(sf) as session:
        source = session.scalar(select(DagRun).where(DagRun.dag_id == "producer",
                                                     DagRun.run_id == produced))
        producer_event = session.scalar(select(DatasetEvent.id).where(
            DatasetEvent.source_dag_id == "producer", DatasetEvent.source_run_id == produced))
    assert source is not None and producer_event is not None
    assert producer_event in linked(cluster, "consume_one")[new.run_id]
    assert new.data_interval_end == source.data_interval_end
    assert cluster.wait_for_run("consume_one", new.run_id) == "success", cluster.logs()
