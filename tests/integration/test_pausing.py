"""Pausing and unpausing a DAG (``squall.runs.pausing``), the one home the CLI, the REST API
and the web UI call: unpausing wakes the schedulers in the caller's transaction, pausing
does not, and an unknown DAG is refused."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine

from squall.common.db import make_session_factory, session_scope
from squall.common.models import DagModel
from squall.common.wakeup import PostgresWaker
from squall.runs.pausing import set_paused

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


def notices_within(waker: PostgresWaker, seconds: float) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + seconds
    while not got and time.monotonic() < deadline:
        got = waker.notices() or []
        time.sleep(0.01)
    return got


def test_unpausing_wakes_the_schedulers_and_pausing_does_not(pg_engine: Engine) -> None:
    factory = make_session_factory(pg_engine)
    with session_scope(factory) as session:
        session.add(DagModel(dag_id="p", fileloc="/dags/p.py", is_paused=True, is_active=True))
    waker = PostgresWaker(pg_engine)
    try:
        assert waker.notices() is None  # listening from now on
        with session_scope(factory) as session:
            row = set_paused(session, "p", False, by="test")
            assert row is not None and not row.is_paused
        assert notices_within(waker, 10) == ["unpaused p (test)"]
        with session_scope(factory) as session:
            assert set_paused(session, "p", True, by="test") is not None
            assert set_paused(session, "nope", False, by="test") is None
        # a notice sent after the pause would show up here; the unpause's came within ms
        assert notices_within(waker, 0.5) == []
        with session_scope(factory) as session:
            row = session.get(DagModel, "p")
            assert row is not None and row.is_paused
    finally:
        waker.close()
