"""``/api/v1/health`` (no credentials, as Airflow's) and ``/api/v1/version``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from squall.api.auth import Viewer
from squall.api.schemas import ERRORS, HealthInfo, VersionInfo
from squall.api.serializers import iso
from squall.api.state import api_state
from squall.common.db import session_scope
from squall.common.models import utcnow
from squall.runs.jobs import (
    TRIGGERER_JOB_TYPE,
    job_alive,
    latest_scheduler_heartbeat,
    most_recent_job,
)

router = APIRouter(prefix="/api/v1", tags=["Monitoring"])

#: what Airflow answers for a component that does not run: Squall's DAG processor runs
#: inside the scheduler
_NOT_RUN: dict[str, Any] = {
    "dag_processor": {"status": None, "latest_dag_processor_heartbeat": None},
}


@router.get("/health", summary="Health of the metadatabase and the scheduler",
            response_model=HealthInfo)
def health(request: Request) -> dict[str, Any]:
    """``metadatabase.status`` is ``healthy`` when a query answers; ``scheduler.status`` is
    ``healthy`` when a scheduler job heartbeated within ``[scheduler]
    scheduler_health_check_threshold``; ``triggerer.status`` is that of the most recent
    triggerer job (``healthy`` when it runs with a heartbeat within ``[triggerer]
    triggerer_health_check_threshold``), ``null`` when no triggerer ever ran (Airflow's
    ``get_airflow_health``)."""
    state = api_state(request)
    threshold = state.settings.scheduler.scheduler_health_check_threshold
    now = utcnow()
    try:
        with session_scope(state.session_factory) as session:
            session.execute(text("SELECT 1"))
            latest = latest_scheduler_heartbeat(session, running_only=True)
            triggerer = most_recent_job(session, TRIGGERER_JOB_TYPE)
    except SQLAlchemyError:
        return {"metadatabase": {"status": "unhealthy"},
                "scheduler": {"status": "unhealthy", "latest_scheduler_heartbeat": None},
                "triggerer": {"status": "unhealthy", "latest_triggerer_heartbeat": None},
                **_NOT_RUN}
    alive = latest is not None and (now - latest).total_seconds() <= threshold
    triggerer_status: dict[str, Any] = {"status": None, "latest_triggerer_heartbeat": None}
    if triggerer is not None:
        healthy = job_alive(triggerer, now=now, threshold=state.settings.triggerer
                            .triggerer_health_check_threshold)
        triggerer_status = {"status": "healthy" if healthy else "unhealthy",
                            "latest_triggerer_heartbeat": iso(triggerer.latest_heartbeat)}
    return {"metadatabase": {"status": "healthy"},
            "scheduler": {"status": "healthy" if alive else "unhealthy",
                          "latest_scheduler_heartbeat": iso(latest)},
            "triggerer": triggerer_status,
            **_NOT_RUN}


@router.get("/version", summary="Squall's version", response_model=VersionInfo,
            responses=ERRORS)
def version(request: Request, user: Viewer) -> dict[str, Any]:
    return {"version": request.app.version, "git_version": None}
