"""The metadata database: migrations, models, constraints and compare-and-set, on SQLite and
PostgreSQL (every test taking ``db_url`` / ``engine`` / ``session_factory`` runs on both)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, delete, func, inspect, select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from squall.common import dbops
from squall.common.db import SessionFactory, make_engine
from squall.common.models import (
    DEFAULT_POOL,
    Base,
    DagFile,
    DagModel,
    DagRun,
    ImportError_,
    Job,
    Pool,
    TaskInstance,
    TaskInstanceKey,
    TaskReschedule,
    XCom,
    compare_and_set_state,
)
from squall.common.state import DagRunState, DagRunType, JobState, TaskInstanceState

pytestmark = pytest.mark.integration

TI = TaskInstanceState
T0 = datetime(2024, 1, 1, tzinfo=UTC)
KEY = TaskInstanceKey("d1", "t1", "r1")


def _seed(session: Session, *, dag_id: str = "d1", run_id: str = "r1",
          logical_date: datetime = T0, task_ids: tuple[str, ...] = ("t1",)) -> None:
    """A DAG (if new), one run of it and its task instances; committed."""
    if session.get(DagModel, dag_id) is None:
        session.add(DagModel(dag_id=dag_id, fileloc=f"/dags/{dag_id}.py"))
        session.flush()
    session.add(DagRun(dag_id=dag_id, run_id=run_id, logical_date=logical_date,
                       run_type=DagRunType.MANUAL))
    session.flush()
    for task_id in task_ids:
        session.add(TaskInstance(dag_id=dag_id, task_id=task_id, run_id=run_id))
    session.commit()


def _ti(factory: SessionFactory, key: TaskInstanceKey = KEY) -> TaskInstance:
    with factory() as s:
        ti = s.get(TaskInstance, (key.dag_id, key.task_id, key.run_id, key.map_index))
        assert ti is not None
        return ti


# --------------------------------------------------------------------------- migrations


def test_migrations_build_the_schema(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
    assert dbops.current_revision(engine) == dbops.head_revision()
    assert dbops.check(engine) == []
    with Session(engine) as s:
        pools = s.scalars(select(Pool)).all()
    assert [(p.pool, p.slots, p.description) for p in pools] == [
        (DEFAULT_POOL, 128, "Default pool")
    ]


def test_head_revision_constant_matches_the_migration_scripts() -> None:
    # HEAD_REVISION spares every command's start-up check an import of Alembic
    assert dbops.head_revision() == dbops.script_head_revision()


def test_no_alembic_or_rich_in_a_long_running_process() -> None:
    code = ("import sys; from squall.cli import main; "
            "print(sorted(m for m in ('alembic', 'mako', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_migrate_empty_database_and_is_idempotent(engine: Engine) -> None:
    dbops.drop_all(engine)
    assert inspect(engine).get_table_names() == []
    assert dbops.current_revision(engine) is None
    problems = dbops.check(engine)
    assert len(problems) == 1 and "not been initialised" in problems[0]

    dbops.migrate(engine)
    dbops.migrate(engine)  # already at head: nothing happens
    assert dbops.check(engine) == []
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Pool)) == 1


def test_downgrade_to_base_and_up_again(engine: Engine) -> None:
    with engine.begin() as conn:
        command.downgrade(dbops.alembic_config(connection=conn), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    assert dbops.current_revision(engine) is None
    dbops.migrate(engine)
    assert dbops.check(engine) == []


def test_migration_0008_adds_dag_file_to_a_0007_database_and_drops_it(engine: Engine) -> None:
    with engine.begin() as conn:
        command.downgrade(dbops.alembic_config(connection=conn), "0007")
    assert "dag_file" not in inspect(engine).get_table_names()
    assert "sla_miss" in inspect(engine).get_table_names()
    assert dbops.current_revision(engine) == "0007"
    with engine.begin() as conn:
        command.upgrade(dbops.alembic_config(connection=conn), "0008")
    assert dbops.current_revision(engine) == "0008"
    dbops.migrate(engine)
    assert dbops.check(engine) == []
    with Session(engine) as s:
        s.add(DagFile(fileloc="/dags/a.py", last_parsed_at=T0, last_duration=0.5,
                      dag_ids=["a", "b"], task_count=3, has_import_error=False,
                      fingerprint="f"))
        s.commit()
    with Session(engine) as s:
        row = s.get_one(DagFile, "/dags/a.py")
        assert (row.last_parsed_at, row.dag_ids, row.task_count) == (T0, ["a", "b"], 3)


def test_migration_0009_keeps_task_instances_xcoms_and_reschedules_as_map_index_minus_one(
        engine: Engine) -> None:
    """Rows written before mapping existed are the unmapped instances (Airflow's -1)."""
    with engine.begin() as conn:
        command.downgrade(dbops.alembic_config(connection=conn), "0008")
    with Session(engine) as s:
        s.add(DagModel(dag_id="d", fileloc="/dags/d.py"))
        s.flush()
        s.add(DagRun(dag_id="d", run_id="r", logical_date=T0, run_type=DagRunType.MANUAL))
        s.commit()
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO task_instance (dag_id, task_id, run_id, try_number, max_tries, state, "
            "pool, pool_slots, queue, priority_weight) VALUES "
            "('d', 't', 'r', 1, 0, 'up_for_reschedule', 'default_pool', 1, 'default', 1)"))
        conn.execute(text(
            "INSERT INTO xcom (dag_id, run_id, task_id, key, value, timestamp) VALUES "
            "('d', 'r', 't', 'return_value', '1', :t)"), {"t": T0})
        conn.execute(text(
            "INSERT INTO task_reschedule (dag_id, task_id, run_id, try_number, start_date, "
            "end_date, duration, reschedule_date) VALUES ('d', 't', 'r', 1, :t, :t, 0, :t)"),
            {"t": T0})
    dbops.migrate(engine)
    assert dbops.check(engine) == []
    with engine.connect() as conn:
        for table in ("task_instance", "xcom", "task_reschedule"):
            assert conn.execute(text(f"SELECT map_index FROM {table}")).scalars().all() == [-1]
    with Session(engine) as s:
        s.add(TaskInstance(dag_id="d", task_id="t", run_id="r", map_index=0, state="none"))
        s.commit()
        assert s.get_one(TaskInstance, ("d", "t", "r", 0)).key == TaskInstanceKey(
            "d", "t", "r", 0)


def test_migration_and_models_do_not_drift(engine: Engine) -> None:
    assert dbops.check(engine) == []
    with engine.connect() as conn:
        assert dbops.schema_diff(conn) == []


def test_check_reports_schema_differences(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_dag_run_state"))
    problems = dbops.check(engine)
    assert len(problems) == 1
    assert "ix_dag_run_state" in problems[0] and "not in the database" in problems[0]


def test_check_reports_wrong_revision(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'abc123'"))
    problems = dbops.check(engine)
    assert len(problems) == 1 and "revision abc123" in problems[0]


def test_check_reports_unreachable_database(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    try:
        problems = dbops.check(engine)
    finally:
        engine.dispose()
    assert len(problems) == 1 and problems[0].startswith("cannot connect to the database")


def test_reset_drops_data_and_rebuilds(engine: Engine, session_factory: SessionFactory) -> None:
    with session_factory() as s:
        _seed(s)
        s.get_one(Pool, 1).slots = 3
        s.commit()
    dbops.reset(engine)
    assert dbops.check(engine) == []
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(DagModel)) == 0
        assert s.scalar(select(func.count()).select_from(TaskInstance)) == 0
        assert s.scalars(select(Pool.slots)).all() == [128]


def test_ensure_default_pool(session: Session) -> None:
    assert dbops.ensure_default_pool(session, slots=5).slots == 128  # existing one is kept
    session.execute(delete(Pool))
    pool = dbops.ensure_default_pool(session, slots=5)
    session.commit()
    assert (pool.pool, pool.slots, pool.description) == (DEFAULT_POOL, 5, "Default pool")


# --------------------------------------------------------------------------- round trips


def test_round_trip(session_factory: SessionFactory) -> None:
    with session_factory() as s:
        s.add(DagModel(dag_id="d1", fileloc="/dags/d1.py", tags=["a", "b"],
                       params={"x": 1, "nested": {"y": [1, 2]}}, next_dagrun=T0))
        s.flush()
        s.add(DagRun(dag_id="d1", run_id="r1", logical_date=T0, conf={"k": "v"},
                     data_interval_start=T0, data_interval_end=T0 + timedelta(days=1)))
        s.flush()
        s.add(TaskInstance(dag_id="d1", task_id="t1", run_id="r1",
                           executor_config={"queue": "q"}, duration=1.5))
        s.flush()
        s.add(XCom(dag_id="d1", run_id="r1", task_id="t1", key="return_value", value="42"))
        s.add(TaskReschedule(dag_id="d1", task_id="t1", run_id="r1", try_number=1,
                             start_date=T0, end_date=T0, duration=0.0,
                             reschedule_date=T0 + timedelta(minutes=5)))
        s.add(Job(job_type="SchedulerJob", hostname="h", pid=1))
        s.add(ImportError_(filename="/dags/bad.py", stacktrace="SyntaxError"))
        s.commit()

    with session_factory() as s:
        dag = s.get_one(DagModel, "d1")
        assert (dag.is_paused, dag.is_active, dag.max_active_tasks) == (False, True, 16)
        assert dag.tags == ["a", "b"] and dag.params == {"x": 1, "nested": {"y": [1, 2]}}
        assert dag.next_dagrun == T0
        run = s.scalars(select(DagRun)).one()
        assert (run.state, run.run_type, run.conf) == (DagRunState.QUEUED, "manual", {"k": "v"})
        assert run.data_interval_end == T0 + timedelta(days=1)
        assert run.queued_at is not None and run.queued_at.tzinfo is UTC
        ti = s.get_one(TaskInstance, ("d1", "t1", "r1", -1))
        assert (ti.state, ti.try_number, ti.pool, ti.queue) == ("none", 0, DEFAULT_POOL,
                                                                "default")
        assert ti.executor_config == {"queue": "q"} and ti.duration == 1.5
        assert ti.key == KEY
        assert s.get_one(XCom, ("d1", "r1", "t1", -1, "return_value")).value == "42"
        assert s.scalars(select(TaskReschedule)).one().reschedule_date == T0 + timedelta(
            minutes=5)
        job = s.scalars(select(Job)).one()
        assert job.state == JobState.RUNNING and job.latest_heartbeat is not None
        assert s.scalars(select(ImportError_)).one().timestamp.tzinfo is UTC


def test_utc_datetime_round_trip(session_factory: SessionFactory) -> None:
    plus_two = timezone(timedelta(hours=2))
    local = datetime(2024, 6, 1, 12, 30, 15, 123456, tzinfo=plus_two)
    with session_factory() as s:
        _seed(s, logical_date=local)
    with session_factory() as s:
        run = s.scalars(select(DagRun)).one()
        assert run.logical_date == local
        assert run.logical_date.tzinfo is UTC
        assert run.logical_date.hour == 10
        # stored as UTC, not as the local wall time
        raw = s.execute(text("SELECT logical_date FROM dag_run")).scalar_one()
        if isinstance(raw, str):  # SQLite: naive UTC text
            assert raw.startswith("2024-06-01 10:30:15.123456")
        else:
            assert raw == local
        # comparisons in SQL work on the instant
        found = s.scalars(select(DagRun.run_id).where(
            DagRun.logical_date == datetime(2024, 6, 1, 10, 30, 15, 123456, tzinfo=UTC))).all()
        assert found == ["r1"]


def test_utc_datetime_rejects_naive(session: Session) -> None:
    session.add(DagModel(dag_id="d1", fileloc="/f.py", next_dagrun=datetime(2024, 1, 1)))
    with pytest.raises(StatementError, match="naive datetime") as info:
        session.flush()
    assert isinstance(info.value.orig, ValueError)
    session.rollback()


# --------------------------------------------------------------------------- constraints


def test_dag_run_unique_run_id(session: Session) -> None:
    _seed(session)
    session.add(DagRun(dag_id="d1", run_id="r1", logical_date=T0 + timedelta(days=1)))
    with pytest.raises(IntegrityError):
        session.flush()
    session.rollback()


def test_dag_run_unique_logical_date(session: Session) -> None:
    _seed(session)
    session.add(DagRun(dag_id="d1", run_id="r2", logical_date=T0))
    with pytest.raises(IntegrityError):
        session.flush()
    session.rollback()


def test_dag_run_same_ids_in_other_dag(session: Session) -> None:
    _seed(session)
    _seed(session, dag_id="d2")
    assert session.scalar(select(func.count()).select_from(DagRun)) == 2


def test_dag_run_needs_its_dag(session: Session) -> None:
    session.add(DagRun(dag_id="nope", run_id="r1", logical_date=T0))
    with pytest.raises(IntegrityError):
        session.flush()
    session.rollback()


def test_slot_pool_unique_name(session: Session) -> None:
    session.add(Pool(pool=DEFAULT_POOL, slots=1))
    with pytest.raises(IntegrityError):
        session.flush()
    session.rollback()


def test_delete_dag_run_cascades(session_factory: SessionFactory) -> None:
    with session_factory() as s:
        _seed(s, task_ids=("t1", "t2"))
        _seed(s, run_id="r2", logical_date=T0 + timedelta(days=1), task_ids=("t1",))
        s.add(XCom(dag_id="d1", run_id="r1", task_id="t1", key="k", value="1"))
        s.add(TaskReschedule(dag_id="d1", task_id="t1", run_id="r1", try_number=1,
                             start_date=T0, end_date=T0, duration=0.0, reschedule_date=T0))
        s.commit()
    with session_factory() as s:
        s.execute(delete(DagRun).where(DagRun.run_id == "r1"))
        s.commit()
    with session_factory() as s:
        assert s.scalars(select(TaskInstance.run_id)).all() == ["r2"]
        assert s.scalar(select(func.count()).select_from(XCom)) == 0
        assert s.scalar(select(func.count()).select_from(TaskReschedule)) == 0
    with session_factory() as s:
        s.execute(delete(DagModel).where(DagModel.dag_id == "d1"))
        s.commit()
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(DagRun)) == 0
        assert s.scalar(select(func.count()).select_from(TaskInstance)) == 0


# --------------------------------------------------------------------------- compare-and-set


def test_compare_and_set_state(session_factory: SessionFactory) -> None:
    with session_factory() as s:
        _seed(s)
        s.get_one(TaskInstance, ("d1", "t1", "r1", -1)).try_number = 1
        s.commit()

    def cas(**kw: object) -> bool:
        with session_factory() as s:
            won = compare_and_set_state(s, KEY, **kw)  # type: ignore[arg-type]
            s.commit()
            return won

    # wrong state, wrong try number: no change
    assert not cas(expected=TI.SCHEDULED, try_number=1, new_state=TI.QUEUED)
    assert not cas(expected=TI.NONE, try_number=2, new_state=TI.QUEUED)
    assert _ti(session_factory).state == TI.NONE

    # wins once, with extra values
    assert cas(expected=TI.NONE, try_number=1, new_state=TI.QUEUED, queue="q1")
    assert not cas(expected=TI.NONE, try_number=1, new_state=TI.QUEUED)
    ti = _ti(session_factory)
    assert (ti.state, ti.queue) == (TI.QUEUED, "q1")
    assert ti.updated_at is not None

    # the CAS can set external_executor_id like any other value ...
    assert cas(expected=TI.QUEUED, try_number=1, new_state=TI.QUEUED,
               external_executor_id="celery-1")
    assert _ti(session_factory).external_executor_id == "celery-1"

    # ... and it must match when expected_external_executor_id is given
    assert not cas(expected=TI.QUEUED, try_number=1, new_state=TI.RUNNING,
                   expected_external_executor_id="celery-2")
    assert cas(expected=TI.QUEUED, try_number=1, new_state=TI.RUNNING,
               expected_external_executor_id="celery-1", hostname="w1", pid=42)
    ti = _ti(session_factory)
    assert (ti.state, ti.hostname, ti.pid) == (TI.RUNNING, "w1", 42)

    # a set of expected states; try_number=None does not check the try
    assert not cas(expected=frozenset({TI.QUEUED, TI.SCHEDULED}), try_number=None,
                   new_state=TI.FAILED)
    assert cas(expected=frozenset({TI.QUEUED, TI.RUNNING}), try_number=None,
               new_state=TI.SUCCESS)
    assert _ti(session_factory).state == TI.SUCCESS


def test_compare_and_set_other_instances_untouched(session_factory: SessionFactory) -> None:
    with session_factory() as s:
        _seed(s, task_ids=("t1", "t2"))
        assert compare_and_set_state(s, KEY, expected=TI.NONE, try_number=0,
                                     new_state=TI.SCHEDULED)
        s.commit()
    assert _ti(session_factory, TaskInstanceKey("d1", "t2", "r1")).state == TI.NONE


def test_compare_and_set_concurrent(session_factory: SessionFactory) -> None:
    """Two sessions race for the same row: exactly one wins, every time."""
    rounds = 5
    hold = 0.1
    with session_factory() as s:
        _seed(s, task_ids=tuple(f"t{i}" for i in range(rounds)))

    loser_waits: list[float] = []
    for i in range(rounds):
        key = TaskInstanceKey("d1", f"t{i}", "r1")
        barrier = threading.Barrier(2, timeout=30)

        def contend(worker: str, key: TaskInstanceKey = key,
                    barrier: threading.Barrier = barrier) -> tuple[bool, float]:
            with session_factory() as s:
                barrier.wait()
                started = time.monotonic()
                won = compare_and_set_state(s, key, expected=TI.NONE, try_number=0,
                                            new_state=TI.QUEUED, hostname=worker)
                took = time.monotonic() - started
                time.sleep(hold)  # keep the row locked: the other one has to wait for us
                s.commit()
                return won, took

        with ThreadPoolExecutor(max_workers=2) as pool:
            outcomes = list(pool.map(contend, ["a", "b"]))
        results = [won for won, _ in outcomes]
        assert sorted(results) == [False, True], outcomes
        loser_waits.extend(took for won, took in outcomes if not won)
        ti = _ti(session_factory, key)
        assert ti.state == TI.QUEUED
        assert ti.hostname == ["a", "b"][results.index(True)]
    # the race really happened: a loser was blocked by the winner's lock, then lost
    assert max(loser_waits) >= hold / 2, loser_waits
