"""Datasets through a Redis + PostgreSQL cluster, from Airflow 2.10 DAG files
(``tests/integration/airflow210_dataset_dags``): what the DAG processor records for them,
the events a producer's tries record (exactly one per successful try, with its extra; none
for a failed or skipped one; one for a task that failed once and then succeeded), the
dataset-triggered runs the scheduler creates from them (a list schedule, ``&`` / ``|``, an
alias, ``DatasetOrTimeSchedule``; none for an all-of consumer still missing a dataset), what
those runs read, and what the REST API and the CLI show of it all. The expected rows and
states are those Airflow 2.10.5 gives (``airflow dags test af210_ds_producer 2024-01-01``,
then its ``dataset_event`` and ``dag`` tables; and ``airflow scheduler`` on the same files
with the producer triggered, for the consumers' runs)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pendulum
import pytest
from sqlalchemy import select

from squall.common.db import session_scope
from squall.common.models import (
    DagModel,
    DagRun,
    DatasetAliasModel,
    DatasetDagRunQueue,
    DatasetEvent,
    DatasetModel,
    dagrun_dataset_event,
    dataset_alias_dataset,
)
from squall.common.settings import Settings
from squall.common.state import DagRunType
from tests.integration.test_airflow_compat_dags import _xcom
from tests.integration.test_cluster import make_cluster
from tests.integration.test_dataset_cluster import scheduler_looped_since
from tests.support.airflow_files import copy_dag_files, dags_test
from tests.support.api import serve
from tests.support.cluster import Cluster

pytestmark = pytest.mark.integration

DAGS = Path(__file__).parent / "airflow210_dataset_dags"
V1 = "/api/v1"

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
    "af210_ds_waiting": ("Dataset", "Triggered by datasets",
                         {"all": [ORDERS, "s3://warehouse/never"]}),
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


#: the consumers' dataset-triggered runs after the producer's run, as Airflow 2.10.5's
#: scheduler creates them (SchedulerJobRunner._create_dag_runs_dataset_triggered over
#: DagModel.dags_needing_dagruns): dag_id -> (the linked events' (uri, source task), the
#: task states). af210_ds_waiting (all of ORDERS and a dataset nobody updates) gets none.
CONSUMER_RUNS: dict[str, tuple[list[tuple[str, str]], dict[str, str]]] = {
    "af210_ds_consumer": ([(ORDERS, "produce"), (REPORT, "produce_meta")],
                          {"read_events": "success", "templated": "success"}),
    "af210_ds_either": ([(ORDERS, "produce"), (REPORT, "produce_meta")],
                        {"nothing": "success"}),
    "af210_ds_alias_consumer": ([("s3://warehouse/aliased", "via_alias")],
                                {"read_alias": "success"}),
    "af210_ds_or_time": ([(ORDERS, "produce")], {"nothing": "success"}),
}


def dataset_runs(cluster: Cluster) -> dict[str, list[tuple[str, str]]]:
    """dag_id -> [(run_id, state)] of its dataset-triggered runs."""
    with session_scope(cluster.session_factory) as session:
        rows = session.execute(
            select(DagRun.dag_id, DagRun.run_id, DagRun.state)
            .where(DagRun.run_type == DagRunType.DATASET_TRIGGERED.value)
            .order_by(DagRun.dag_id, DagRun.logical_date)).all()
    out: dict[str, list[tuple[str, str]]] = {}
    for dag_id, run_id, state in rows:
        out.setdefault(dag_id, []).append((run_id, state))
    return out


def linked_events(cluster: Cluster, dag_id: str, run_id: str) -> list[tuple[str, str]]:
    """(uri, source task) of the events a run was created from, by uri."""
    with session_scope(cluster.session_factory) as session:
        rows = session.execute(
            select(DatasetModel.uri, DatasetEvent.source_task_id)
            .join(DatasetEvent, DatasetEvent.dataset_id == DatasetModel.id)
            .join(dagrun_dataset_event, dagrun_dataset_event.c.event_id == DatasetEvent.id)
            .join(DagRun, DagRun.id == dagrun_dataset_event.c.dag_run_id)
            .where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
            .order_by(DatasetModel.uri)).all()
    return [(uri, task) for uri, task in rows]


def queued_uris(cluster: Cluster, dag_id: str) -> list[str]:
    with session_scope(cluster.session_factory) as session:
        return sorted(session.scalars(
            select(DatasetModel.uri)
            .join(DatasetDagRunQueue, DatasetDagRunQueue.dataset_id == DatasetModel.id)
            .where(DatasetDagRunQueue.target_dag_id == dag_id)))


def start(cluster: Cluster) -> dict[str, DagModel]:
    """A scheduler and a worker on the DAG files; the DAG processor's rows, once all six
    DAGs are recorded."""
    copy_dag_files(cluster, DAGS)
    cluster.cli("db", "migrate")
    cluster.start_scheduler()
    cluster.start_worker(concurrency=4)
    found: dict[str, DagModel] = wait_for(
        "the six DAGs", lambda: (r := dag_rows(cluster)) and len(r) == 6 and r, cluster)
    return found


def produce_and_consume(cluster: Cluster) -> tuple[str, dict[str, str]]:
    """Trigger the producer and wait until the scheduler has created, and the worker
    finished, the consumers' runs. Returns the producer's run id and each consumer's
    dataset-triggered run id."""
    producer = cluster.trigger("af210_ds_producer")
    assert cluster.wait_for_run("af210_ds_producer", producer, timeout=120) == "failed"

    def finished() -> dict[str, list[tuple[str, str]]] | None:
        runs = dataset_runs(cluster)
        done = all(runs.get(d) and all(state in ("success", "failed")
                                        for _, state in runs[d]) for d in CONSUMER_RUNS)
        return runs if done else None

    wait_for("the consumers' dataset-triggered runs", finished, cluster, timeout=120)
    # a few more scheduler loops: no further run comes (none for af210_ds_waiting, no second
    # one for a consumer whose events arrived one after the other)
    since = pendulum.now("UTC")
    scheduler_looped_since(cluster, since, seconds=3)
    runs = dataset_runs(cluster)
    assert {d: len(r) for d, r in runs.items()} == {d: 1 for d in CONSUMER_RUNS}, runs
    return producer, {d: r[0][0] for d, r in runs.items()}


def test_datasets_through_a_cluster(pg_cluster: Cluster) -> None:
    """The producer's run through the cluster; the scheduler creates the consumers' runs
    (no run or event link made here). Checked against Airflow 2.10.5's ``airflow
    scheduler`` (SequentialExecutor, SQLite) on the same DAG files with the producer
    triggered: the same consumers got one ``dataset_triggered`` run each, all tasks
    success, af210_ds_waiting none (its ORDERS queue row left)."""
    cluster = pg_cluster
    # the DAG processor's rows (airflow/models/dag.py DAG.bulk_write_to_db)
    rows = start(cluster)
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

    producer, consumers = produce_and_consume(cluster)
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

    # the scheduler's runs: one per consumer whose condition holds, linked to its events
    # (those of the datasets its schedule names, an alias's as resolved), every task done
    with session_scope(cluster.session_factory) as session:
        types = _pairs(session.execute(select(DagRun.dag_id, DagRun.run_type).where(
            DagRun.run_id.in_(list(consumers.values())))))
    assert types == {d: DagRunType.DATASET_TRIGGERED.value for d in CONSUMER_RUNS}
    for dag_id, (linked, states) in CONSUMER_RUNS.items():
        run_id = consumers[dag_id]
        assert cluster.run_state(dag_id, run_id) == "success", dag_id
        assert linked_events(cluster, dag_id, run_id) == linked, dag_id
        assert {t: ti.state for t, ti in cluster.task_instances(
            dag_id, run_id).items()} == states, dag_id
    # all of ORDERS and a dataset no producer updated: no run, ORDERS stays queued for it
    assert "af210_ds_waiting" not in dataset_runs(cluster)
    assert queued_uris(cluster, "af210_ds_waiting") == [ORDERS]
    assert all(queued_uris(cluster, d) == [] for d in CONSUMER_RUNS)

    # the consumer's tasks read the events its run was created from, and its inlet's
    consumer = consumers["af210_ds_consumer"]
    assert _xcom(cluster, "af210_ds_consumer", consumer, "read_events") == {
        "triggering": {ORDERS: [{"rows": 10, "source": "orders"}], REPORT: [{"pages": 3}]},
        "sources": ["af210_ds_producer"],
        "inlet": [{"rows": 10, "source": "orders"}],
    }
    # the alias consumer reads the event the alias resolved to, as a triggering event and
    # through the alias as an inlet (airflow/utils/context.py InletEventsAccessors: an
    # alias's events are those recorded through it)
    assert _xcom(cluster, "af210_ds_alias_consumer", consumers["af210_ds_alias_consumer"],
                 "read_alias") == {"triggering": {"s3://warehouse/aliased": [{"via": "alias"}]},
                                   "inlet": [{"via": "alias"}]}
    logs = list(cluster.home.glob(
        f"logs/dag_id=af210_ds_consumer/run_id={consumer}/task_id=templated/attempt=1.log"))
    assert logs, "no log of the templated task"
    # the template's loop over the dict: one "uri=task;" per dataset, in the order the
    # events came (Airflow's DagRun.consumed_dataset_events has no order_by either)
    assert any(line.endswith(f"{ORDERS}=produce;{REPORT}=produce_meta;")
               or line.endswith(f"{REPORT}=produce_meta;{ORDERS}=produce;")
               for line in logs[0].read_text().splitlines()), logs[0].read_text()
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


def test_the_surface_shows_the_real_path(pg_cluster: Cluster) -> None:
    """From the outside, after a real producer run through the cluster: the REST API
    (``/datasets``, ``/datasets/events``, the consumer run's ``upstreamDatasetEvents``) and
    the CLI (``squall datasets list`` / ``events``) show the events the worker recorded and
    the runs the scheduler created from them. (test_api_datasets.py and
    test_datasets_cli.py check the precise cases on rows they build.)"""
    cluster = pg_cluster
    start(cluster)
    producer, consumers = produce_and_consume(cluster)
    # uri -> the (consumer, run) each event of the producer created
    created = {ORDERS: sorted((d, consumers[d]) for d in (
                   "af210_ds_consumer", "af210_ds_either", "af210_ds_or_time")),
               REPORT: sorted((d, consumers[d]) for d in (
                   "af210_ds_consumer", "af210_ds_either")),
               "s3://warehouse/aliased": [("af210_ds_alias_consumer",
                                           consumers["af210_ds_alias_consumer"])],
               "s3://warehouse/flaky": [], "file:///data/plain.csv": []}
    run = consumers["af210_ds_consumer"]

    settings = Settings.load(env={"SQUALL_HOME": str(cluster.home)})
    with serve(settings, cluster.session_factory) as api:
        listed = api.get(f"{V1}/datasets?limit=100", user="viewer").json()
        by_uri = {d["uri"]: d for d in listed["datasets"]}
        assert set(by_uri) == {ORDERS, REPORT, "s3://warehouse/flaky",
                               "s3://warehouse/broken", "s3://warehouse/skipped",
                               "file:///data/plain.csv", "s3://warehouse/never",
                               "s3://warehouse/aliased"}
        assert [(p["dag_id"], p["task_id"]) for p in by_uri[ORDERS]["producing_tasks"]] \
            == [("af210_ds_producer", "produce")]
        assert sorted(c["dag_id"] for c in by_uri[ORDERS]["consuming_dags"]) == [
            "af210_ds_consumer", "af210_ds_either", "af210_ds_or_time", "af210_ds_waiting"]
        assert [a["name"] for a in by_uri["s3://warehouse/aliased"]["aliases"]] == [
            "orders-alias"]
        # the alias's consumer consumes what it resolved to (Airflow 2.10.5 references it
        # when it reparses the consumer: DatasetManager.register_dataset_change)
        assert [c["dag_id"] for c in by_uri["s3://warehouse/aliased"]["consuming_dags"]] == [
            "af210_ds_alias_consumer"]

        body = api.get(f"{V1}/datasets/events?source_dag_id=af210_ds_producer&limit=100",
                       user="viewer").json()
        assert body["total_entries"] == 5
        events = {e["dataset_uri"]: e for e in body["dataset_events"]}
        assert {uri: ([e["extra"]], e["source_task_id"]) for uri, e in events.items()} == {
            uri: ([extra for extra, _ in got], got[0][1])
            for uri, got in PRODUCER_EVENTS.items()}
        assert all(e["source_run_id"] == producer for e in events.values())
        assert {uri: sorted((r["dag_id"], r["dag_run_id"]) for r in e["created_dagruns"])
                for uri, e in events.items()} == created
        assert {r["state"] for e in events.values() for r in e["created_dagruns"]} == {
            "success"}

        upstream = api.get(f"{V1}/dags/af210_ds_consumer/dagRuns/{quote(run, safe='')}"
                           "/upstreamDatasetEvents", user="viewer").json()
        assert upstream["total_entries"] == 2
        assert sorted(upstream["dataset_events"], key=lambda e: e["dataset_uri"]) == [
            events[ORDERS], events[REPORT]]
        one = api.get(f"{V1}/dags/af210_ds_consumer/dagRuns/{quote(run, safe='')}").json()
        assert (one["run_type"], one["state"], one["external_trigger"]) == (
            "dataset_triggered", "success", False)

    cli_list = {d["uri"]: d for d in cluster.cli_json("datasets", "list")}
    assert cli_list[ORDERS]["producers"] == ["af210_ds_producer.produce"]
    assert cli_list[ORDERS]["consumers"] == [
        "af210_ds_consumer", "af210_ds_either", "af210_ds_or_time", "af210_ds_waiting"]
    assert cli_list["s3://warehouse/aliased"]["consumers"] == ["af210_ds_alias_consumer"]
    assert cli_list[ORDERS]["last_event"] == events[ORDERS]
    assert cli_list["s3://warehouse/never"]["last_event"] is None
    assert cluster.cli_json("datasets", "events", ORDERS) == [events[ORDERS]]
    # every event of the producer, newest first, with the runs it created
    newest_first = sorted(events.values(), key=lambda e: (e["timestamp"], e["id"]),
                          reverse=True)
    assert cluster.cli_json("datasets", "events", "--dag-id", "af210_ds_producer") \
        == newest_first
