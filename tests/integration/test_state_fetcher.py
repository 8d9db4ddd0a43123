"""BulkStateFetcher against real result backends: a private redis-server (one MGET per chunk,
counted by the server's own ``INFO commandstats``), the database backend on SQLite and
PostgreSQL (one ``IN`` query per chunk, counted by a cursor listener on the backend's
engines), and a backend without bulk reads (the thread-pool fallback).
"""

from __future__ import annotations

import logging
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery, states
from celery.backends.base import KeyValueStoreBackend
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from squall.common.celery_app import celery_config
from squall.common.settings import Settings
from squall.scheduler.state_fetcher import BulkStateFetcher, CeleryTaskState
from tests.support.services import RedisServer

pytestmark = pytest.mark.integration

TRACEBACK = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom\n'


def make_app(result_backend: str, **conf: Any) -> Celery:
    app = Celery("fetcher-test", set_as_current=False)
    app.conf.update(
        broker_url="memory://", result_backend=result_backend, result_serializer="json",
        accept_content=["json"], result_extended=True,
        database_table_names={"task": "celery_taskmeta", "group": "celery_tasksetmeta"},
        **conf,
    )
    return app


def store_mix(app: Celery, prefix: str) -> dict[str, str]:
    """Store SUCCESS / FAILURE / STARTED / REVOKED results through the backend's own API;
    returns task id -> expected state (one id has nothing stored: PENDING)."""
    backend = app.backend
    ids = {f"{prefix}-ok": states.SUCCESS, f"{prefix}-failed": states.FAILURE,
           f"{prefix}-started": states.STARTED, f"{prefix}-revoked": states.REVOKED,
           f"{prefix}-missing": states.PENDING}
    backend.store_result(f"{prefix}-ok", {"state": "success"}, states.SUCCESS)
    backend.store_result(f"{prefix}-failed", ValueError("boom"), states.FAILURE,
                         traceback=TRACEBACK)
    backend.store_result(f"{prefix}-started", {"pid": 1}, states.STARTED)
    backend.store_result(f"{prefix}-revoked", None, states.REVOKED)
    return ids


def check_mix(got: dict[str, CeleryTaskState], expected: dict[str, str], prefix: str) -> None:
    assert {k: v.state for k, v in got.items()} == expected
    assert got[f"{prefix}-failed"].info == "ValueError: boom"
    assert got[f"{prefix}-ok"].info is None
    assert got[f"{prefix}-missing"] == CeleryTaskState(states.PENDING, None)


# --------------------------------------------------------------------------- Redis


@pytest.fixture
def redis_app(redis_server: RedisServer) -> Iterator[Celery]:
    redis_server.flushall()
    app = make_app(redis_server.db_url(1), redis_socket_timeout=1.0,
                   redis_socket_connect_timeout=1.0)
    yield app
    app.close()


def mget_calls(server: RedisServer) -> int:
    client = redis.Redis(host="127.0.0.1", port=server.port)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return int(stats.get("cmdstat_mget", {}).get("calls", 0))


def test_redis_one_mget_for_all_states(redis_app: Celery, redis_server: RedisServer) -> None:
    expected = store_mix(redis_app, "r")
    fetcher = BulkStateFetcher(redis_app)
    before = mget_calls(redis_server)
    got = fetcher.get_many([*expected, "r-ok", "r-failed"])  # duplicates are dropped
    assert mget_calls(redis_server) - before == 1
    check_mix(got, expected, "r")
    assert got["r-revoked"].state == states.REVOKED


def test_redis_one_mget_per_chunk(redis_app: Celery, redis_server: RedisServer) -> None:
    ids = [f"c-{n}" for n in range(5)]
    for n, task_id in enumerate(ids):
        if n % 2 == 0:
            redis_app.backend.store_result(task_id, n, states.SUCCESS)
    fetcher = BulkStateFetcher(redis_app, chunk_size=2)
    before = mget_calls(redis_server)
    got = fetcher.get_many(ids + ids[:2])
    assert mget_calls(redis_server) - before == 3
    assert {k: v.state for k, v in got.items()} == {
        "c-0": states.SUCCESS, "c-1": states.PENDING, "c-2": states.SUCCESS,
        "c-3": states.PENDING, "c-4": states.SUCCESS}
    assert fetcher.get_many([]) == {}
    assert mget_calls(redis_server) - before == 3


def test_redis_down_is_logged_once_and_ids_are_omitted(
        redis_app: Celery, redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    redis_app.backend.store_result("d-1", 1, states.SUCCESS)
    fetcher = BulkStateFetcher(redis_app, chunk_size=2)
    assert fetcher.get_many(["d-1"])["d-1"].state == states.SUCCESS
    redis_server.stop()
    try:
        caplog.set_level(logging.WARNING, logger="squall.scheduler.state_fetcher")
        started = time.monotonic()
        got = fetcher.get_many([f"d-{n}" for n in range(1, 8)])
        elapsed = time.monotonic() - started
    finally:
        redis_server.start()
    assert got == {}
    assert elapsed < 10, f"a dead backend held the sync for {elapsed:.1f} s"
    records = [r for r in caplog.records if r.name == "squall.scheduler.state_fetcher"]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].exc_info is not None
    assert "could not read 7 of 7 task states" in records[0].getMessage()
    assert "RedisBackend" in records[0].getMessage()


def test_hung_redis_costs_one_socket_timeout(tmp_path: Path, redis_server: RedisServer,
                                            caplog: pytest.LogCaptureFixture) -> None:
    """Squall's Celery configuration bounds the result backend's socket reads."""
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)}, overrides={"celery": {
        "broker_url": redis_server.db_url(0), "result_backend": redis_server.db_url(1),
        "operation_timeout": 1.0}})
    app = Celery("hung-test", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.backend.store_result("h-1", 1, states.SUCCESS)
    fetcher = BulkStateFetcher(app)
    assert fetcher.get_many(["h-1"])["h-1"].state == states.SUCCESS
    process = redis_server.process
    assert process is not None
    caplog.set_level(logging.WARNING, logger="squall.scheduler.state_fetcher")
    process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        got = fetcher.get_many(["h-1", "h-2"])
        elapsed = time.monotonic() - started
    finally:
        process.send_signal(signal.SIGCONT)
    assert got == {}
    assert elapsed < 5, f"a hung Redis held the sync for {elapsed:.1f} s"
    assert len([r for r in caplog.records if r.name == "squall.scheduler.state_fetcher"]) == 1
    app.close()


# --------------------------------------------------------------------------- database backend


@pytest.fixture(scope="module")
def pg_results_url(pg_server_url: str) -> Iterator[str]:
    """A database of its own for Celery's tables (the metadata database's drift check must
    not see them)."""
    server = make_url(pg_server_url)
    name = f"{server.database}_results_{secrets.token_hex(2)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite"),
                        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)])
def database_backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"db+sqlite:///{tmp_path / 'celery_results.db'}"
    url: str = request.getfixturevalue("pg_results_url")
    return "db+" + url


class StatementLog:
    """Records every statement run on the engines Celery's database backend creates."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def attach(self, engine: Any) -> None:
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(" ".join(statement.split()))

    def state_queries(self) -> list[str]:
        return [s for s in self.statements
                if s.upper().startswith("SELECT") and "celery_taskmeta" in s and " IN " in s]


def test_database_backend_one_in_query_per_chunk(database_backend_url: str) -> None:
    statements = StatementLog()
    app = make_app(database_backend_url, database_engine_callback=statements.attach)
    prefix = f"db{secrets.token_hex(3)}"
    expected = store_mix(app, prefix)
    fetcher = BulkStateFetcher(app)
    statements.statements.clear()
    got = fetcher.get_many(list(expected))
    assert len(statements.state_queries()) == 1, statements.statements
    assert len([s for s in statements.statements if "celery_taskmeta" in s]) == 1
    check_mix(got, expected, prefix)

    chunked = BulkStateFetcher(app, chunk_size=2)
    statements.statements.clear()
    assert chunked.get_many(list(expected) + list(expected)[:2]) == got
    assert len(statements.state_queries()) == 3, statements.statements
    app.close()


def test_database_backend_down_is_logged_and_ids_omitted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    app = make_app(f"db+sqlite:///{folder / 'results.db'}")
    app.backend.store_result("a", 1, states.SUCCESS)
    fetcher = BulkStateFetcher(app)
    assert fetcher.get_many(["a", "b"]) == {
        "a": CeleryTaskState(states.SUCCESS, None), "b": CeleryTaskState(states.PENDING, None)}
    folder.rename(tmp_path / "gone")  # the database cannot be opened any more
    caplog.set_level(logging.WARNING, logger="squall.scheduler.state_fetcher")
    started = time.monotonic()
    assert fetcher.get_many(["a", "b"]) == {}
    assert time.monotonic() - started < 5
    records = [r for r in caplog.records if r.name == "squall.scheduler.state_fetcher"]
    assert len(records) == 1 and records[0].exc_info is not None
    assert "could not read 2 of 2 task states from the DatabaseBackend" in (
        records[0].getMessage())


# --------------------------------------------------------------------------- fallback


class DictBackend(KeyValueStoreBackend):
    """A key-value backend without ``mget``: the fetcher must fall back to one read per id.
    The store is shared by every instance (Celery builds one backend per thread)."""

    store: dict[str, bytes] = {}
    reads: list[str] = []

    def get(self, key: Any) -> Any:
        key = key.decode() if isinstance(key, bytes) else key
        self.reads.append(key)
        return self.store.get(key)

    def set(self, key: Any, value: Any, **_: Any) -> None:
        self.store[key.decode() if isinstance(key, bytes) else key] = value

    def delete(self, key: Any) -> None:
        self.store.pop(key.decode() if isinstance(key, bytes) else key, None)


@pytest.mark.parametrize("parallelism", [1, 3])
def test_backend_without_bulk_read_uses_one_read_per_id(parallelism: int) -> None:
    app = make_app(f"{__name__}:DictBackend")
    assert isinstance(app.backend, DictBackend)
    DictBackend.store.clear()
    expected = store_mix(app, "f")
    DictBackend.reads.clear()
    fetcher = BulkStateFetcher(app, sync_parallelism=parallelism, chunk_size=2)
    try:
        got = fetcher.get_many(list(expected))
    finally:
        fetcher.end()
    check_mix(got, expected, "f")
    assert len(DictBackend.reads) == len(expected)
