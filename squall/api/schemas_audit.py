"""Response shapes of ``/api/v1/eventLogs``: Airflow 2.10's ``EventLog`` and
``EventLogCollection`` schemas, by their names."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from squall.api.schemas import CollectionInfo


class EventLog(BaseModel):
    """One audit entry: who (``owner``) did what (``event``) to which DAG, run or task, and
    when; ``extra`` is JSON text (its ``source``: ``api``, ``ui`` or ``cli``)."""

    model_config = ConfigDict(extra="forbid")

    event_log_id: int
    when: str
    dag_id: str | None
    task_id: str | None
    run_id: str | None
    map_index: int | None
    try_number: int | None
    event: str
    execution_date: str | None
    owner: str | None
    extra: str | None


class EventLogCollection(CollectionInfo):
    event_logs: list[EventLog]
