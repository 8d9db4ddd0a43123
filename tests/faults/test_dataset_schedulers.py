"""Two schedulers and dataset events (issue 25): one set of events gives one consumer run.

Two ``squall scheduler`` processes run against the session's PostgreSQL test database, both
idle and woken by the same notification when an event is recorded (``pg_notify`` in the
recording transaction), so both look at the consumer DAGs' queues at the same moment. Each
round records one event of the dataset that :data:`CONSUMERS` DAGs consume; after every
round each DAG must have exactly one more dataset-triggered run, created from that round's
event alone, and no queue row left. Without the ``FOR UPDATE SKIP LOCKED`` of the DAG rows
(squall.runs.dataset_runs) both schedulers create a run from the same queue rows (the
second one a microsecond later, past the unique logical date), and this fails.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from squall.common.db import session_scope
from squall.common.models import DagModel, DagRun, DatasetDagRunQueue, Job, dagrun_dataset_event
from squall.common.state import DagRunType
from tests.support.cluster import Cluster
from tests.support.dataset_queue import emit
from tests.support.services import wait_until

pytestmark = pytest.mark.integration

URI = "s3://lake/raced"
CONSUMERS = 8
ROUNDS = 5

DAGS = '''
import pendulum
from squall import DAG, PythonOperator
from squall.sdk.datasets import Dataset


def noop():
    return None


for n in range(COUNT):
    with DAG(f"raced_{n}", schedule=[Dataset("URI")],
             start_date=pendulum.datetime(2024, 1, 1, tz="UTC")) as dag:
        PythonOperator(task_id="work", python_callable=noop)
    globals()[f"dag_{n}"] = dag
'''


def _links(cluster: Cluster) -> dict[str, dict[str, list[int]]]:
    """dag_id -> run_id -> event ids, of the dataset-triggered runs."""
    found: dict[str, dict[str, list[int]]] = {}
    with session_scope(cluster.session_factory) as session:
        runs = session.execute(select(DagRun.id, DagRun.dag_id, DagRun.run_id).where(
            DagRun.run_type == DagRunType.DATASET_TRIGGERED.value)).all()
        events: dict[int, list[int]] = {}
        for run_pk, event_id in session.execute(select(dagrun_dataset_event.c.dag_run_id,
                                                       dagrun_dataset_event.c.event_id)):
            events.setdefault(run_pk, []).append(event_id)
        for run_pk, dag_id, run_id in runs:
            found.setdefault(dag_id, {})[run_id] = sorted(events.get(run_pk, []))
    return found


def _queued(cluster: Cluster) -> int:
    with session_scope(cluster.session_factory) as session:
        return int(session.scalar(select(func.count()).select_from(DatasetDagRunQueue)) or 0)


def _both_looped_since(cluster: Cluster, since: datetime) -> None:
    """Both schedulers' job heartbeats (every half second here) are two seconds past
    ``since``: each has looped, and seen the queues, since."""
    def beaten() -> bool:
        with session_scope(cluster.session_factory) as session:
            beats = session.scalars(select(Job.latest_heartbeat).where(
                Job.job_type == "SchedulerJob", Job.state == "running")).all()
        return len(beats) == 2 and all(b >= since + timedelta(seconds=2) for b in beats)
    wait_until(beaten, 60, message="both schedulers to loop")


def test_two_schedulers_one_event_one_run_per_consumer(
        cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory("redis-pg")
    (cluster.dags_folder / "raced.py").write_text(DAGS.replace("COUNT", str(CONSUMERS))
                                                 .replace("URI", URI))
    cluster.start_scheduler("a")
    cluster.start_scheduler("b")
    cluster.start_worker(concurrency=4)
    names = {f"raced_{n}" for n in range(CONSUMERS)}

    def synced() -> bool:
        with session_scope(cluster.session_factory) as session:
            return set(session.scalars(select(DagModel.dag_id).where(
                DagModel.dataset_expression.is_not(None)))) >= names
    wait_until(synced, 60, message="the consumer DAGs to be parsed")

    events: list[int] = []
    for round_no in range(1, ROUNDS + 1):
        _both_looped_since(cluster, datetime.now(UTC))  # both idle, listening
        events.append(emit(cluster.session_factory, URI))

        def created(n: int = round_no) -> bool:
            return _queued(cluster) == 0 and all(
                len(_links(cluster).get(name, {})) >= n for name in names)
        wait_until(created, 60, message=f"round {round_no}'s consumer runs")
        _both_looped_since(cluster, datetime.now(UTC))
        links = _links(cluster)
        for name in sorted(names):
            runs = links.get(name, {})
            assert len(runs) == round_no, (name, runs, cluster.logs("a", "b", tail=40))
            # each run was created from one round's event, each event taken once
            assert sorted(e for ids in runs.values() for e in ids) == events, (name, runs)
            assert all(len(ids) == 1 for ids in runs.values()), (name, runs)
    assert "triggered by 1 dataset event" in cluster.logs("a", "b", tail=10_000)
