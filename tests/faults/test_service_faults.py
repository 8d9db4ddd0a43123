"""Faults of the services: the broker redelivers, stops, the metadata database restarts.

Each service that is stopped or restarted is a private instance the test (or this session)
started itself: never the machine's shared servers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.conftest import fast_stop_all, new_cluster, trigger, write_dag
from tests.faults.helpers import assert_each_try_once, wait_for_execution
from tests.support.cluster import Cluster, Proc
from tests.support.faults import (
    PersistentRedisServer,
    PrivatePostgres,
    StatsdListener,
    execution_counts,
)
from tests.support.services import RedisServer, wait_until

pytestmark = pytest.mark.integration


def restore_expired_unacked(broker_url: str, visibility_timeout: float) -> None:
    """Run kombu's Redis sweep once: messages unacknowledged for longer than
    ``visibility_timeout`` go back on their queue. Workers run it themselves only every
    ``unacked_restore_interval * unacked_restore_throttle`` (10 * 10 s by default), too
    rarely for a bounded test; the redelivery is the same."""
    from kombu import Connection

    with Connection(broker_url,
                    transport_options={"visibility_timeout": visibility_timeout}) as conn:
        conn.default_channel.qos.restore_visible(num=100, interval=1)


def test_redelivered_message_after_visibility_timeout_is_refused(
        cluster_factory: Callable[..., Cluster]) -> None:
    """Fault: Redis ``visibility_timeout`` of 2 s and a try that runs 8 s: the still
    unacknowledged message is put back on the queue while the try runs (kombu's sweep, run by
    the test) and the worker, which has a free pool slot, receives it again. The duplicate
    must be refused (the QUEUED -> RUNNING compare-and-set fails): the try executes once,
    ends success, and its log holds one execution, finished."""
    cluster = cluster_factory("redis-pg", {"celery": {"visibility_timeout": 2}})
    exec_log = write_dag(cluster, "slow", sleep_first=8, retries=1)
    cluster.start_scheduler()
    worker = cluster.start_worker(concurrency=2, wait=False)
    run_id = trigger(cluster, "slow")
    wait_for_execution(cluster, exec_log, "t0", 1)
    celery_id = cluster.task_instances("slow", run_id)["t0"].external_executor_id
    assert celery_id

    def redelivered() -> bool:
        text = worker.log_path.read_text(errors="replace")
        if len(re.findall(rf"Celery task {celery_id}: TaskInstance .* received", text)) >= 2:
            return True
        restore_expired_unacked(cluster.broker_url, 2)
        return False

    wait_until(redelivered, 15, interval=0.5, message="the message to be redelivered")
    assert cluster.wait_for_run("slow", run_id, timeout=20) == "success", cluster.logs()
    ti = cluster.task_instances("slow", run_id)["t0"]
    assert (ti.state, ti.try_number) == ("success", 1), ti.state_reason
    assert execution_counts(exec_log) == {("t0", 1): 1}
    log = cluster.cli("tasks", "logs", "slow", "t0", run_id, "--try", "1").stdout
    assert log.count("executing t0 try 1") == 1, log
    assert log.count("done t0 try 1") == 1, log


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = PersistentRedisServer(workdir=tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def test_broker_stopped_during_publish_burst_then_restarted(
        persistent_redis: RedisServer, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Fault: the broker (a private redis-server with an append-only file, so a restart
    keeps its data) is stopped while the scheduler publishes a burst: run A's 12 tasks are
    being queued when it stops, run B (12 more) is triggered while it is down. Publishes time
    out, are retried, and go back to SCHEDULED; the broker comes back; every task instance of
    both runs succeeds, each try executed once; the failed publishes are counted in StatsD
    (``celery.publish_failed``). ``visibility_timeout`` is 5 s so a message a worker had
    prefetched when its connection broke is redelivered within the test."""
    from tests.conftest import _pg_clean

    engine = request.getfixturevalue("_pg_engine")
    _pg_clean(engine)
    statsd = StatsdListener()
    cluster = new_cluster(tmp_path / "home", engine.url.render_as_string(hide_password=False),
                          persistent_redis.db_url(0), persistent_redis.db_url(1),
                          {"celery": {"visibility_timeout": 5},
                           "metrics": {"statsd_on": True, "statsd_host": "127.0.0.1",
                                       "statsd_port": statsd.port}})
    try:
        exec_log = write_dag(cluster, "burst", width=12, retries=1)
        scheduler = cluster.start_scheduler()
        cluster.start_worker(concurrency=4, wait=False)
        run_a = trigger(cluster, "burst", "a")

        def any_queued(run_id: str) -> bool:
            return any(ti.state in ("queued", "running", "success") for ti in
                       cluster.task_instances("burst", run_id).values())

        wait_until(lambda: any_queued(run_a), 30, interval=0.01,
                   message="run a's burst to start")
        persistent_redis.stop()
        run_b = trigger(cluster, "burst", "b")
        wait_until(lambda: "not published" in scheduler.log_path.read_text(errors="replace"),
                   30, message="the scheduler to give up a publish while the broker is down")
        persistent_redis.start()
        for run_id in (run_a, run_b):
            assert cluster.wait_for_run("burst", run_id, timeout=60) == "success", (
                cluster.logs())
            assert_each_try_once(cluster, exec_log, "burst", run_id)
        wait_until(lambda: statsd.count("squall.celery.publish_failed") >= 1, 10,
                   message="the celery.publish_failed metric")
    finally:
        fast_stop_all(cluster)
        statsd.close()


def _private_pg_cluster(private_pg: PrivatePostgres, redis_server: RedisServer,
                        tmp_path: Path, database: str,
                        overrides: dict[str, dict[str, object]] | None = None) -> Cluster:
    """A cluster on a new database of the private PostgreSQL and the flushed private Redis."""
    redis_server.flushall()
    return new_cluster(tmp_path / "home", private_pg.create_database(database),
                       redis_server.db_url(0), redis_server.db_url(1), overrides)


def _postgres_down_until(private_pg: PrivatePostgres, worker: Proc, line: str, timeout: float,
                         message: str) -> None:
    """Stop the private PostgreSQL until the worker logs ``line``, then start it again."""
    private_pg.stop("fast")
    try:
        wait_until(lambda: line in worker.log_path.read_text(errors="replace"), timeout,
                   message=message)
    finally:
        private_pg.start()


def test_postgres_restarted_during_a_run(private_pg: PrivatePostgres,
                                         redis_server: RedisServer, tmp_path: Path) -> None:
    """Fault: the metadata database (a private PostgreSQL cluster) is stopped while a task
    runs -- the worker's heartbeat fails -- and started again. Scheduler and worker
    reconnect; the 3-task chain completes; each task executed once, in its first try; the
    scheduler logs the outage once. The outage is shorter than the supervisor's heartbeat
    lease (ADR 17): with the suite's 3 s zombie_threshold the lease is 1.75 s, about as long
    as a stop and start of PostgreSQL, so the threshold is 20 s (lease 16.75 s) here."""
    cluster = _private_pg_cluster(private_pg, redis_server, tmp_path, "faults_pg_restart",
                                  {"scheduler": {"zombie_threshold": 20}})
    try:
        exec_log = write_dag(cluster, "chain", width=3, sleep_first=3, chain=True, retries=0)
        cluster.cli("db", "migrate")
        cluster.start_scheduler()
        worker = cluster.start_worker(concurrency=2, wait=False)
        run_id = trigger(cluster, "chain")
        wait_for_execution(cluster, exec_log, "t1", 1)
        _postgres_down_until(private_pg, worker, "heartbeat of job", 10,
                             "the worker's heartbeat to fail")
        assert cluster.wait_for_run("chain", run_id, timeout=40) == "success", cluster.logs()
        assert_each_try_once(cluster, exec_log, "chain", run_id)
        assert [ti.try_number for ti in cluster.task_instances("chain", run_id).values()] == [
            1, 1, 1]
        # the outage is logged once by the scheduler, not once per loop
        log = cluster.logs("scheduler", tail=100000)
        assert log.count("scheduler: database unreachable") == 1, log
    finally:
        fast_stop_all(cluster)


def test_outcome_written_once_the_database_is_back(private_pg: PrivatePostgres,
                                                  redis_server: RedisServer,
                                                  tmp_path: Path) -> None:
    """Fault: the metadata database is down when a task ends. The supervisor keeps the
    outcome its task process sent and writes it once the database is back: the try
    succeeds, in its first try, executed once (no zombie: the threshold is long here)."""
    cluster = _private_pg_cluster(private_pg, redis_server, tmp_path, "faults_outcome_pending",
                                  {"scheduler": {"zombie_threshold": 120}})
    try:
        exec_log = write_dag(cluster, "pending", width=1, sleep_first=2, retries=0)
        cluster.cli("db", "migrate")
        cluster.start_scheduler()
        worker = cluster.start_worker(concurrency=1, wait=False)
        run_id = trigger(cluster, "pending")
        wait_for_execution(cluster, exec_log, "t0", 1)
        _postgres_down_until(private_pg, worker, "outcome is not written yet", 20,
                             "the supervisor to hold the outcome")
        assert cluster.wait_for_run("pending", run_id, timeout=40) == "success", cluster.logs()
        assert_each_try_once(cluster, exec_log, "pending", run_id)
        assert cluster.task_instances("pending", run_id)["t0"].try_number == 1
        assert "database reachable again" in worker.log_path.read_text(errors="replace")
    finally:
        fast_stop_all(cluster)
