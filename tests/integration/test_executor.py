"""CeleryExecutor against a private redis-server as broker and result backend.

Publishing is checked on the broker itself (the Redis lists kombu keeps per queue); a dead
and a hung broker (the server stopped, or frozen with SIGSTOP) must cost a bounded time and
report the tasks as not published. Syncing reads results stored through the backend's own
API; no worker is needed.
"""

from __future__ import annotations

import base64
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery, states

from squall.common.celery_app import RUN_TASK_NAME, celery_config
from squall.common.models import TaskInstanceKey
from squall.common.payload import TaskRunCommand
from squall.common.settings import Settings
from squall.scheduler.executor import (
    CeleryExecutor,
    EventKind,
    ExecutorEvent,
    QueuedTask,
    backoff,
    default_sync_parallelism,
)
from squall.scheduler.state_fetcher import BulkStateFetcher
from tests.support.services import RedisServer, wait_until

pytestmark = pytest.mark.integration

BROKER_DB, RESULTS_DB = 2, 3


def make_settings(home: Path, server: RedisServer, **celery: Any) -> Settings:
    return Settings.load(env={"SQUALL_HOME": str(home)}, overrides={"celery": {
        "broker_url": server.db_url(BROKER_DB), "result_backend": server.db_url(RESULTS_DB),
        **celery}})


def make_app(settings: Settings) -> Celery:
    app = Celery("executor-test", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


#: the operation timeout of the tests that measure how long a dead or hung broker costs
TIGHT_TIMEOUT = 0.5


@pytest.fixture
def operation_timeout() -> float:
    """Long, so a send slowed by a busy machine (the first one of a process also imports the
    transport) is not retried and every attempt count is exact. The tests that measure a
    dead or hung broker's cost set :data:`TIGHT_TIMEOUT` (``tight``)."""
    return 10.0


tight = pytest.mark.parametrize("operation_timeout", [TIGHT_TIMEOUT])


@pytest.fixture
def settings(tmp_path: Path, redis_server: RedisServer, operation_timeout: float) -> Settings:
    redis_server.flushall()
    return make_settings(tmp_path, redis_server, operation_timeout=operation_timeout,
                         task_publish_max_retries=2, sync_parallelism=4)


@pytest.fixture
def app(settings: Settings) -> Iterator[Celery]:
    app = make_app(settings)
    yield app
    app.close()


@pytest.fixture
def executor(app: Celery, settings: Settings) -> Iterator[CeleryExecutor]:
    executor = CeleryExecutor.from_settings(app, settings)
    yield executor
    executor.end()


@pytest.fixture
def broker(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.db_url(BROKER_DB))
    yield client
    client.close()


def queued(n: int, queue: str = "default", run_id: str = "manual__1") -> QueuedTask:
    key = TaskInstanceKey("etl", f"task_{n}", run_id)
    command = TaskRunCommand(dag_id=key.dag_id, task_id=key.task_id, run_id=key.run_id,
                             try_number=1, dag_file="DAGS_FOLDER/etl.py", queue=queue)
    return QueuedTask(key, 1, f"celery-{run_id}-{n}", command)


def queue_messages(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in client.lrange(queue, 0, -1)]


def test_publish_puts_each_command_on_its_queue(
        executor: CeleryExecutor, broker: redis.Redis) -> None:
    tasks = [queued(1, "etl_a"), queued(2, "etl_b"), queued(3, "etl_a")]
    outcomes = executor.publish(tasks)

    assert [(o.task, o.ok, o.attempts, o.error) for o in outcomes] == [
        (t, True, 1, None) for t in tasks]
    assert broker.llen("etl_a") == 2 and broker.llen("etl_b") == 1
    by_id = {}
    for queue in ("etl_a", "etl_b"):
        for message in queue_messages(broker, queue):
            assert message["headers"]["task"] == RUN_TASK_NAME
            assert message["content-type"] == "application/json"
            assert message["properties"]["body_encoding"] == "base64"
            args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
            by_id[message["headers"]["id"]] = (queue, args, kwargs)
    assert by_id == {t.external_executor_id: (t.command.queue, [t.command.to_message()], {})
                     for t in tasks}

    assert executor.running == {t.external_executor_id: (t.key, 1) for t in tasks}
    assert executor.get_event_buffer() == [
        ExecutorEvent(t.key, 1, t.external_executor_id, EventKind.QUEUED, None) for t in tasks]
    assert executor.get_event_buffer() == []
    assert (executor.publish_timeouts, executor.publish_failures) == (0, 0)


def test_parallel_publish_of_200_tasks(executor: CeleryExecutor, broker: redis.Redis) -> None:
    tasks = [queued(n, run_id="bulk") for n in range(200)]
    started = time.monotonic()
    outcomes = executor.publish(tasks)
    elapsed = time.monotonic() - started

    assert all(o.ok and o.attempts == 1 for o in outcomes), [o for o in outcomes if not o.ok]
    assert [o.task for o in outcomes] == tasks
    ids = [m["headers"]["id"] for m in queue_messages(broker, "default")]
    assert sorted(ids) == sorted(t.external_executor_id for t in tasks)
    assert len(executor.running) == 200
    assert len(executor.get_event_buffer()) == 200
    assert elapsed < 20, f"200 sends took {elapsed:.1f} s"


@tight
def test_broker_down_fails_in_bounded_time(
        executor: CeleryExecutor, redis_server: RedisServer, broker: redis.Redis) -> None:
    # a first publish, so the producer pool holds connections that are about to go stale
    assert executor.publish([queued(0)])[0].ok
    executor.get_event_buffer()
    tasks = [queued(n, run_id="down") for n in range(1, 6)]
    redis_server.stop()
    try:
        started = time.monotonic()
        outcomes = executor.publish(tasks)
        elapsed = time.monotonic() - started
    finally:
        redis_server.start()

    bound = 3 * TIGHT_TIMEOUT + backoff(1) + backoff(2) + TIGHT_TIMEOUT
    assert elapsed <= bound + 0.5, f"publish took {elapsed:.2f} s, bound {bound:.2f} s"
    assert [(o.task, o.ok, o.attempts) for o in outcomes] == [(t, False, 3) for t in tasks]
    assert all(o.error for o in outcomes)
    assert executor.publish_failures == 5
    assert set(executor.running) == {queued(0).external_executor_id}
    assert executor.get_event_buffer() == []

    # the broker is back: the same executor publishes again
    assert all(o.ok for o in executor.publish(tasks[:2]))
    assert broker.llen("default") == 2  # the server restarted empty


@tight
def test_hung_broker_times_out_in_bounded_time(
        executor: CeleryExecutor, redis_server: RedisServer, broker: redis.Redis) -> None:
    assert executor.publish([queued(0)])[0].ok
    process = redis_server.process
    assert process is not None
    tasks = [queued(n, run_id="hung") for n in range(1, 4)]
    process.send_signal(signal.SIGSTOP)  # accepts connections, never answers
    try:
        started = time.monotonic()
        outcomes = executor.publish(tasks)
        elapsed = time.monotonic() - started
    finally:
        process.send_signal(signal.SIGCONT)

    bound = 3 * TIGHT_TIMEOUT + backoff(1) + backoff(2) + TIGHT_TIMEOUT
    assert elapsed <= bound + 0.5, f"publish took {elapsed:.2f} s, bound {bound:.2f} s"
    assert not any(o.ok for o in outcomes)
    assert all(1 <= o.attempts <= 3 and o.error for o in outcomes)
    assert executor.publish_timeouts >= 1
    assert executor.publish_failures == 3
    # abandoned sends may still land once the server wakes up (the worker's compare-and-set
    # refuses such messages); they must not have been counted as published
    assert set(executor.running) == {queued(0).external_executor_id}
    wait_until(lambda: broker.ping(), 5, message="redis answering again")


def test_sync_turns_stored_results_into_events(
        executor: CeleryExecutor, app: Celery) -> None:
    ok, failed, pending, started, revoked = (queued(n, run_id="sync") for n in range(5))
    assert all(o.ok for o in executor.publish([ok, failed, pending, started]))
    executor.track(revoked.key, 2, revoked.external_executor_id)  # adopted, try 2
    executor.get_event_buffer()

    backend = app.backend
    backend.store_result(ok.external_executor_id, {"state": "success"}, states.SUCCESS)
    backend.store_result(failed.external_executor_id, RuntimeError("supervisor died"),
                         states.FAILURE, traceback="Traceback ...\nRuntimeError: supervisor died")
    backend.store_result(started.external_executor_id, {"pid": 42}, states.STARTED)
    backend.store_result(revoked.external_executor_id, None, states.REVOKED)

    executor.sync()
    events = {e.external_executor_id: e for e in executor.get_event_buffer()}
    assert events == {
        ok.external_executor_id: ExecutorEvent(ok.key, 1, ok.external_executor_id,
                                               EventKind.SUCCESS, None),
        failed.external_executor_id: ExecutorEvent(
            failed.key, 1, failed.external_executor_id, EventKind.FAILED,
            "RuntimeError: supervisor died"),
        revoked.external_executor_id: ExecutorEvent(
            revoked.key, 2, revoked.external_executor_id, EventKind.FAILED, None),
    }
    assert executor.running == {pending.external_executor_id: (pending.key, 1),
                                started.external_executor_id: (started.key, 1)}
    executor.sync()
    assert executor.get_event_buffer() == []

    backend.store_result(pending.external_executor_id, None, states.SUCCESS)
    executor.sync()
    assert [e.kind for e in executor.get_event_buffer()] == [EventKind.SUCCESS]
    assert list(executor.running) == [started.external_executor_id]


def test_sync_keeps_tasks_in_flight_when_the_backend_is_down(
        executor: CeleryExecutor, app: Celery, redis_server: RedisServer) -> None:
    task = queued(1, run_id="backend-down")
    assert executor.publish([task])[0].ok
    executor.get_event_buffer()
    app.backend.store_result(task.external_executor_id, None, states.SUCCESS)
    redis_server.stop()
    try:
        executor.sync()
    finally:
        redis_server.start()
    assert executor.get_event_buffer() == []
    assert list(executor.running) == [task.external_executor_id]


def test_from_settings(tmp_path: Path, redis_server: RedisServer) -> None:
    settings = make_settings(tmp_path, redis_server, sync_parallelism=0,
                             operation_timeout=2.5, task_publish_max_retries=1)
    app = make_app(settings)
    executor = CeleryExecutor.from_settings(app, settings)
    assert executor._parallelism == default_sync_parallelism() >= 1
    assert executor._operation_timeout == 2.5 and executor._max_retries == 1
    assert isinstance(executor._fetcher, BulkStateFetcher)
    executor.end()
    with pytest.raises(ValueError, match="operation_timeout"):
        CeleryExecutor(app, BulkStateFetcher(app), operation_timeout=0, publish_max_retries=0,
                       sync_parallelism=1)
    app.close()


def test_embedded_defaults_publish_and_sync(tmp_path: Path) -> None:
    """No broker or result backend configured: the filesystem broker and the SQLite result
    database under $SQUALL_HOME (ADR 0006)."""
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)},
                             overrides={"celery": {"sync_parallelism": 2}})
    app = make_app(settings)
    executor = CeleryExecutor.from_settings(app, settings)
    try:
        tasks = [queued(n, run_id="embedded") for n in range(3)]
        assert all(o.ok for o in executor.publish(tasks))
        queue_dir = tmp_path / "celery_broker" / "queue"
        messages = sorted(queue_dir.glob("*.default.msg"))
        assert len(messages) == 3
        ids = {json.loads(m.read_text())["headers"]["id"] for m in messages}
        assert ids == {t.external_executor_id for t in tasks}

        app.backend.store_result(tasks[0].external_executor_id, None, states.SUCCESS)
        executor.sync()
        assert [(e.external_executor_id, e.kind) for e in executor.get_event_buffer()
                if e.kind != EventKind.QUEUED] == [(tasks[0].external_executor_id,
                                                    EventKind.SUCCESS)]
        assert (tmp_path / "celery_results.db").exists()
    finally:
        executor.end()
        app.close()


def test_end_closes_the_executors_broker_connections(
        executor: CeleryExecutor, broker: redis.Redis) -> None:
    """The executor's producers are its own, not kombu's process-wide pool: once it ends, no
    connection of it is left for another executor of the process to be handed (stale, if the
    broker restarted in between). The executor's connections are those to the broker's
    database that appear while it publishes: another client of this test process (an
    earlier test's Celery app, kombu's process-wide pool) may hold one the whole time."""
    def connection_ids() -> set[str]:
        return {str(c["id"]) for c in broker.client_list() if int(c["db"]) == BROKER_DB}

    before = connection_ids()
    assert all(o.ok for o in executor.publish([queued(n, run_id="conn") for n in range(4)]))
    mine = connection_ids() - before
    assert mine, "the executor published without a connection of its own"
    executor.end()
    wait_until(lambda: not mine & connection_ids(), 5,
               message="the executor's broker connections closed")
