"""Dataset-triggered runs created by the scheduler loop (squall.runs.dataset_runs through
squall.scheduler.job), with a fake executor, on SQLite and PostgreSQL.

The rules are Airflow 2.10's (``SchedulerJobRunner._create_dag_runs_dataset_triggered``,
``DagModel.dags_needing_dagruns``, ``DatasetTriggeredTimetable.data_interval_for_events``,
``DatasetManager._postgres_queue_dagruns``); each test names the one it depends on.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update

from squall.common.db import SessionFactory, make_session_factory, session_scope
from squall.common.models import (
    DagModel,
    DagRun,
    DatasetDagRunQueue,
    DatasetEvent,
    DatasetModel,
    TaskInstanceKey,
    dagrun_dataset_event,
)
from squall.common.state import DagRunState, DagRunType
from squall.common.wakeup import PostgresWaker
from squall.runs.dataset_runs import create_dataset_triggered_runs
from squall.runs.datasets import DATASET_NOTICE
from squall.runs.run_creation import create_dag_run
from squall.scheduler.dag_runs import SerializedDagCache
from squall.scheduler.job import SchedulerJob
from squall.sdk.dag import DAG
from squall.sdk.timetables import DataInterval
from tests.integration.test_scheduler_job import NOW, Clock, make_settings
from tests.support.dataset_queue import emit, known_dataset, make_consumer
from tests.support.metrics import RecordingMetrics
from tests.support.scheduling import FakeExecutor, Noop, sync_dags

A, B, X = "s3://bucket/a", "s3://bucket/b", "s3://bucket/x"
T1 = datetime(2024, 2, 10, 8, 0, tzinfo=UTC)
MIDNIGHT_3_DAYS_AGO = datetime(2024, 2, 7, tzinfo=UTC)


@pytest.fixture
def metrics() -> RecordingMetrics:
    return RecordingMetrics()


@pytest.fixture
def job(tmp_path: Path, session_factory: SessionFactory,
        metrics: RecordingMetrics) -> SchedulerJob:
    return SchedulerJob(make_settings(tmp_path), session_factory, FakeExecutor(),
                        clock=Clock(), metrics=metrics)


def consumer_dag(dag_id: str = "consumer", **kwargs: object) -> DAG:
    kwargs.setdefault("schedule", None)
    dag = DAG(dag_id, start_date=MIDNIGHT_3_DAYS_AGO, **kwargs)  # type: ignore[arg-type]
    with dag:
        Noop(task_id="only")
    return dag


def runs(sf: SessionFactory, dag_id: str) -> list[DagRun]:
    with session_scope(sf) as session:
        return list(session.scalars(select(DagRun).where(DagRun.dag_id == dag_id)
                                    .order_by(DagRun.logical_date)))


def dataset_runs(sf: SessionFactory, dag_id: str) -> list[DagRun]:
    return [r for r in runs(sf, dag_id) if r.run_type == DagRunType.DATASET_TRIGGERED]


def linked(sf: SessionFactory, run: DagRun) -> list[int]:
    with session_scope(sf) as session:
        return sorted(session.scalars(select(dagrun_dataset_event.c.event_id)
                                      .where(dagrun_dataset_event.c.dag_run_id == run.id)))


def queued(sf: SessionFactory, dag_id: str) -> dict[str, datetime]:
    with session_scope(sf) as session:
        return {uri: created for uri, created in session.execute(
            select(DatasetModel.uri, DatasetDagRunQueue.created_at)
            .join(DatasetModel, DatasetModel.id == DatasetDagRunQueue.dataset_id)
            .where(DatasetDagRunQueue.target_dag_id == dag_id))}


def set_run_state(sf: SessionFactory, run: DagRun, state: DagRunState) -> None:
    with session_scope(sf) as session:
        session.execute(update(DagRun).where(DagRun.id == run.id).values(state=state.value))


def test_an_event_creates_one_run_with_the_event_linked(
        job: SchedulerJob, session_factory: SessionFactory, metrics: RecordingMetrics) -> None:
    sync_dags(session_factory, consumer_dag(), now=NOW)
    make_consumer(session_factory, "consumer", A, [A])
    event_id = emit(session_factory, A, extra={"rows": 3}, timestamp=T1)
    assert queued(session_factory, "consumer") == {A: T1}

    assert job.run_once().runs_created == 1
    (run,) = runs(session_factory, "consumer")
    # the logical date is the latest queue row's created_at, the run id Airflow's
    # DagRunType.generate_run_id; with an external event the interval is its timestamp
    assert run.run_type == DagRunType.DATASET_TRIGGERED
    assert run.run_id == f"dataset_triggered__{T1.isoformat()}"
    assert run.logical_date == T1
    assert (run.data_interval_start, run.data_interval_end) == (T1, T1)
    assert run.external_trigger is False
    assert run.state == DagRunState.RUNNING  # started in the same loop
    assert linked(session_factory, run) == [event_id]
    assert queued(session_factory, "consumer") == {}
    # the events were taken: no second run
    assert job.run_once().runs_created == 0
    assert len(runs(session_factory, "consumer")) == 1
    assert metrics.counts["dataset.triggered_dagruns"] == 1


def test_the_interval_spans_the_producing_runs(job: SchedulerJob,
                                               session_factory: SessionFactory) -> None:
    """Airflow's ``data_interval_for_events``: an event a task recorded counts as its
    run's data interval; an external one as its timestamp."""
    producer = DAG("producer", schedule="@daily", start_date=MIDNIGHT_3_DAYS_AGO)
    with producer:
        Noop(task_id="make")
    sync_dags(session_factory, producer, consumer_dag(), now=NOW)
    make_consumer(session_factory, "consumer", {"all": [A, B]}, [A, B])
    start, end = datetime(2024, 2, 7, tzinfo=UTC), datetime(2024, 2, 8, tzinfo=UTC)
    with session_scope(session_factory) as session:
        source = create_dag_run(session, producer, run_type=DagRunType.SCHEDULED,
                                logical_date=start, data_interval=DataInterval(start, end),
                                now=NOW)
        key = TaskInstanceKey("producer", "make", source.run_id, -1)
    emit(session_factory, A, source=key, try_number=1, timestamp=T1)
    emit(session_factory, B, timestamp=T1 + timedelta(hours=1))
    job.run_once()
    (run,) = dataset_runs(session_factory, "consumer")
    assert (run.data_interval_start, run.data_interval_end) == (start, T1 + timedelta(hours=1))


def test_all_of_two_datasets_waits_for_both(job: SchedulerJob,
                                            session_factory: SessionFactory) -> None:
    sync_dags(session_factory, consumer_dag(), now=NOW)
    make_consumer(session_factory, "consumer", {"all": [A, B]}, [A, B])
    first = emit(session_factory, A, timestamp=T1)
    assert job.run_once().runs_created == 0
    assert runs(session_factory, "consumer") == []
    assert queued(session_factory, "consumer") == {A: T1}  # kept for the next event

    later = T1 + timedelta(minutes=5)
    second = emit(session_factory, B, timestamp=later)
    assert job.run_once().runs_created == 1
    (run,) = runs(session_factory, "consumer")
    assert run.logical_date == later  # the latest queue row's created_at
    assert linked(session_factory, run) == sorted([first, second])
    assert queued(session_factory, "consumer") == {}


def test_any_and_nested_conditions(job: SchedulerJob, session_factory: SessionFactory) -> None:
    sync_dags(session_factory, consumer_dag("either"), consumer_dag("nested"), now=NOW)
    make_consumer(session_factory, "either", {"any": [A, B]}, [A, B])
    make_consumer(session_factory, "nested", {"all": [A, {"any": [B, X]}]}, [A, B, X])
    emit(session_factory, B, timestamp=T1)
    job.run_once()
    assert len(runs(session_factory, "either")) == 1
    assert runs(session_factory, "nested") == []
    emit(session_factory, A, timestamp=T1 + timedelta(minutes=1))
    job.run_once()
    assert len(runs(session_factory, "either")) == 2
    assert len(runs(session_factory, "nested")) == 1


def test_an_alias_holds_through_the_dataset_it_resolved_to(
        job: SchedulerJob, session_factory: SessionFactory) -> None:
    """Airflow 2.10's ``_DatasetAliasCondition``: the ``any`` of the alias's datasets."""
    sync_dags(session_factory, consumer_dag(), now=NOW)
    make_consumer(session_factory, "consumer", {"alias": "daily-out"}, aliases=["daily-out"])
    known_dataset(session_factory, X)
    event_id = emit(session_factory, X, alias_names=["daily-out"], timestamp=T1)
    assert job.run_once().runs_created == 1
    (run,) = runs(session_factory, "consumer")
    assert linked(session_factory, run) == [event_id]


def test_events_during_a_run_at_max_active_runs_give_one_more_run(
        job: SchedulerJob, session_factory: SessionFactory) -> None:
    """max_active_runs=1 and two events while the first run is active: exactly one more
    run afterwards. Airflow: ``dags_needing_dagruns`` leaves out a DAG at max_active_runs
    (QUEUED + RUNNING) and its queue rows stay; a second event of a queued dataset adds no
    row (``_postgres_queue_dagruns``: ON CONFLICT DO NOTHING), so the next run's logical
    date is the first waiting event's time and it takes the events up to it; the later one
    goes to the run after. Checked with a real Airflow 2.10.5 scheduler (/work/ref/airflow-venv,
    ``schedule=[Dataset(...)]``, ``max_active_runs=1``, events through
    ``dataset_manager.register_dataset_change``): runs linked to events [1], [2], [3, 4]."""
    sync_dags(session_factory, consumer_dag(max_active_runs=1), now=NOW)
    make_consumer(session_factory, "consumer", A, [A])
    first = emit(session_factory, A, timestamp=T1)
    job.run_once()
    (run1,) = runs(session_factory, "consumer")
    assert run1.state == DagRunState.RUNNING

    t2, t3 = T1 + timedelta(minutes=1), T1 + timedelta(minutes=2)
    second = emit(session_factory, A, timestamp=t2)
    third = emit(session_factory, A, timestamp=t3)
    for _ in range(3):
        assert job.run_once().runs_created == 0
    assert len(runs(session_factory, "consumer")) == 1
    assert queued(session_factory, "consumer") == {A: t2}

    set_run_state(session_factory, run1, DagRunState.SUCCESS)
    assert job.run_once().runs_created == 1
    for _ in range(2):
        assert job.run_once().runs_created == 0
    _, run2 = runs(session_factory, "consumer")
    assert run2.logical_date == t2
    assert linked(session_factory, run1) == [first]
    assert linked(session_factory, run2) == [second]
    assert queued(session_factory, "consumer") == {}

    # the next event's run takes the one left over as well (after run2's logical date)
    set_run_state(session_factory, run2, DagRunState.SUCCESS)
    fourth = emit(session_factory, A, timestamp=T1 + timedelta(minutes=3))
    assert job.run_once().runs_created == 1
    run3 = runs(session_factory, "consumer")[-1]
    assert linked(session_factory, run3) == sorted([third, fourth])


def test_a_paused_dag_gets_no_queue_row_and_no_run(job: SchedulerJob,
                                                   session_factory: SessionFactory) -> None:
    sync_dags(session_factory, consumer_dag(), paused=True, now=NOW)
    make_consumer(session_factory, "consumer", A, [A])
    emit(session_factory, A, timestamp=T1)
    assert queued(session_factory, "consumer") == {}
    job.run_once()
    assert runs(session_factory, "consumer") == []
    with session_scope(session_factory) as session:
        session.execute(update(DagModel).where(DagModel.dag_id == "consumer")
                        .values(is_paused=False))
    job.run_once()
    assert runs(session_factory, "consumer") == []  # an event while paused starts nothing


def test_a_taken_logical_date_does_not_stop_the_loop(job: SchedulerJob,
                                                     session_factory: SessionFactory) -> None:
    """A manual run at the queue row's very time (unique dag_id + logical_date): the
    dataset run goes a microsecond later, and the other DAGs still get theirs."""
    dag = consumer_dag()
    sync_dags(session_factory, dag, consumer_dag("other"), now=NOW)
    make_consumer(session_factory, "consumer", A, [A])
    make_consumer(session_factory, "other", A, [A])
    with session_scope(session_factory) as session:
        create_dag_run(session, dag, run_type=DagRunType.MANUAL, logical_date=T1,
                       data_interval=None, external_trigger=True, now=NOW)
    event_id = emit(session_factory, A, timestamp=T1)
    assert job.run_once().runs_created == 2
    (run,) = dataset_runs(session_factory, "consumer")
    assert run.logical_date == T1 + timedelta(microseconds=1)
    assert linked(session_factory, run) == [event_id]
    assert len(dataset_runs(session_factory, "other")) == 1
    assert queued(session_factory, "consumer") == {}


def test_a_bad_condition_is_logged_and_the_others_go_on(
        job: SchedulerJob, session_factory: SessionFactory,
        caplog: pytest.LogCaptureFixture) -> None:
    sync_dags(session_factory, consumer_dag("bad"), consumer_dag("good"), now=NOW)
    make_consumer(session_factory, "bad", {"every": [A]}, [A])
    make_consumer(session_factory, "good", A, [A])
    emit(session_factory, A, timestamp=T1)
    assert job.run_once().runs_created == 1
    assert len(runs(session_factory, "good")) == 1
    assert runs(session_factory, "bad") == []
    assert "DAG bad: no dataset-triggered run: not a dataset expression" in caplog.text


def test_a_dag_that_stopped_waiting_for_datasets_drops_its_queue(
        job: SchedulerJob, session_factory: SessionFactory) -> None:
    sync_dags(session_factory, consumer_dag(), now=NOW)
    make_consumer(session_factory, "consumer", {"all": [A, B]}, [A, B])
    emit(session_factory, A, timestamp=T1)
    make_consumer(session_factory, "consumer", None)
    job.run_once()
    assert queued(session_factory, "consumer") == {}
    assert runs(session_factory, "consumer") == []


def test_dataset_or_time_schedule_gets_both_kinds_of_run(
        job: SchedulerJob, session_factory: SessionFactory) -> None:
    """A DatasetOrTimeSchedule DAG (Airflow's ``DatasetOrTimeSchedule``): its timetable's
    runs, and a dataset-triggered run when its condition holds. Scheduled runs alone move
    ``next_dagrun`` on (Airflow's last automated run is scheduled or backfill)."""
    dag = DAG("both", schedule="@daily", start_date=MIDNIGHT_3_DAYS_AGO, catchup=True)
    with dag:
        Noop(task_id="only")
    sync_dags(session_factory, dag, now=NOW)
    make_consumer(session_factory, "both", A, [A])
    emit(session_factory, A, timestamp=T1)
    job.run_once()
    found = runs(session_factory, "both")
    assert sorted(r.run_type for r in found) == ["dataset_triggered"] + ["scheduled"] * 3
    with session_scope(session_factory) as session:
        dm = session.get(DagModel, "both")
        assert dm is not None and dm.next_dagrun == datetime(2024, 2, 10, tzinfo=UTC)


@pytest.mark.postgres
def test_an_event_that_queues_a_dag_wakes_the_schedulers(pg_engine: Engine) -> None:
    factory = make_session_factory(pg_engine)
    sync_dags(factory, consumer_dag(), now=NOW)
    make_consumer(factory, "consumer", A, [A])
    known_dataset(factory, B)  # a dataset nobody consumes
    waker = PostgresWaker(pg_engine)
    try:
        assert waker.notices() is None  # listening from now on
        emit(factory, B)
        assert waker.wait(0.5) is False
        emit(factory, A)
        assert waker.wait(5) is True
        assert waker.notices() == [f"{DATASET_NOTICE}{A}"]
    finally:
        waker.close()
    with session_scope(factory) as session:
        assert len(session.scalars(select(DatasetEvent)).all()) == 2


def test_queue_rows_a_dataset_run_was_created_from_are_not_used_twice(
        job: SchedulerJob, session_factory: SessionFactory) -> None:
    """A dataset-triggered run already at the queue's logical date was created from these
    rows (as when two creators read them): they are taken, no second run is made."""
    dag = consumer_dag()
    sync_dags(session_factory, dag, now=NOW)
    make_consumer(session_factory, "consumer", A, [A])
    emit(session_factory, A, timestamp=T1)
    with session_scope(session_factory) as session:
        create_dag_run(session, dag, run_type=DagRunType.DATASET_TRIGGERED, logical_date=T1,
                       data_interval=DataInterval(T1, T1), now=NOW)
    assert job.run_once().runs_created == 0
    assert [r.logical_date for r in runs(session_factory, "consumer")] == [T1]
    assert queued(session_factory, "consumer") == {}


@pytest.mark.postgres
def test_a_consumer_another_scheduler_holds_is_skipped_not_waited_for(
        tmp_path: Path, pg_engine: Engine) -> None:
    """PostgreSQL: the step takes the consumer's dag row FOR NO KEY UPDATE SKIP LOCKED, so
    while another transaction holds it the loop neither creates the run nor waits."""
    factory = make_session_factory(pg_engine)
    sync_dags(factory, consumer_dag(), now=NOW)
    make_consumer(factory, "consumer", A, [A])
    emit(factory, A, timestamp=T1)
    job = SchedulerJob(make_settings(tmp_path), factory, FakeExecutor(), clock=Clock())
    result: list[int] = []
    with factory() as holder:
        # as another scheduler's step holds it
        holder.execute(select(DagModel).where(DagModel.dag_id == "consumer")
                       .with_for_update(key_share=True))
        worker = threading.Thread(target=lambda: result.append(job.run_once().runs_created),
                                  daemon=True)
        worker.start()
        worker.join(20)
        assert result == [0], "the loop waited for the locked dag row, or took it"
        holder.rollback()
    assert queued(factory, "consumer") == {A: T1}
    assert job.run_once().runs_created == 1
    assert len(dataset_runs(factory, "consumer")) == 1


def test_consumers_still_waiting_do_not_crowd_out_due_ones(
        session_factory: SessionFactory) -> None:
    """Every queue is evaluated before the (limited) batch of DAGs is locked, as Airflow's
    ``dags_needing_dagruns`` loads every queue row: a DAG waiting for the rest of its
    condition, or at ``max_active_runs``, does not take a due DAG's place."""
    waiting, full, due = (consumer_dag("a_waiting"), consumer_dag("b_full", max_active_runs=1),
                          consumer_dag("c_due"))
    sync_dags(session_factory, waiting, full, due, now=NOW)
    make_consumer(session_factory, "a_waiting", {"all": [A, B]}, [A, B])
    make_consumer(session_factory, "b_full", A, [A])
    make_consumer(session_factory, "c_due", A, [A])
    with session_scope(session_factory) as session:
        create_dag_run(session, full, run_type=DagRunType.MANUAL, logical_date=NOW,
                       data_interval=None, external_trigger=True, now=NOW)
    emit(session_factory, A, timestamp=T1)
    cache = SerializedDagCache()
    with session_scope(session_factory) as session:
        done = create_dataset_triggered_runs(
            session, lambda ids: cache.get_many(session, ids), now=NOW, limit=1)
    assert [dag_id for dag_id, _ in done.created] == ["c_due"]
    assert done.waiting == []  # b_full was left out before the batch was taken
    assert queued(session_factory, "a_waiting") == {A: T1}
    assert queued(session_factory, "b_full") == {A: T1}


def test_a_dag_whose_params_do_not_validate_keeps_its_queue(
        job: SchedulerJob, session_factory: SessionFactory) -> None:
    """A run whose params do not validate is not created (Airflow's scheduler logs and goes
    on to the next DAG); the others get theirs and its datasets stay queued."""
    from squall.sdk.params import Param

    strict = consumer_dag("strict", params={"table": Param(type="string")})
    sync_dags(session_factory, strict, consumer_dag("lenient"), now=NOW)
    make_consumer(session_factory, "strict", A, [A])
    make_consumer(session_factory, "lenient", A, [A])
    emit(session_factory, A, timestamp=T1)
    assert job.run_once().runs_created == 1
    assert runs(session_factory, "strict") == []
    assert len(runs(session_factory, "lenient")) == 1
    assert queued(session_factory, "strict") == {A: T1}
