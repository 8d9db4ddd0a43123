"""Rows as Airflow 2's REST API shapes them (field names and JSON types of its OpenAPI
spec); dates are ISO 8601 with their UTC offset."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from squall.common.errors import SerializationError
from squall.common.models import (
    DagModel,
    DagRun,
    Job,
    SerializedDagModel,
    SlaMiss,
    TaskInstance,
    Trigger,
)
from squall.sdk.triggers import serde
from squall.worker.log_signing import seal

#: the purpose of a DAG's ``file_token`` (its file's path, signed as Airflow signs it)
DAG_FILE_TOKEN = "dag-file-token"


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def file_token(secret_key: str, fileloc: str) -> str:
    """``fileloc`` signed with the API's secret key: Airflow's ``file_token``, a name for a
    DAG file that does not let a client name another."""
    return seal(secret_key, DAG_FILE_TOKEN, {"fileloc": fileloc})


def schedule_interval(schedule: str | None) -> dict[str, Any] | None:
    if schedule is None or schedule in ("None", ""):
        return None
    return {"__type": "CronExpression", "value": schedule}


def dag_display_names(session: Session, dag_ids: list[str]) -> dict[str, str]:
    """The ``dag_display_name`` of each DAG of ``dag_ids`` that has one (read from its
    serialized form, one query; a DAG without is left out and shows its id)."""
    if not dag_ids:
        return {}
    name = SerializedDagModel.data[("dag", "dag_display_name")].as_string()
    rows = session.execute(select(SerializedDagModel.dag_id, name)
                           .where(SerializedDagModel.dag_id.in_(dag_ids)))
    return {dag_id: shown for dag_id, shown in rows if shown}


def task_display_names(session: Session, dag_ids: list[str]) -> dict[tuple[str, str], str]:
    """The ``task_display_name`` of each task of these DAGs that has one other than its id,
    by (dag_id, task_id), from the serialized DAGs (one query)."""
    if not dag_ids:
        return {}
    tasks = SerializedDagModel.data[("dag", "tasks")]
    out: dict[tuple[str, str], str] = {}
    for dag_id, rows in session.execute(select(SerializedDagModel.dag_id, tasks)
                                        .where(SerializedDagModel.dag_id.in_(dag_ids))):
        for task in rows or []:
            name = task.get("task_display_name")
            if name and name != task.get("task_id"):
                out[(dag_id, task["task_id"])] = name
    return out


def dag_json(dag: DagModel, secret_key: str, display_name: str | None = None,
             ) -> dict[str, Any]:
    """``display_name``: the DAG's ``dag_display_name`` (its id when None)."""
    return {
        "dag_id": dag.dag_id, "dag_display_name": display_name or dag.dag_id,
        "root_dag_id": None,
        "is_paused": dag.is_paused, "is_active": dag.is_active, "is_subdag": False,
        "last_parsed_time": iso(dag.last_parsed_time), "last_pickled": None,
        "last_expired": None, "scheduler_lock": None, "pickle_id": None,
        "default_view": "grid", "fileloc": dag.fileloc,
        "file_token": file_token(secret_key, dag.fileloc),
        "owners": [o.strip() for o in (dag.owners or "").split(",") if o.strip()],
        "description": dag.description,
        "schedule_interval": schedule_interval(dag.schedule),
        "timetable_description": dag.timetable_description,
        "tags": [{"name": t} for t in (dag.tags or [])],
        "max_active_tasks": dag.max_active_tasks, "max_active_runs": dag.max_active_runs,
        "has_task_concurrency_limits": False, "has_import_errors": dag.has_import_errors,
        "next_dagrun": iso(dag.next_dagrun),
        "next_dagrun_data_interval_start": iso(dag.next_dagrun_data_interval_start),
        "next_dagrun_data_interval_end": iso(dag.next_dagrun_data_interval_end),
        "next_dagrun_create_after": iso(dag.next_dagrun_create_after),
        # Squall does not pause a DAG after failed runs: 0, as Airflow's default
        "max_consecutive_failed_dag_runs": 0,
    }


def dag_run_json(run: DagRun) -> dict[str, Any]:
    return {
        "dag_run_id": run.run_id, "dag_id": run.dag_id,
        "logical_date": iso(run.logical_date), "execution_date": iso(run.logical_date),
        "start_date": iso(run.start_date), "end_date": iso(run.end_date),
        "data_interval_start": iso(run.data_interval_start),
        "data_interval_end": iso(run.data_interval_end),
        "last_scheduling_decision": iso(run.last_scheduling_decision),
        "run_type": run.run_type, "state": run.state,
        "external_trigger": run.external_trigger, "conf": run.conf or {}, "note": None,
        "backfill_id": run.backfill_id,
    }


def sla_miss_json(miss: SlaMiss | None) -> dict[str, Any] | None:
    if miss is None:
        return None
    return {"task_id": miss.task_id, "dag_id": miss.dag_id,
            "execution_date": miss.execution_date.isoformat(), "email_sent": miss.email_sent,
            "timestamp": miss.timestamp.isoformat(), "description": miss.description,
            "notification_sent": miss.notification_sent}


def trigger_json(trigger: Trigger | None) -> dict[str, Any] | None:
    """Airflow's ``TriggerSchema``: ``kwargs`` is the text of the trigger's arguments
    (``str(trigger.kwargs)``, as Airflow shows them)."""
    if trigger is None:
        return None
    try:
        kwargs = str(serde.loads(trigger.kwargs))
    except (SerializationError, ValueError):
        kwargs = trigger.kwargs
    return {"id": trigger.id, "classpath": trigger.classpath, "kwargs": kwargs,
            "created_date": iso(trigger.created_date), "triggerer_id": trigger.triggerer_id}


def job_json(job: Job | None) -> dict[str, Any] | None:
    """Airflow's ``JobSchema``."""
    if job is None:
        return None
    return {"id": job.id, "dag_id": job.dag_id, "state": job.state, "job_type": job.job_type,
            "start_date": iso(job.start_date), "end_date": iso(job.end_date),
            "latest_heartbeat": iso(job.latest_heartbeat), "executor_class": None,
            "hostname": job.hostname, "unixname": None}


def triggers_of(session: Session, tis: list[TaskInstance]
                ) -> dict[int, tuple[Trigger, Job | None]]:
    """The trigger rows (with the triggerer job holding each, if any) the deferred ones of
    ``tis`` wait on, by trigger id (one query)."""
    ids = sorted({ti.trigger_id for ti in tis if ti.trigger_id is not None})
    if not ids:
        return {}
    rows = session.execute(select(Trigger, Job).outerjoin(Job, Job.id == Trigger.triggerer_id)
                           .where(Trigger.id.in_(ids))).all()
    return {trigger.id: (trigger, job) for trigger, job in rows}


def task_instance_json(ti: TaskInstance, run: DagRun, sla_miss: SlaMiss | None = None,
                       display_name: str | None = None,
                       trigger: tuple[Trigger, Job | None] | None = None) -> dict[str, Any]:
    """``sla_miss``: the task instance's missed SLA, if it has one; ``display_name``: its
    task's ``task_display_name`` (the task id when None); ``trigger``: the trigger it waits
    on (deferred) with the triggerer job that holds it (:func:`triggers_of`)."""
    held, triggerer = trigger if trigger is not None else (None, None)
    return {
        "task_id": ti.task_id, "task_display_name": display_name or ti.task_id,
        "dag_id": ti.dag_id,
        "dag_run_id": ti.run_id, "execution_date": run.logical_date.isoformat(),
        "start_date": iso(ti.start_date), "end_date": iso(ti.end_date),
        "duration": ti.duration, "state": None if ti.state == "none" else ti.state,
        "try_number": ti.try_number,
        "map_index": ti.map_index, "max_tries": ti.max_tries, "hostname": ti.hostname or "",
        "unixname": "", "pool": ti.pool, "pool_slots": ti.pool_slots, "queue": ti.queue,
        "priority_weight": ti.priority_weight, "operator": ti.operator,
        "queued_when": iso(ti.queued_dttm), "pid": ti.pid, "executor": None,
        "executor_config": str(ti.executor_config or {}), "sla_miss": sla_miss_json(sla_miss),
        "rendered_map_index": None, "rendered_fields": {}, "trigger": trigger_json(held),
        "triggerer_job": job_json(triggerer), "note": None,
        "state_reason": ti.state_reason,
    }
