"""Reading the ``job`` rows: which schedulers (and workers) are alive. The scheduler writes
its row (:class:`squall.scheduler.job.SchedulerJob`, the worker its own in
:mod:`squall.worker.worker_job`); the health checks read them here: the API's
``/health`` and ``/metrics``, ``squall jobs check`` and a backfill that waits for a
scheduler. A triggerer writes its own (:class:`squall.triggerer.job.TriggererJob`).

A job is alive while its row is ``running`` with a heartbeat within ``[scheduler]
scheduler_health_check_threshold`` seconds.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from squall.common.models import Job
from squall.common.state import JobState

#: the ``job_type`` of a scheduler's row
SCHEDULER_JOB_TYPE = "SchedulerJob"
#: the ``job_type`` of a triggerer's row (``squall triggerer``), as Airflow names it
TRIGGERER_JOB_TYPE = "TriggererJob"


def alive_job_hostnames(session: Session, job_type: str, *, now: datetime,
                        threshold: float) -> list[str | None]:
    """The ``hostname`` of each alive job of ``job_type``, the latest heartbeat first."""
    since = now - timedelta(seconds=threshold)
    return list(session.scalars(
        select(Job.hostname)
        .where(Job.job_type == job_type, Job.state == JobState.RUNNING.value,
               Job.latest_heartbeat >= since)
        .order_by(Job.latest_heartbeat.desc(), Job.id.desc())).all())


def scheduler_alive(session: Session, *, now: datetime, threshold: float) -> bool:
    """Whether a scheduler's ``job`` row is running with a heartbeat in the last
    ``threshold`` seconds (``[scheduler] scheduler_health_check_threshold``)."""
    since = now - timedelta(seconds=threshold)
    return session.scalar(
        select(func.count()).select_from(Job)
        .where(Job.job_type == SCHEDULER_JOB_TYPE, Job.state == JobState.RUNNING.value,
               Job.latest_heartbeat >= since)
    ) != 0


def latest_scheduler_heartbeat(session: Session, *,
                               running_only: bool = False) -> datetime | None:
    """The newest heartbeat of any scheduler (``running_only``: of a running one)."""
    stmt = select(func.max(Job.latest_heartbeat)).where(Job.job_type == SCHEDULER_JOB_TYPE)
    if running_only:
        stmt = stmt.where(Job.state == JobState.RUNNING.value)
    return session.scalar(stmt)


def most_recent_job(session: Session, job_type: str) -> Job | None:
    """The most recent job of ``job_type``: running ones first, then the latest heartbeat
    (Airflow's ``jobs.job.most_recent_job``); None when none ever ran."""
    return session.scalars(
        select(Job).where(Job.job_type == job_type)
        .order_by(case((Job.state == JobState.RUNNING.value, 0), else_=1),
                  Job.latest_heartbeat.desc(), Job.id.desc())
        .limit(1)).first()


def job_alive(job: Job, *, now: datetime, threshold: float) -> bool:
    """Running, with a heartbeat within ``threshold`` seconds (Airflow's ``Job.is_alive``)."""
    return (job.state == JobState.RUNNING.value and job.latest_heartbeat is not None
            and (now - job.latest_heartbeat).total_seconds() <= threshold)
