"""What a running task sees: the ``ti`` object in its template context.

The runner (``squall.execution.runner``) builds a concrete implementation backed by the metadata
database; operators and sensors only rely on this protocol, so they can be unit-tested with a
small fake.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from squall.sdk.operators.base import BaseOperator


class RuntimeTaskInstance(Protocol):
    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    max_tries: int
    map_index: int
    start_date: datetime
    hostname: str
    task: BaseOperator

    def xcom_push(self, key: str, value: Any) -> None:
        """Store ``value`` (JSON-serialisable) under ``key`` for this task instance."""

    def xcom_pull(
        self,
        task_ids: str | Iterable[str] | None = None,
        key: str | None = "return_value",
        dag_id: str | None = None,
        default: Any = None,
        include_prior_dates: bool = False,
    ) -> Any:
        """A value pushed by ``task_ids`` in this DAG run (a list when task_ids is a list).

        As in Airflow 2, ``task_ids=None`` (and ``key=None``) remove that filter: the most
        recent value any task of the run pushed. ``include_prior_dates`` also looks in the
        DAG's earlier runs (by logical date).
        """

    def skip_tasks(self, task_ids: Iterable[str]) -> None:
        """Mark these task instances of this DAG run SKIPPED (those not yet started)."""

    @property
    def sensor_started_at(self) -> datetime:
        """When the first poke of this try started (reschedule mode spans several runs)."""

    @property
    def reschedule_count(self) -> int:
        """How many times this try has been rescheduled so far."""
