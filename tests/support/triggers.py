"""Small triggers for the triggerer's tests, and deferred task instances made straight in the
database (as a deferring worker leaves them: the ``trigger`` row and the DEFERRED task
instance pointing at it, committed together).

Each trigger may append a line to a record file (``kind tag pid time``) when its ``run()``
starts (``start``), when it fires (``fire``) and when its ``cleanup()`` runs (``cleanup``):
that file, not a log line, is how the tests count runs. Imported by ``squall triggerer``
subprocesses as ``tests.support.triggers`` (the cluster puts the repository on PYTHONPATH).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from squall.common.models import DagModel, DagRun, TaskInstance, Trigger
from squall.common.state import DagRunState, TaskInstanceState
from squall.sdk.triggers import BaseTrigger, TriggerEvent, serde

HERE = "tests.support.triggers"


def _record(path: str | None, kind: str, tag: str) -> None:
    if path:
        with open(path, "a") as f:
            f.write(f"{kind} {tag} {os.getpid()} {time.time():.6f}\n")


class _Recording(BaseTrigger):
    def __init__(self, *, tag: str = "", record: str | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.tag = tag
        self.record = record

    def _kwargs(self) -> dict[str, Any]:
        return {"tag": self.tag, "record": self.record}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{HERE}.{type(self).__name__}", self._kwargs()

    async def cleanup(self) -> None:
        _record(self.record, "cleanup", self.tag)


class SleepTrigger(_Recording):
    """Fires ``seconds`` after its run starts, with ``{"tag": ..., "slept": seconds}``."""

    def __init__(self, seconds: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seconds = seconds

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "seconds": self.seconds}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        _record(self.record, "start", self.tag)
        await asyncio.sleep(self.seconds)
        _record(self.record, "fire", self.tag)
        yield TriggerEvent({"tag": self.tag, "slept": self.seconds})


class AtTrigger(_Recording):
    """Fires at ``moment`` (an aware datetime), with ``{"tag": ..., "at": moment}``: a
    timer that does not restart when a triggerer takes it over."""

    def __init__(self, moment: datetime, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.moment = moment

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "moment": self.moment}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        _record(self.record, "start", self.tag)
        delay = (self.moment - datetime.now(UTC)).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)
        _record(self.record, "fire", self.tag)
        yield TriggerEvent({"tag": self.tag, "at": self.moment})


class FileTrigger(_Recording):
    """Fires when ``path`` exists, with ``{"tag": ..., "path": path}``."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "path": self.path}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        _record(self.record, "start", self.tag)
        while not os.path.exists(self.path):
            await asyncio.sleep(0.05)
        _record(self.record, "fire", self.tag)
        yield TriggerEvent({"tag": self.tag, "path": self.path})


class RaisingTrigger(_Recording):
    """Raises ``ValueError("boom <tag>")`` after ``seconds``."""

    def __init__(self, seconds: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seconds = seconds

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "seconds": self.seconds}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        _record(self.record, "start", self.tag)
        await asyncio.sleep(self.seconds)
        raise ValueError(f"boom {self.tag}")
        yield TriggerEvent(None)  # pragma: no cover - makes run() an async generator


class NoEventTrigger(_Recording):
    """Ends after ``seconds`` without yielding an event."""

    def __init__(self, seconds: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seconds = seconds

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "seconds": self.seconds}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        _record(self.record, "start", self.tag)
        await asyncio.sleep(self.seconds)
        return
        yield TriggerEvent(None)  # pragma: no cover


class BlockingTrigger(_Recording):
    """Blocks the event loop (``time.sleep``) for ``block`` seconds after ``after``
    seconds, then fires."""

    def __init__(self, block: float = 1.0, after: float = 0.2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.block = block
        self.after = after

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "block": self.block, "after": self.after}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        _record(self.record, "start", self.tag)
        await asyncio.sleep(self.after)
        time.sleep(self.block)  # the bug this trigger exists to have
        _record(self.record, "fire", self.tag)
        yield TriggerEvent({"tag": self.tag})


# --------------------------------------------------------------------------- the database


@dataclass(frozen=True)
class Deferred:
    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    trigger_id: int


def defer(session: Session, trigger: BaseTrigger, *, dag_id: str = "deferring",
          task_id: str = "wait", run_id: str = "r1", map_index: int = -1,
          try_number: int = 1, next_method: str = "execute_complete",
          next_kwargs: dict[str, Any] | None = None, priority_weight: int = 1) -> Deferred:
    """A DEFERRED task instance waiting on a new ``trigger`` row (the DAG and run rows made
    when missing); flushed, not committed."""
    now = datetime.now(UTC)
    if session.get(DagModel, dag_id) is None:
        session.add(DagModel(dag_id=dag_id, fileloc=f"/dags/{dag_id}.py"))
        session.flush()
    if session.scalar(select(DagRun.id).where(DagRun.dag_id == dag_id,
                                              DagRun.run_id == run_id)) is None:
        count = len(session.scalars(select(DagRun.id).where(DagRun.dag_id == dag_id)).all())
        session.add(DagRun(dag_id=dag_id, run_id=run_id, run_type="manual",
                           logical_date=datetime(2024, 1, 1, tzinfo=UTC).replace(
                               microsecond=count),
                           state=DagRunState.RUNNING.value, start_date=now))
        session.flush()
    classpath, kwargs = trigger.serialize()
    row = Trigger(classpath=classpath, kwargs=serde.dumps(kwargs), created_date=now)
    session.add(row)
    session.flush()
    session.add(TaskInstance(
        dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=map_index,
        try_number=try_number, max_tries=0, state=TaskInstanceState.DEFERRED.value,
        trigger_id=row.id, next_method=next_method,
        next_kwargs=serde.to_json(next_kwargs) if next_kwargs is not None else None,
        priority_weight=priority_weight, start_date=now))
    session.flush()
    return Deferred(dag_id, task_id, run_id, map_index, row.id)


@dataclass(frozen=True)
class Record:
    kind: str
    tag: str
    pid: int
    at: float


def records(path: Path) -> list[Record]:
    """The lines of a record file, in order."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4:
            out.append(Record(parts[0], parts[1], int(parts[2]), float(parts[3])))
    return out


def read_records(path: Path) -> Counter[tuple[str, str]]:
    """(kind, tag) -> how many times, from a record file."""
    return Counter((r.kind, r.tag) for r in records(path))


def record_pids(path: Path, kind: str, tag: str) -> list[int]:
    return [r.pid for r in records(path) if r.kind == kind and r.tag == tag]
