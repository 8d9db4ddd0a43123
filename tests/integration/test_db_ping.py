"""The pre-ping of pooled PostgreSQL connections: only a connection idle for more than
pre_ping_idle_seconds is pinged; a dead one is replaced before it is handed out."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from squall.common.db import make_engine


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _kill(admin: Engine, pid: int) -> None:
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        conn.commit()


def test_an_idle_dead_connection_is_replaced(pg_engine: Engine) -> None:
    engine = make_engine(pg_engine.url.render_as_string(hide_password=False), pool_size=1,
                         max_overflow=0,
                         pre_ping_idle_seconds=0.0)  # every pooled connection is idle
    try:
        first = _backend_pid(engine)
        _kill(pg_engine, first)
        second = _backend_pid(engine)  # no error: the ping found it dead, a new one came
        assert second != first
    finally:
        engine.dispose()


def test_a_connection_just_used_is_not_pinged(pg_engine: Engine) -> None:
    engine = make_engine(pg_engine.url.render_as_string(hide_password=False), pool_size=1,
                         max_overflow=0, pre_ping_idle_seconds=3600.0)
    try:
        first = _backend_pid(engine)
        _kill(pg_engine, first)
        # not pinged: its first statement meets the dead connection, which is then replaced
        with pytest.raises(DBAPIError) as failed:
            _backend_pid(engine)
        assert failed.value.connection_invalidated
        assert _backend_pid(engine) != first
    finally:
        engine.dispose()
