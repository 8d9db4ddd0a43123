"""Waking the scheduler when a try finishes, instead of waiting out its idle sleep.

* PostgreSQL: whoever records a try's outcome runs ``pg_notify('squall_scheduler', ...)`` in
  the same transaction (:func:`notify_scheduler`); the scheduler ``LISTEN``s on a connection
  of its own and ``select()``s on it while idle. A notification is delivered only when the
  transaction commits, so a woken scheduler always sees the new state.
* SQLite (one machine): the scheduler polls ``PRAGMA data_version`` on a connection of its
  own, which changes whenever another connection commits; a poll costs microseconds and no
  lock.

Either way the idle sleep (``[scheduler] scheduler_idle_sleep_time``) stays the upper bound,
so a lost notification only costs what polling cost before.

A waker also hands over what was notified (:meth:`Waker.notices`): on PostgreSQL the
payloads, so that the scheduler can skip a step until it is told there is something for it
(a new backfill: :func:`notify_backfill`); a waker that cannot tell (SQLite, plain sleep,
a LISTEN connection that was not up all the time) answers None: anything may have changed.
"""

from __future__ import annotations

import logging
import select
import time
from typing import Any, Protocol

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

CHANNEL = "squall_scheduler"
#: how the payload of a new (or cancelled) backfill's notification begins
BACKFILL_NOTICE = "backfill "
#: most payloads a waker keeps between two :meth:`Waker.notices` calls; past that it
#: answers None (anything may have changed) once
MAX_NOTICES = 1000
SQLITE_POLL_SECONDS = 0.02
#: the poll while nothing at all is active (a trigger is then noticed within this)
SQLITE_RELAXED_POLL_SECONDS = 0.1


def notify_scheduler(session: Session, payload: str = "") -> None:
    """Wake idle schedulers when this transaction commits (PostgreSQL; a no-op elsewhere)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, :payload)"),
                        {"channel": CHANNEL, "payload": payload[:200]})


def notify_backfill(session: Session, backfill_id: int, dag_id: str,
                    what: str = "created") -> None:
    """Tell the schedulers, when this transaction commits, that backfill ``backfill_id``
    was created (or ``what`` happened to it): a scheduler that found no backfill to drive
    looks again at once (:data:`BACKFILL_NOTICE`)."""
    notify_scheduler(session, f"{BACKFILL_NOTICE}{backfill_id} of {dag_id} {what}")


class Waker(Protocol):
    def wait(self, timeout: float, *, relaxed: bool = False) -> bool:
        """Block up to ``timeout`` seconds; True when woken by a change. ``relaxed``: the
        caller has nothing active, so a poller may look less often."""

    def notices(self) -> list[str] | None:
        """The payloads notified since the last call, reading without blocking those
        waiting, or None when this waker cannot tell (it receives no payloads, or was not
        listening all that time: not yet, or reconnected since). None: anything may have
        been notified."""

    def close(self) -> None: ...


class SleepWaker:
    """No wake-ups: just sleep."""

    def wait(self, timeout: float, *, relaxed: bool = False) -> bool:
        time.sleep(max(timeout, 0.0))
        return False

    def notices(self) -> list[str] | None:
        return None

    def close(self) -> None:
        pass


class PostgresWaker:
    """LISTEN on a dedicated connection; reconnects lazily after an error."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Any = None
        self._broken_logged = False
        #: payloads received and not yet handed over by notices()
        self._notices: list[str] = []
        #: notices() has answered since the connection's LISTEN began: what it gathers
        #: from then on is everything notified (False: the next answer is None)
        self._complete = False

    def _connect(self) -> Any:
        raw = self._engine.raw_connection()
        dbapi = raw.dbapi_connection
        assert dbapi is not None
        dbapi.autocommit = True
        cur = dbapi.cursor()
        try:
            cur.execute(f"LISTEN {CHANNEL}")
        finally:
            cur.close()
        self._raw = raw
        self._notices.clear()
        self._complete = False
        return dbapi

    def _gather(self, conn: Any) -> bool:
        """Move the connection's notifications to :attr:`_notices`; True when there were."""
        if not conn.notifies:
            return False
        if len(self._notices) + len(conn.notifies) > MAX_NOTICES:
            self._notices.clear()
            self._complete = False  # some were dropped: the next answer is None
        else:
            self._notices.extend(str(n.payload) for n in conn.notifies)
        conn.notifies.clear()
        return True

    def wait(self, timeout: float, *, relaxed: bool = False) -> bool:
        try:
            if self._conn is None:
                self._conn = self._connect()
                self._broken_logged = False
            conn = self._conn
            if not conn.notifies:
                readable, _, _ = select.select([conn], [], [], max(timeout, 0.0))
                if not readable:
                    return False
                conn.poll()
            return self._gather(conn)
        except Exception as exc:  # a lost connection: fall back to sleeping, retry later
            if not self._broken_logged:
                log.warning("scheduler wake-up: LISTEN connection failed (%s); polling", exc)
                self._broken_logged = True
            self.close()
            time.sleep(max(timeout, 0.0))
            return False

    def notices(self) -> list[str] | None:
        try:
            if self._conn is None:
                self._conn = self._connect()
                self._broken_logged = False
            self._conn.poll()  # reads what has arrived; does not block
            self._gather(self._conn)
        except Exception as exc:
            if not self._broken_logged:
                log.warning("scheduler wake-up: LISTEN connection failed (%s); polling", exc)
                self._broken_logged = True
            self.close()
            return None
        got, self._notices = self._notices, []
        if not self._complete:
            # listening only since the connection's LISTEN: what came before is unknown
            self._complete = True
            return None
        return got

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._raw.invalidate()
            except Exception:
                log.debug("scheduler wake-up: closing the LISTEN connection failed",
                          exc_info=True)
            self._conn = None


class SqliteWaker:
    """Poll ``PRAGMA data_version``: it changes when another connection commits."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._raw: Any = None
        self._version: int | None = None

    def _data_version(self) -> int:
        if self._raw is None:
            self._raw = self._engine.raw_connection()
        cur = self._raw.dbapi_connection.cursor()
        try:
            cur.execute("PRAGMA data_version")
            return int(cur.fetchone()[0])
        finally:
            cur.close()

    def wait(self, timeout: float, *, relaxed: bool = False) -> bool:
        deadline = time.monotonic() + max(timeout, 0.0)
        poll = SQLITE_RELAXED_POLL_SECONDS if relaxed else SQLITE_POLL_SECONDS
        try:
            if self._version is None:
                self._version = self._data_version()
            while True:
                version = self._data_version()
                if version != self._version:
                    self._version = version
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                time.sleep(min(poll, remaining))
        except Exception as exc:
            log.debug("scheduler wake-up: data_version poll failed (%s)", exc)
            self.close()
            time.sleep(max(deadline - time.monotonic(), 0.0))
            return False

    def notices(self) -> list[str] | None:
        return None  # data_version says that something committed, not what

    def close(self) -> None:
        if self._raw is not None:
            try:
                self._raw.close()
            except Exception:
                log.debug("scheduler wake-up: closing the poll connection failed",
                          exc_info=True)
            self._raw = None
            self._version = None


def waker_for(engine: Engine) -> Waker:
    if engine.dialect.name == "postgresql":
        return PostgresWaker(engine)
    if engine.dialect.name == "sqlite":
        return SqliteWaker(engine)
    return SleepWaker()
