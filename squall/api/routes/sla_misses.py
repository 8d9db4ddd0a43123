"""``/api/v1/dags/{dag_id}/slaMisses``: the SLA misses the DAG processor recorded for a DAG
(:mod:`squall.scheduler.sla`), latest first; ``~`` as the DAG id lists every DAG's.

Airflow 2's REST API has no SLA resource; this one follows its conventions (a
``{"sla_misses": [...], "total_entries": N}`` page, ``limit`` / ``offset`` / ``order_by``)
and the fields of its ``sla_miss`` table. Reading needs the ``viewer`` role.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from squall.api.auth import Viewer
from squall.api.pagination import OrderBy, Paged, order_by, total
from squall.api.problems import not_found
from squall.api.schemas import ERRORS
from squall.api.schemas_secrets import SlaMissCollection
from squall.api.state import DB
from squall.common.models import DagModel, SlaMiss
from squall.runs.sla_misses import sla_miss_dict

router = APIRouter(prefix="/api/v1", tags=["SlaMiss"], responses=ERRORS)

_ORDER = {"execution_date": SlaMiss.execution_date, "task_id": SlaMiss.task_id,
          "dag_id": SlaMiss.dag_id, "timestamp": SlaMiss.timestamp,
          "deadline": SlaMiss.deadline}


@router.get("/dags/{dag_id}/slaMisses", summary="List a DAG's SLA misses",
            response_model=SlaMissCollection)
def list_sla_misses(dag_id: str, pages: Paged, session: DB, user: Viewer,
                    order: OrderBy = None) -> dict[str, Any]:
    stmt = select(SlaMiss)
    if dag_id != "~":
        if session.get(DagModel, dag_id) is None:
            raise not_found(f"DAG with dag_id: '{dag_id}' not found")
        stmt = stmt.where(SlaMiss.dag_id == dag_id)
    rows = session.scalars(pages.apply(
        order_by(stmt, order, _ORDER, "-execution_date").order_by(SlaMiss.dag_id,
                                                                   SlaMiss.task_id)))
    return {"sla_misses": [sla_miss_dict(r) for r in rows],
            "total_entries": total(session, stmt)}
