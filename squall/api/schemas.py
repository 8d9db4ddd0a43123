"""The API's response shapes (Airflow 2's OpenAPI schemas, by their names), so that the
served OpenAPI document says exactly what each route answers and FastAPI checks it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from squall.common.state import DagRunType


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
    """A DAG as Airflow 2's API answers it. ``file_token`` is the DAG file's path signed
    with ``[api] secret_key`` (Airflow's is too; Squall serves no ``/dagSources`` to use it
    with yet); ``dag_display_name`` is the DAG's ``dag_display_name`` argument, its id
    when it has none."""

    dag_id: str
    dag_display_name: str
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
    file_token: str
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
    max_consecutive_failed_dag_runs: int | None


class DAGCollection(CollectionInfo):
    dags: list[DAG]


class DAGDetail(DAG):
    """A DAG with the details of its definition (its last serialized form). ``default_view``
    and ``orientation`` are the DAG file's, ``dataset_expression`` a dataset schedule's
    condition (``null`` for other schedules); ``params`` are the DAG's params as Airflow's
    ``Param.dump()``: ``{name: {"__class", "value", "description", "schema"}}``."""

    timezone: str | None
    catchup: bool | None
    orientation: str | None
    concurrency: int | None
    start_date: str | None
    dag_run_timeout: dict[str, Any] | None
    dataset_expression: dict[str, Any] | None
    doc_md: str | None
    params: dict[str, Any]
    end_date: str | None
    is_paused_upon_creation: bool | None
    last_parsed: str | None
    template_search_path: list[str] | None
    render_template_as_native_obj: bool | None


class Task(_Out):
    """A task of a DAG. Airflow's ``sub_dag`` is left out, as Airflow's server leaves it out
    of every task that is not a SubDagOperator (Squall has none)."""

    class_ref: dict[str, Any]
    task_id: str
    task_display_name: str
    owner: str
    start_date: str | None
    end_date: str | None
    trigger_rule: str
    extra_links: list[dict[str, Any]]
    depends_on_past: bool
    wait_for_downstream: bool
    retries: int
    queue: str | None
    executor: str | None
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
    downstream_task_ids: list[str]
    is_mapped: bool
    doc_md: str | None


class TaskCollection(CollectionInfo):
    tasks: list[Task]


class HealthStatus(_Out):
    status: str


class SchedulerStatus(HealthStatus):
    latest_scheduler_heartbeat: str | None


class TriggererStatus(_Out):
    """The most recent triggerer's health; ``status`` is ``null`` when no triggerer ever
    ran, as Airflow's."""

    status: str | None
    latest_triggerer_heartbeat: str | None


class DagProcessorStatus(_Out):
    """The DAG processor runs in the scheduler: ``status`` is ``null``, as Airflow's when
    no standalone DAG processor runs."""

    status: str | None
    latest_dag_processor_heartbeat: str | None


class HealthInfo(_Out):
    metadatabase: HealthStatus
    scheduler: SchedulerStatus
    triggerer: TriggererStatus
    dag_processor: DagProcessorStatus


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
    #: as Airflow's spec: backfill, manual, scheduled, dataset_triggered
    run_type: DagRunType
    state: str
    external_trigger: bool
    conf: dict[str, Any]
    note: str | None
    backfill_id: int | None


class DAGRunCollection(CollectionInfo):
    dag_runs: list[DAGRun]


class SLAMiss(_Out):
    """A task instance's missed SLA (Airflow's ``SLAMiss``)."""

    task_id: str
    dag_id: str
    execution_date: str
    email_sent: bool
    timestamp: str
    description: str | None
    notification_sent: bool


class TaskInstance(_Out):
    """A task instance as Airflow 2's API answers it. ``unixname`` is ``""``: Squall does
    not record the Unix user a try ran as (as ``hostname`` is ``""`` before a try ran).
    ``trigger`` is the trigger a deferred task instance waits on (Airflow's ``Trigger``
    shape), ``triggerer_job`` the triggerer's job row holding it (``Job``), else ``null``;
    ``executor`` is ``null`` (the deployment's one executor)."""

    task_id: str
    task_display_name: str
    dag_id: str
    dag_run_id: str
    execution_date: str
    start_date: str | None
    end_date: str | None
    duration: float | None
    state: str | None
    try_number: int
    map_index: int
    max_tries: int
    hostname: str
    unixname: str
    pool: str
    pool_slots: int
    queue: str | None
    priority_weight: int | None
    operator: str | None
    queued_when: str | None
    pid: int | None
    executor: str | None
    executor_config: str
    sla_miss: SLAMiss | None
    rendered_map_index: str | None
    rendered_fields: dict[str, Any]
    trigger: dict[str, Any] | None
    triggerer_job: dict[str, Any] | None
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
