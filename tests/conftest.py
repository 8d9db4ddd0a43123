"""Fixtures shared by every test: services, databases, sessions.

Databases
    ``db_url`` is parametrized over ``sqlite`` and ``postgres`` (the latter marked
    ``postgres``). Either way it names a database *at the head revision whose tables are empty
    except for the default pool* (``default_pool``, 128 slots):

    * sqlite: a fresh file in ``tmp_path`` (copied from a template migrated once a session);
    * postgres: a database of its own for this pytest process (``pg_server_url``), migrated
      once; between tests every table but ``alembic_version`` is truncated and the default
      pool put back (a test that dropped tables or changed the revision gets a reset).

    ``engine`` / ``session_factory`` / ``session`` build on ``db_url``;
    ``sqlite_session_factory`` is the quick SQLite-only variant.

Services
    :func:`require_service` skips a test when a TCP service is unreachable, or fails it when
    the environment variable ``CI`` is set (so CI never silently skips).
    ``SQUALL_TEST_PG_URL`` overrides the PostgreSQL server (a URL whose database is
    ``postgres``); ``SQUALL_TEST_REDIS_URL`` overrides ``redis_url``.
"""

from __future__ import annotations

import os
import secrets
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from squall.common import dbops
from squall.common.db import SessionFactory, make_engine, make_session_factory, normalise_url
from squall.common.models import Base

if TYPE_CHECKING:
    from tests.support.services import RedisServer

DEFAULT_PG_SERVER_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"

# The suite's DAGs are scheduled as soon as they are parsed, as before `[core]
# dags_are_paused_at_creation` defaulted to true (Airflow's default); tests of that default
# unset it. Settings built from an explicit env= say so themselves.
os.environ.setdefault("SQUALL__CORE__DAGS_ARE_PAUSED_AT_CREATION", "false")


# --------------------------------------------------------------------------- services


def in_ci() -> bool:
    """True when the environment variable ``CI`` is set to something other than 0/false."""
    value = os.environ.get("CI", "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def require_service(name: str, host: str, port: int, timeout: float = 2.0) -> None:
    """Skip the test (fail it under CI) when nothing listens on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        message = f"{name} is not reachable at {host}:{port} ({exc})"
    if in_ci():
        pytest.fail(f"{message}; CI is set, so this is an error, not a skip", pytrace=False)
    pytest.skip(f"{message}; start it to run this test")


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a fresh database ``squall_test_<pid>_<random>`` on the PostgreSQL server.

    Created for this pytest process (so concurrent runs share one server safely) and
    dropped, connections and all, at the end of the session.
    """
    server = make_url(normalise_url(os.environ.get("SQUALL_TEST_PG_URL", DEFAULT_PG_SERVER_URL)))
    require_service("PostgreSQL", server.host or "127.0.0.1", server.port or 5432)
    name = f"squall_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()


@pytest.fixture(scope="session")
def _pg_engine(pg_server_url: str) -> Iterator[Engine]:
    """An engine on the session database, which it migrates to head once."""
    engine = make_engine(pg_server_url, pool_size=1, max_overflow=0)
    try:
        dbops.reset(engine)
        yield engine
    finally:
        engine.dispose()


def _pg_clean(engine: Engine) -> None:
    """Empty every table but ``alembic_version`` and put the default pool back.

    Falls back to a full reset when the schema is not the migrated one any more (a test ran
    ``reset``/``drop_all`` or changed the revision).
    """
    with engine.begin() as conn:
        tables = set(inspect(conn).get_table_names())
        revision = (
            conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            if "alembic_version" in tables
            else None
        )
        intact = revision == dbops.head_revision() and set(Base.metadata.tables) <= tables
        if intact:
            # a test that left a transaction open must not make TRUNCATE wait forever
            conn.execute(text("SET LOCAL lock_timeout = '20s'"))
            names = ", ".join(f'"{t}"' for t in sorted(tables - {"alembic_version"}))
            conn.execute(text(f"TRUNCATE TABLE {names} RESTART IDENTITY CASCADE"))
            with Session(bind=conn) as session:
                dbops.ensure_default_pool(session)
    if not intact:
        dbops.reset(engine)


# --------------------------------------------------------------------------- SQLite


def _copy_sqlite(src: Path, dst: Path) -> None:
    source, target = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once a session; tests get copies of it."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        dbops.migrate(engine)
    finally:
        engine.dispose()
    return path


def _fresh_sqlite_url(template: Path, directory: Path) -> str:
    path = directory / "squall.db"
    _copy_sqlite(template, path)
    return f"sqlite:///{path}"


# --------------------------------------------------------------------------- database fixtures


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty (but for the default pool) database on SQLite or PostgreSQL."""
    if request.param == "sqlite":
        return _fresh_sqlite_url(request.getfixturevalue("_sqlite_template"), tmp_path)
    pg_engine: Engine = request.getfixturevalue("_pg_engine")
    _pg_clean(pg_engine)
    return pg_engine.url.render_as_string(hide_password=False)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on ``db_url`` (migrated to head), disposed of at teardown."""
    eng = make_engine(db_url)
    dbops.migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> SessionFactory:
    return make_session_factory(engine)


@pytest.fixture
def session(session_factory: SessionFactory) -> Iterator[Session]:
    """A session on ``db_url``; rolled back and closed at teardown (commit what must stay)."""
    with session_factory() as sess:
        yield sess


@pytest.fixture
def sqlite_session_factory(_sqlite_template: Path, tmp_path: Path) -> Iterator[SessionFactory]:
    """A session factory on a migrated SQLite file of its own (not parametrized)."""
    eng = make_engine(_fresh_sqlite_url(_sqlite_template, tmp_path))
    yield make_session_factory(eng)
    eng.dispose()


# --------------------------------------------------------------------------- Redis


@pytest.fixture
def redis_url() -> str:
    """``redis://127.0.0.1:6379/15`` (or ``SQUALL_TEST_REDIS_URL``); skips if unreachable.

    The database is shared by concurrent runs and not flushed: use unique key prefixes.
    """
    url = os.environ.get("SQUALL_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    parsed = urlsplit(url)
    require_service("Redis", parsed.hostname or "127.0.0.1", parsed.port or 6379)
    return url


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of this test session's own, on a free port (fails under CI when
    redis-server is not installed). Flush it (``flushall()``) where a test needs it empty."""
    from tests.support.services import RedisServer

    server = RedisServer(workdir=tmp_path_factory.mktemp("redis"))
    try:
        server.start()
    except RuntimeError as exc:
        if in_ci():
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture
def pg_engine(_pg_engine: Engine) -> Iterator[Engine]:
    """An engine on the PostgreSQL test database alone (clean, migrated), for behaviour only
    PostgreSQL has (several schedulers, row locks); not parametrized, so nothing is skipped."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    _pg_clean(_pg_engine)
    eng = make_engine(_pg_engine.url.render_as_string(hide_password=False))
    yield eng
    eng.dispose()
