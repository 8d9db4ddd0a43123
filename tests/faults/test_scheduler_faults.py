"""The scheduler SIGKILLed at each point of queueing a try, then restarted (Redis +
PostgreSQL).

The points, and how each is hit:

``before_queued_commit``
    The test holds ``SELECT ... FROM slot_pool FOR UPDATE`` in a transaction of its own, so
    the scheduler blocks inside the critical section (ADR 5 locks the pool rows first) with
    its SCHEDULED -> QUEUED update not committed; the test sees the scheduler's backend
    waiting on that lock in ``pg_stat_activity`` and kills it there.
``after_queued_commit``
    The scheduler's broker URL goes through a :class:`TcpProxy` that the test has cut (a
    black hole): the QUEUED update commits, the publish cannot complete; the test kills the
    scheduler once every task instance is QUEUED in the database and no message is on the
    Redis queue.
``after_publish``
    No worker runs yet; the test kills the scheduler once every task instance is QUEUED and
    every message is on the Redis queue (the scheduler has not processed any event of them).

When the scheduler has a fault hook (``SQUALL_FAULT_INJECT=<point>`` makes it ``os._exit``
at that point), the hook is used instead.

Then a worker starts and the scheduler is restarted: every task instance must run exactly
once, and the run must finish within the queued timeout plus a margin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.faults.conftest import FAST, start_with_env, trigger, write_dag
from tests.faults.helpers import assert_each_task_once, sigkill_group, wait_for_states
from tests.support.cluster import REPO_ROOT, Cluster, Proc
from tests.support.faults import TcpProxy
from tests.support.services import free_port, wait_until

pytestmark = pytest.mark.integration

POINTS = ["before_queued_commit", "after_queued_commit", "after_publish"]
QUEUED_TIMEOUT = float(FAST["scheduler"]["task_queued_timeout"])  # type: ignore[arg-type]
WIDTH = 3


def fault_hook_exists() -> bool:
    sources = [REPO_ROOT / "squall" / "scheduler" / name for name in ("job.py", "executor.py")]
    return any("SQUALL_FAULT_INJECT" in p.read_text() for p in sources if p.exists())


@contextmanager
def pool_rows_locked(db_url: str) -> Iterator[None]:
    engine = create_engine(db_url, poolclass=NullPool)
    conn = engine.connect()
    try:
        conn.execute(text("SELECT * FROM slot_pool FOR UPDATE"))
        yield
    finally:
        conn.rollback()
        conn.close()
        engine.dispose()


def waiting_on_lock(db_url: str) -> bool:
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return bool(conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()")).scalar())
    finally:
        engine.dispose()


def queue_length(broker_url: str, queue: str = "default") -> int:
    client = redis.Redis.from_url(broker_url)
    try:
        return int(client.llen(queue))
    finally:
        client.close()


def kill_at(point: str, cluster: Cluster, run_dag: Callable[[], str]) -> str:
    """Start the scheduler, trigger the run, SIGKILL the scheduler at ``point``; run id."""
    if fault_hook_exists():
        scheduler = start_with_env(cluster, cluster.start_scheduler,
                                   SQUALL_FAULT_INJECT=point)
        scheduler.stopped = True
        run_id = run_dag()
        scheduler.process.wait(30)
        sigkill_group(cluster, scheduler)  # the DAG processor child, if it outlived it
        return run_id
    if point == "before_queued_commit":
        with pool_rows_locked(cluster.db_url):
            scheduler = cluster.start_scheduler()
            run_id = run_dag()
            wait_for_states(cluster, "sched", run_id, {"scheduled"}, WIDTH)
            wait_until(lambda: waiting_on_lock(cluster.db_url), 15,
                       message="the scheduler to wait on the pool rows")
            sigkill_group(cluster, scheduler)
        assert all(s == "scheduled" for s, _ in states(cluster, run_id).values())
        return run_id
    if point == "after_queued_commit":
        proxy = TcpProxy(free_port(), ("127.0.0.1", int(cluster.broker_url.split(":")[2]
                                                         .split("/")[0])))
        try:
            proxy.cut()
            scheduler = start_with_env(
                cluster, cluster.start_scheduler,
                SQUALL__CELERY__BROKER_URL=f"redis://{proxy.url_host_port}/0")
            run_id = run_dag()
            wait_for_states(cluster, "sched", run_id, {"queued"}, WIDTH, timeout=20)
            sigkill_group(cluster, scheduler)
        finally:
            proxy.close()
        assert queue_length(cluster.broker_url) == 0
        assert all(s == "queued" for s, _ in states(cluster, run_id).values())
        return run_id
    scheduler = cluster.start_scheduler()
    run_id = run_dag()
    wait_until(lambda: queue_length(cluster.broker_url) >= WIDTH, 20,
               message="every message to be on the Redis queue")
    sigkill_group(cluster, scheduler)
    assert all(s == "queued" for s, _ in states(cluster, run_id).values())
    return run_id


def states(cluster: Cluster, run_id: str) -> dict[str, tuple[str, int]]:
    return {t: (ti.state, ti.try_number)
            for t, ti in cluster.task_instances("sched", run_id).items()}


@pytest.mark.parametrize("point", POINTS)
def test_scheduler_sigkilled_then_restarted_runs_each_task_once(
        point: str, cluster_factory: Callable[..., Cluster], tmp_path: Path) -> None:
    """Fault: SIGKILL to the scheduler (and its DAG processor) at ``point`` (see the module
    docstring), then a worker starts and a new scheduler. Every task instance succeeds, each
    try executed once, within the queued timeout plus a margin."""
    cluster = cluster_factory("redis-pg")
    exec_log = write_dag(cluster, "sched", width=WIDTH, retries=1)
    if point != "after_publish":
        # nothing reaches it before the kill; booting it now saves seconds
        cluster.start_worker(concurrency=WIDTH, wait=False)
    run_id = kill_at(point, cluster, lambda: trigger(cluster, "sched"))
    if point == "after_publish":
        cluster.start_worker(concurrency=WIDTH, wait=False)
    restarted: Proc = cluster.start_scheduler("scheduler2")
    assert restarted.process.poll() is None
    # a stranded QUEUED try is only recovered by the queued timeout / adoption
    assert cluster.wait_for_run("sched", run_id, timeout=QUEUED_TIMEOUT + 15) == "success", (
        cluster.logs())
    assert_each_task_once(cluster, exec_log, "sched", run_id)
