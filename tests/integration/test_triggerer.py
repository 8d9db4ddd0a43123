"""``squall triggerer`` as users start it (a subprocess), against deferred task instances
and trigger rows written straight into the database (as a deferring worker leaves them).

Airflow's rules asserted: a fired trigger's task instance goes DEFERRED -> SCHEDULED with
the event in ``next_kwargs`` and no ``trigger_id`` (``TriggerEvent.handle_submit``), the
trigger row is deleted once nothing waits on it (``Trigger.clean_unused``), a trigger whose
task instance is no longer deferred is cancelled (``TriggerRunner.update_triggers``) and its
``cleanup()`` runs (``TriggerRunner.run_trigger``'s ``finally``).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, update

from squall.common.db import session_scope
from squall.common.models import Job, TaskInstance, Trigger
from squall.common.state import JobState, TaskInstanceState
from squall.runs.jobs import TRIGGERER_JOB_TYPE
from squall.sdk.triggers import serde
from tests.conftest import _pg_clean
from tests.support.cluster import Cluster
from tests.support.faults import settings_env
from tests.support.services import wait_until
from tests.support.triggers import (
    Deferred,
    FileTrigger,
    SleepTrigger,
    defer,
    read_records,
    record_pids,
)

pytestmark = pytest.mark.integration

FAST = {"triggerer": {"job_heartbeat_sec": 0.5, "triggerer_health_check_threshold": 3}}


@pytest.fixture(params=["postgres", "sqlite"])
def triggerer_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """A cluster (no broker needed) on the session's PostgreSQL database, or on SQLite."""
    if request.param == "postgres":
        engine = request.getfixturevalue("_pg_engine")
        _pg_clean(engine)
        url = engine.url.render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{tmp_path / 'home' / 'squall.db'}"
    cluster = Cluster(home=tmp_path / "home", db_url=url, broker_url="memory://",
                      result_backend="cache+memory://", extra_env=settings_env(FAST))
    if request.param == "sqlite":
        cluster.cli("db", "migrate")
    try:
        yield cluster
    finally:
        cluster.stop_all()


def _states(cluster: Cluster) -> dict[str, TaskInstance]:
    with session_scope(cluster.session_factory) as session:
        return {ti.task_id: ti for ti in session.scalars(select(TaskInstance)).all()}


def _defer(cluster: Cluster, make: Callable[[int], object], n: int) -> list[Deferred]:
    with session_scope(cluster.session_factory) as session:
        return [defer(session, make(i), task_id=f"t{i}") for i in range(n)]  # type: ignore[arg-type]


def _triggers_left(cluster: Cluster) -> int:
    with session_scope(cluster.session_factory) as session:
        return int(session.scalar(select(func.count()).select_from(Trigger)) or 0)


def test_fired_triggers_schedule_their_task_instances_once_with_the_event(
        triggerer_cluster: Cluster) -> None:
    cluster = triggerer_cluster
    record = cluster.home / "records.txt"
    deferred = _defer(cluster, lambda i: SleepTrigger(seconds=0.3 + i * 0.1, tag=f"t{i}",
                                                      record=str(record)), 5)
    proc = cluster.start("triggerer", ["triggerer"])
    wait_until(lambda: all(ti.state == TaskInstanceState.SCHEDULED
                           for ti in _states(cluster).values()), 30,
               message=f"every task instance scheduled:\n{cluster.logs()}")
    tis = _states(cluster)
    for i, d in enumerate(deferred):
        ti = tis[d.task_id]
        assert ti.trigger_id is None and ti.next_method == "execute_complete"
        assert serde.from_json(ti.next_kwargs) == {"event": {"tag": f"t{i}",
                                                             "slept": 0.3 + i * 0.1}}
    wait_until(lambda: _triggers_left(cluster) == 0, 10, message="trigger rows deleted")
    counts = read_records(record)
    for i in range(5):
        assert (counts[("start", f"t{i}")], counts[("fire", f"t{i}")],
                counts[("cleanup", f"t{i}")]) == (1, 1, 1), counts
    # a health check finds it, on its host
    out = cluster.cli("jobs", "check", "--job-type", "triggerer", "--local").stdout
    assert out.strip() == "Found one alive job."
    assert proc.process.poll() is None
    # SIGTERM: a clean stop, the job row ended
    assert cluster.stop(proc, signal.SIGTERM) == 0, cluster.logs()
    with session_scope(cluster.session_factory) as session:
        job = session.scalar(select(Job).where(Job.job_type == TRIGGERER_JOB_TYPE))
    assert job is not None and job.state == JobState.SUCCESS and job.end_date is not None
    assert cluster.cli("jobs", "check", "--job-type", "triggerer",
                       check=False).returncode == 1


def test_a_trigger_whose_task_instance_is_cleared_or_whose_row_goes_is_cancelled(
        triggerer_cluster: Cluster) -> None:
    cluster = triggerer_cluster
    record = cluster.home / "records.txt"
    gate = cluster.home / "gate"
    cleared, kept, dropped = _defer(cluster, lambda i: FileTrigger(
        str(gate), tag=f"t{i}", record=str(record)), 3)
    proc = cluster.start("triggerer", ["triggerer"])
    wait_until(lambda: all(read_records(record)[("start", f"t{i}")] == 1 for i in range(3)),
               30, message=f"the three triggers running:\n{cluster.logs()}")
    with session_scope(cluster.session_factory) as session:
        # as a clear does: the task instance is no longer deferred
        session.execute(update(TaskInstance).where(TaskInstance.task_id == cleared.task_id)
                        .values(state=TaskInstanceState.NONE.value))
        # as another writer may: the task instance lets go of its trigger, the row goes
        session.execute(update(TaskInstance).where(TaskInstance.task_id == dropped.task_id)
                        .values(trigger_id=None, state=TaskInstanceState.NONE.value))
        session.execute(delete(Trigger).where(Trigger.id == dropped.trigger_id))
    wait_until(lambda: read_records(record)[("cleanup", "t0")] == 1
               and read_records(record)[("cleanup", "t2")] == 1, 10,
               message=f"the cleanups:\n{cluster.logs()}")
    assert record_pids(record, "cleanup", "t0") == [proc.process.pid]
    wait_until(lambda: _triggers_left(cluster) == 1, 10, message="their rows deleted")
    gate.touch()
    wait_until(lambda: _states(cluster)[kept.task_id].state == TaskInstanceState.SCHEDULED,
               10, message="the other one fired")
    counts = read_records(record)
    assert (counts[("fire", "t0")], counts[("fire", "t1")], counts[("fire", "t2")]) == (0, 1, 0)
    ti = _states(cluster)[cleared.task_id]
    assert ti.state == TaskInstanceState.NONE and ti.trigger_id is None
    assert "cancelling trigger" in cluster.logs("triggerer", tail=400)


def test_capacity_limits_what_one_triggerer_runs(triggerer_cluster: Cluster) -> None:
    cluster = triggerer_cluster
    record = cluster.home / "records.txt"
    gate = cluster.home / "gate"
    _defer(cluster, lambda i: FileTrigger(str(gate), tag=f"t{i}", record=str(record)), 5)
    cluster.start("triggerer", ["triggerer", "--capacity", "3"])
    wait_until(lambda: sum(n for (kind, _), n in read_records(record).items()
                           if kind == "start") == 3, 30, message=f"3 started:\n{cluster.logs()}")
    gate.touch()
    # as those fire, the room they leave is filled
    wait_until(lambda: all(ti.state == TaskInstanceState.SCHEDULED
                           for ti in _states(cluster).values()), 30,
               message=f"all scheduled:\n{cluster.logs()}")
    assert sum(n for (kind, _), n in read_records(record).items() if kind == "fire") == 5


def test_a_bad_capacity_is_refused(tmp_path: Path) -> None:
    cluster = Cluster(home=tmp_path, db_url=f"sqlite:///{tmp_path / 'squall.db'}",
                      broker_url="memory://", result_backend="cache+memory://")
    proc = cluster.cli("triggerer", "--capacity", "0", check=False)
    assert proc.returncode == 1 and "--capacity 0: must be at least 1" in proc.stderr
