"""Request bodies and the extra response shapes of the DAG run, task instance and
experimental routes, named as Airflow 2's OpenAPI spec names them.

Bodies refuse fields they do not know (a 400, as Airflow's schemas do), so that a typo in a
client's request is not silently ignored. Dates in bodies and queries are ISO 8601; one
without a UTC offset is a wall time in ``[core] default_timezone``."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: the largest offset PostgreSQL takes (bigint)
MAX_OFFSET = 2**63 - 1


def has_nul(value: Any) -> bool:
    """Whether a NUL character is in ``value`` or anything in it (PostgreSQL cannot store
    one in a string)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_nul(v) for v in value)
    return False


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if has_nul(data):
            raise ValueError("NUL characters (\\u0000) are not allowed")
        return data


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- bodies


class TriggerDAGRun(_In):
    """``POST /dags/{dag_id}/dagRuns`` (Airflow's ``DAGRun`` as a request body)."""

    dag_run_id: str | None = Field(
        default=None, max_length=250,
        description="the run's id (default: manual__<logical date>)")
    logical_date: datetime | None = Field(default=None, description="default: now")
    execution_date: datetime | None = Field(
        default=None, description="the older name of logical_date (deprecated by Airflow)")
    conf: dict[str, Any] | None = Field(default=None,
                                        description="JSON object given to the run")
    note: str | None = Field(default=None, description="accepted and not stored")


class UpdateDagRunState(_In):
    state: Literal["success", "failed", "queued"]


class ClearDagRun(_In):
    dry_run: bool = Field(default=True, description="only list what would be cleared")


class ListDagRunsForm(_In):
    order_by: str | None = None
    page_offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    page_limit: int | None = Field(default=None, ge=1,
                                   description="default: [api] page_size")
    dag_ids: list[str] | None = None
    states: list[str] | None = None
    execution_date_gte: datetime | None = None
    execution_date_lte: datetime | None = None
    start_date_gte: datetime | None = None
    start_date_lte: datetime | None = None
    end_date_gte: datetime | None = None
    end_date_lte: datetime | None = None


class ListTaskInstanceForm(_In):
    page_offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    page_limit: int | None = Field(default=None, ge=1,
                                   description="default: [api] page_size")
    dag_ids: list[str] | None = None
    dag_run_ids: list[str] | None = None
    task_ids: list[str] | None = None
    execution_date_gte: datetime | None = None
    execution_date_lte: datetime | None = None
    start_date_gte: datetime | None = None
    start_date_lte: datetime | None = None
    end_date_gte: datetime | None = None
    end_date_lte: datetime | None = None
    duration_gte: float | None = None
    duration_lte: float | None = None
    state: list[str] | None = None
    pool: list[str] | None = None
    queue: list[str] | None = None
    map_index: list[int] | None = Field(
        default=None, description="only these map indexes (-1: not mapped); Squall's, not "
        "in Airflow 2.10's form")


class UpdateTaskInstance(_In):
    dry_run: bool = Field(default=True, description="only say what would change")
    new_state: Literal["success", "failed", "skipped"]


class UpdateTaskInstancesState(_In):
    """``POST /dags/{dag_id}/updateTaskInstancesState``: mark a task instance, of the run
    given by ``dag_run_id`` or ``execution_date``, and the relatives asked for."""

    dry_run: bool = Field(default=True, description="only say what would change")
    task_id: str
    execution_date: datetime | None = Field(default=None,
                                            description="the run's logical date")
    dag_run_id: str | None = None
    include_upstream: bool = False
    include_downstream: bool = False
    include_future: bool = False
    include_past: bool = False
    new_state: Literal["success", "failed", "skipped"]
    map_index: int | None = Field(
        default=None, description="only this instance of a mapped task (its relatives: all "
        "theirs); without it, every instance; Squall's, not in Airflow 2.10's form")


class ClearTaskInstances(_In):
    dry_run: bool = True
    task_ids: list[str | tuple[str, int]] | None = Field(
        default=None, min_length=1, description="task ids (every instance of a mapped task) "
        "and [task_id, map_index] pairs (that instance)")
    start_date: datetime | None = Field(default=None,
                                        description="the earliest logical date to clear")
    end_date: datetime | None = Field(default=None,
                                      description="the latest logical date to clear")
    only_failed: bool = True
    only_running: bool = False
    reset_dag_runs: bool | None = Field(
        default=None, description="accepted; finished runs of cleared task instances are "
        "always queued again")
    dag_run_id: str | None = None
    include_upstream: bool = False
    include_downstream: bool = False
    include_future: bool = False
    include_past: bool = False
    include_subdags: bool | None = Field(
        default=None, description="also clear the task instances of other DAGs that the "
        "ExternalTaskMarkers among the cleared ones mark (as Airflow; no subDAGs)")
    include_parentdag: bool | None = Field(default=None,
                                           description="accepted; no subDAGs")


# --------------------------------------------------------------------------- responses


class TaskInstanceReference(_Out):
    task_id: str
    dag_id: str
    execution_date: str
    dag_run_id: str


class TaskInstanceReferenceCollection(_Out):
    task_instances: list[TaskInstanceReference]


class ExperimentalDagRunState(_Out):
    state: str


class ExperimentalTaskInstance(_Out):
    """A task instance's fields as Airflow 2.0's experimental API gave them: every value a
    string (dates as ``str()`` of the datetime), ``null`` when unset."""

    dag_id: str
    task_id: str
    run_id: str
    execution_date: str | None
    start_date: str | None
    end_date: str | None
    duration: str | None
    state: str | None
    try_number: str
    max_tries: str
    hostname: str | None
    unixname: str | None
    job_id: str | None
    pool: str
    pool_slots: str
    queue: str
    priority_weight: str
    operator: str | None
    queued_dttm: str | None
    queued_by_job_id: str | None
    pid: str | None
    executor_config: str | None
    external_executor_id: str | None
    next_retry_at: str | None
    state_reason: str | None
    updated_at: str | None
