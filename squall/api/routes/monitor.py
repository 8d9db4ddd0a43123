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
from squall.runs.jobs import latest_scheduler_heartbeat

router = APIRouter(prefix="/api/v1", tags=["Monitoring"])

#: what Airflow answers for a component that does not run: Squall has no triggerer, and its
#: DAG processor runs inside the scheduler
_NOT_RUN: dict[str, Any] = {
    "triggerer": {"status": None, "latest_triggerer_heartbeat": None},
    "dag_processor": {"status": None, "latest_dag_processor_heartbeat": None},
}


@router.get("/health", summary="Health of the metadatabase and the scheduler",
            response_model=HealthInfo)
def health(request: Request) -> dict[str, Any]:
    """``metadatabase.status`` is ``healthy`` when a query answers; ``scheduler.status`` is
    ``healthy`` when a scheduler job heartbeated within ``[scheduler]
    scheduler_health_check_threshold``."""
    state = api_state(request)
    threshold = state.settings.scheduler.scheduler_health_check_threshold
    try:
        with session_scope(state.session_factory) as session:
            session.execute(text("SELECT 1"))
            latest = latest_scheduler_heartbeat(session, running_only=True)
    except SQLAlchemyError:
        return {"metadatabase": {"status": "unhealthy"},
                "scheduler": {"status": "unhealthy", "latest_scheduler_heartbeat": None},
                **_NOT_RUN}
    alive = latest is not None and (utcnow() - latest).total_seconds() <= threshold
    return {"metadatabase": {"status": "healthy"},
            "scheduler": {"status": "healthy" if alive else "unhealthy",
                          "latest_scheduler_heartbeat": iso(latest)},
            **_NOT_RUN}


@router.get("/version", summary="Squall's version", response_model=VersionInfo,
            responses=ERRORS)
def version(request: Request, user: Viewer) -> dict[str, Any]:
    return {"version": request.app.version, "git_version": None}
