"""Helpers for scheduler tests: DAGs synced to the database as the DAG processor would, and
a fake executor that records what it is asked to publish and emits the events a test wants."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from squall.common.db import SessionFactory, session_scope
from squall.common.models import TaskInstanceKey
from squall.dag_processing.dagbag import ParseResult
from squall.dag_processing.serialization import serialize_dag
from squall.dag_processing.sync import sync_to_db
from squall.scheduler.executor import EventKind, ExecutorEvent, PublishOutcome, QueuedTask
from squall.sdk.dag import DAG
from squall.sdk.operators.base import BaseOperator, Context


class Noop(BaseOperator):
    def execute(self, context: Context) -> Any:
        return None


def sync_dags(factory: SessionFactory, *dags: DAG, paused: bool = False,
              now: datetime | None = None) -> None:
    """Write ``dags`` to ``dag`` / ``serialized_dag`` as the DAG processor does; commits."""
    result = ParseResult(serialized={d.dag_id: serialize_dag(d) for d in dags})
    with session_scope(factory) as session:
        sync_to_db(session, result, paused_at_creation=paused, now=now or datetime.now(UTC))


@dataclass
class FakeExecutor:
    """Records publishes; ``fail_keys`` make a publish fail; ``emit`` queues an event."""

    fail_keys: set[TaskInstanceKey] = field(default_factory=set)
    published: list[QueuedTask] = field(default_factory=list)
    running: dict[str, tuple[TaskInstanceKey, int]] = field(default_factory=dict)
    events: list[ExecutorEvent] = field(default_factory=list)
    syncs: int = 0
    ended: bool = False
    #: external_executor_id of each adopted task, in the order tracked
    adopted: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)

    def publish(self, tasks: Sequence[QueuedTask]) -> list[PublishOutcome]:
        outcomes = []
        for task in tasks:
            if task.key in self.fail_keys:
                outcomes.append(PublishOutcome(task=task, ok=False, attempts=3,
                                               error="broker unreachable"))
                continue
            self.published.append(task)
            self.running[task.external_executor_id] = (task.key, task.try_number)
            outcomes.append(PublishOutcome(task=task, ok=True, attempts=1, error=None))
        return outcomes

    def sync(self) -> None:
        self.syncs += 1

    def get_event_buffer(self) -> list[ExecutorEvent]:
        events, self.events = self.events, []
        return events

    def end(self) -> None:
        self.ended = True

    def track(self, key: TaskInstanceKey, try_number: int, external_executor_id: str,
              *, adopted: bool = False) -> None:
        self.running[external_executor_id] = (key, try_number)
        if adopted:
            self.adopted.append(external_executor_id)

    def revoke(self, external_executor_ids: Sequence[str]) -> None:
        for task_id in external_executor_ids:
            self.running.pop(task_id, None)
            self.revoked.append(task_id)

    def emit(self, task: QueuedTask, kind: EventKind, info: str | None = None) -> None:
        self.running.pop(task.external_executor_id, None)
        self.events.append(ExecutorEvent(key=task.key, try_number=task.try_number,
                                         external_executor_id=task.external_executor_id,
                                         kind=kind, info=info))

    def finish(self, keys: Collection[str] = ()) -> None:
        """Forget tasks in flight (all, or those whose task_id is in ``keys``)."""
        for ext_id, (key, _) in list(self.running.items()):
            if not keys or key.task_id in keys:
                del self.running[ext_id]
