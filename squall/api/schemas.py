"""The API's response shapes (Airflow 2's OpenAPI schemas, by their names), so that the
served OpenAPI document says exactly what each route answers and FastAPI checks it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Error(_Out):
    """Airflow's problem body (RFC 7807)."""

    type: str
    title: str
    status: int
    detail: Any = None
    instance: str | None = None


class CollectionInfo(_Out):
    total_entries: int


class Tag(_Out):
    name: str


class DAG(_Out):
    dag_id: str
    root_dag_id: str | None
    is_paused: bool | None
    is_active: bool | None
    is_subdag: bool
    last_parsed_time: str | None
    last_pickled: str | None
    last_expired: str | None
    scheduler_lock: bool | None
    pickle_id: str | None
    default_view: str | None
    fileloc: str
    file_token: str | None
    owners: list[str]
    description: str | None
    schedule_interval: dict[str, Any] | None
    timetable_description: str | None
    tags: list[Tag] | None
    max_active_tasks: int | None
    max_active_runs: int | None
    has_task_concurrency_limits: bool | None
    has_import_errors: bool | None
    next_dagrun: str | None
    next_dagrun_data_interval_start: str | None
    next_dagrun_data_interval_end: str | None
    next_dagrun_create_after: str | None


class DAGCollection(CollectionInfo):
    dags: list[DAG]


class Task(_Out):
    class_ref: dict[str, Any]
    task_id: str
    owner: str | None
    start_date: str | None
    end_date: str | None
    trigger_rule: str
    extra_links: list[dict[str, Any]]
    depends_on_past: bool
    wait_for_downstream: bool
    retries: int
    queue: str | None
    pool: str
    pool_slots: int
    execution_timeout: dict[str, Any] | None
    retry_delay: dict[str, Any] | None
    retry_exponential_backoff: bool
    priority_weight: int
    weight_rule: str
    ui_color: str
    ui_fgcolor: str
    template_fields: list[str]
    sub_dag: Any
    downstream_task_ids: list[str]
    is_mapped: bool


class TaskCollection(CollectionInfo):
    tasks: list[Task]


class HealthStatus(_Out):
    status: str


class SchedulerStatus(HealthStatus):
    latest_scheduler_heartbeat: str | None


class HealthInfo(_Out):
    metadatabase: HealthStatus
    scheduler: SchedulerStatus


class VersionInfo(_Out):
    version: str
    git_version: str | None


class DAGRun(_Out):
    dag_run_id: str
    dag_id: str
    logical_date: str | None
    execution_date: str | None
    start_date: str | None
    end_date: str | None
    data_interval_start: str | None
    data_interval_end: str | None
    last_scheduling_decision: str | None
    run_type: str
    state: str
    external_trigger: bool
    conf: dict[str, Any]
    note: str | None
    backfill_id: int | None


class DAGRunCollection(CollectionInfo):
    dag_runs: list[DAGRun]


class TaskInstance(_Out):
    task_id: str
    dag_id: str
    dag_run_id: str
    execution_date: str | None
    start_date: str | None
    end_date: str | None
    duration: float | None
    state: str | None
    try_number: int
    map_index: int
    max_tries: int
    hostname: str
    unixname: str | None
    pool: str
    pool_slots: int
    queue: str | None
    priority_weight: int | None
    operator: str | None
    queued_when: str | None
    pid: int | None
    executor_config: str
    sla_miss: Any
    rendered_fields: dict[str, Any]
    trigger: Any
    triggerer_job: Any
    note: str | None
    state_reason: str | None


class TaskInstanceCollection(CollectionInfo):
    task_instances: list[TaskInstance]


#: ``responses=`` for every route that needs credentials: the problem bodies it may answer
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Error, "description": "bad request"},
    401: {"model": Error, "description": "no or wrong credentials"},
    403: {"model": Error, "description": "the user's role may not do this"},
    404: {"model": Error, "description": "not found"},
}
