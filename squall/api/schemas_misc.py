"""Response and request shapes of the pools, importErrors, backfills and dagFiles routes:
Airflow 2's ``Pool`` and ``ImportError`` schemas by their names, and Squall's own ``Backfill``
(Airflow 2 has no backfill resource; the field names follow Airflow 3's where it has one) and
``DagFile`` (a DAG file's last parse, as ``squall dags report``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from squall.api.schemas import CollectionInfo, Error


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Pool(_Out):
    """A pool and the slots its task instances hold. ``open_slots`` is -1 for an
    unlimited pool (``slots`` -1: JSON has no infinity, which Airflow's server answers as
    the invalid JSON ``Infinity``); ``deferred_slots`` are the slots of its deferred task
    instances, which hold none of it (``include_deferred`` is always false)."""

    name: str
    slots: int
    occupied_slots: int
    running_slots: int
    queued_slots: int
    scheduled_slots: int
    open_slots: int
    deferred_slots: int
    description: str | None
    include_deferred: bool


class PoolCollection(CollectionInfo):
    pools: list[Pool]


class ImportError(_Out):  # Airflow's schema name (shadows the builtin here only)
    import_error_id: int
    timestamp: str
    filename: str
    stack_trace: str


class ImportErrorCollection(CollectionInfo):
    import_errors: list[ImportError]


class DagFile(_Out):
    """How the last parse of a DAG file went (``squall dags report``): seconds the parse took
    to import the file and serialize its DAGs, the DAGs it defines and their tasks."""

    fileloc: str
    last_parsed_at: str
    last_duration: float
    dag_ids: list[str]
    dag_count: int
    task_count: int
    has_import_error: bool


class DagFileCollection(CollectionInfo):
    dag_files: list[DagFile]


class Backfill(_Out):
    """A backfill request as recorded (``squall dags backfill``)."""

    id: int
    dag_id: str
    from_date: str
    to_date: str
    run_backwards: bool
    max_active_runs: int
    dag_run_conf: dict[str, Any] | None
    options: dict[str, Any]
    state: str
    total_runs: int
    created_at: str
    completed_at: str | None
    reason: str | None


class BackfillCollection(CollectionInfo):
    backfills: list[Backfill]


class BackfillDetail(Backfill):
    """A backfill with its progress."""

    runs_finished: int
    runs_by_state: dict[str, int]
    task_instances_by_state: dict[str, int]
    failed_runs: list[str]
    deadlocked: bool
    #: its unfinished runs; once it ended, those it left that no backfill follows
    unfinished_runs: list[str]
    #: once it ended with runs unfinished: the ``squall dags backfill`` that resumes them
    resume_command: str | None
    #: once it ended: the runs of its range by state, whichever backfill made them
    range_runs_by_state: dict[str, int]


class BackfillCancelled(BackfillDetail):
    #: the runs the cancel ended (``end_running``)
    ended_runs: list[str]


class BackfillCreated(BackfillDetail):
    #: the runs the scheduler creates, in the order it creates them
    planned_runs: list[str]
    #: existing runs of the range that join the backfill (their task instances cleared)
    rerun: list[str]
    #: unfinished runs of the range nothing drove (their backfill ended, or their DAG is
    #: paused) that join the backfill as they are
    taken_in: list[str]
    #: existing runs of the range left alone
    existing: list[str]


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    end_running: bool = Field(
        default=False, description="also end the backfill's unfinished runs now: running "
        "task instances failed, the others skipped, the runs failed")


class BackfillBody(BaseModel):
    """``POST /api/v1/backfills``: the options of ``squall dags backfill``."""

    model_config = ConfigDict(extra="forbid")

    dag_id: str
    from_date: str = Field(description="first logical date (ISO 8601; without an offset, "
                           "a wall time in [core] default_timezone)")
    to_date: str = Field(description="last logical date (both ends included)")
    run_backwards: bool = False
    max_active_runs: int | None = Field(default=None, description="at least 1; default: "
                                        "the DAG's max_active_runs")
    dag_run_conf: dict[str, Any] | None = None
    task_regex: str | None = None
    ignore_dependencies: bool = False
    ignore_first_depends_on_past: bool = False
    mark_success: bool = False
    pool: str | None = None
    delay_on_limit: float = Field(default=0.0, description="seconds, at least 0")
    rerun_failed_tasks: bool = False
    reset_dagruns: bool = False


#: ``responses=`` addition for the routes that answer 409
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": Error, "description": "conflicts with what exists"},
}
