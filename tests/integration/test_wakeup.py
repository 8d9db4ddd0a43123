"""The scheduler is woken when a try's outcome is committed, on PostgreSQL (LISTEN/NOTIFY)
and SQLite (data_version), and not before the commit."""

from __future__ import annotations

import threading
import time

from sqlalchemy import Engine, text

from squall.common.db import SessionFactory, make_session_factory
from squall.common.wakeup import (
    BACKFILL_NOTICE,
    PostgresWaker,
    SleepWaker,
    SqliteWaker,
    notify_backfill,
    notify_scheduler,
    waker_for,
)


def _commit_later(engine: Engine, delay: float, *, notify: bool) -> threading.Thread:
    factory = make_session_factory(engine)

    def work() -> None:
        time.sleep(delay)  # the writer acts while the waker is already waiting
        with factory() as session:
            session.execute(text("UPDATE slot_pool SET description = 'touched'"))
            if notify:
                notify_scheduler(session, "d.t[r]")
            session.commit()

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def test_postgres_waker_wakes_on_commit_only(pg_engine: Engine) -> None:
    waker = waker_for(pg_engine)
    assert isinstance(waker, PostgresWaker)
    try:
        assert waker.wait(0.3) is False  # nothing happened: the full timeout
        # a transaction that notifies but rolls back wakes nobody
        with make_session_factory(pg_engine)() as session:
            notify_scheduler(session)
            session.rollback()
        assert waker.wait(0.3) is False
        writer = _commit_later(pg_engine, 0.2, notify=True)
        started = time.monotonic()
        assert waker.wait(10) is True
        assert time.monotonic() - started < 5
        writer.join()
    finally:
        waker.close()


def test_sqlite_waker_wakes_when_another_connection_commits(
        sqlite_session_factory: SessionFactory) -> None:
    engine = sqlite_session_factory.kw["bind"]
    waker = waker_for(engine)
    assert isinstance(waker, SqliteWaker)
    try:
        assert waker.wait(0.2) is False
        writer = _commit_later(engine, 0.2, notify=False)
        started = time.monotonic()
        assert waker.wait(10) is True
        assert time.monotonic() - started < 5
        writer.join()
    finally:
        waker.close()


def test_postgres_waker_hands_over_what_was_notified(pg_engine: Engine) -> None:
    waker = PostgresWaker(pg_engine)
    factory = make_session_factory(pg_engine)
    try:
        assert waker.notices() is None  # listening only from now: before is unknown
        assert waker.notices() == []
        with factory() as session:
            notify_backfill(session, 7, "etl")
            notify_scheduler(session, "d.t[r]")
            session.commit()
        deadline = time.monotonic() + 5
        got: list[str] = []
        while not got and time.monotonic() < deadline:
            got = waker.notices() or []
            time.sleep(0.01)
        assert got == [f"{BACKFILL_NOTICE}7 of etl created", "d.t[r]"]
        assert waker.notices() == []
        # handed over, so no longer a wake-up: the caller has seen what they committed
        assert waker.wait(0.2) is False
        # what wait() received is handed over too
        writer = _commit_later(pg_engine, 0.1, notify=True)
        assert waker.wait(10) is True
        writer.join()
        assert waker.notices() == ["d.t[r]"]
        # a new connection listens afresh: what came between is unknown
        waker.close()
        assert waker.notices() is None
    finally:
        waker.close()


def test_wakers_without_payloads_cannot_tell(
        sqlite_session_factory: SessionFactory) -> None:
    waker = waker_for(sqlite_session_factory.kw["bind"])
    try:
        assert waker.notices() is None
    finally:
        waker.close()
    assert SleepWaker().notices() is None
