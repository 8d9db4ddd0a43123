"""Engine and session factory for the metadata database (SQLite in WAL mode, PostgreSQL).

Nothing connects at import time: an entry point calls :func:`make_engine` with the URL from
its settings and hands the resulting :class:`~sqlalchemy.orm.sessionmaker` down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from squall.common.errors import SettingsError

log = logging.getLogger(__name__)

SessionFactory = sessionmaker[Session]


def normalise_url(url: str) -> str:
    """Pin psycopg2 for ``postgresql://`` URLs (SQLAlchemy 2.1 would pick psycopg 3)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


#: A pooled connection idle for longer than this is pinged before it is handed out.
PRE_PING_IDLE_SECONDS = 1.0


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int = 10,
                pool_recycle: int = 1800, pool_pre_ping: bool = True,
                pre_ping_idle_seconds: float = PRE_PING_IDLE_SECONDS) -> Engine:
    """An engine for the metadata database at ``url``.

    SQLite gets WAL journaling, a busy timeout and foreign keys on every connection. With
    ``pool_pre_ping``, a PostgreSQL connection idle in the pool for more than
    ``pre_ping_idle_seconds`` is pinged before it is handed out.
    """
    try:
        parsed = make_url(normalise_url(url))
    except Exception as exc:
        raise SettingsError(f"[database] sql_alchemy_conn = {url!r}: {exc}") from None
    kwargs: dict[str, Any] = {"future": True}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        engine = create_engine(parsed, **kwargs)
        _configure_sqlite(engine)
        return engine
    if parsed.get_backend_name() != "postgresql":
        raise SettingsError(
            f"[database] sql_alchemy_conn: unsupported database {parsed.get_backend_name()!r}"
            " (use sqlite:/// or postgresql+psycopg2://)"
        )
    kwargs.update(pool_size=pool_size, max_overflow=max_overflow, pool_recycle=pool_recycle)
    engine = create_engine(parsed, **kwargs)
    if pool_pre_ping:
        _ping_idle_connections(engine, pre_ping_idle_seconds)
    return engine


def _ping_idle_connections(engine: Engine, idle_seconds: float) -> None:
    """``pool_pre_ping``, for connections that sat idle in the pool for more than
    ``idle_seconds`` (:data:`PRE_PING_IDLE_SECONDS` by default) only: one that was used a
    moment ago is almost surely alive, and a loop checking out several times a second would
    otherwise pay a round trip each time. A dead one is replaced before use
    (``DisconnectionError`` makes the pool connect again); one that died within the second
    fails its first statement, which callers already treat as an outage."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["squall_checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("squall_checked_in")
        if since is None or time.monotonic() - since < idle_seconds:
            return  # new, or just used
        try:
            engine.dialect.do_ping(dbapi_conn)  # the dialect's own ping (in autocommit)
        except Exception as exc:
            raise DisconnectionError(f"pooled connection is gone: {exc}") from exc


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy issue BEGIN itself so that BEGIN IMMEDIATE can be used for writes.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if engine.url.database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Take the write lock at the start of a transaction: read-then-write transactions
        # otherwise fail with "database is locked" instead of waiting for the busy timeout.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> SessionFactory:
    return sessionmaker(bind=engine, expire_on_commit=False, future=True)


def is_postgres(engine_or_session: Engine | Session) -> bool:
    bind = engine_or_session.get_bind() if isinstance(engine_or_session, Session) else (
        engine_or_session
    )
    return bind.dialect.name == "postgresql"


@contextmanager
def session_scope(factory: SessionFactory) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
