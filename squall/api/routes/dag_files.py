"""``/api/v1/dagFiles``: how the last parse of each DAG file went, as ``squall dags report``
shows it (the ``dag_file`` table the DAG processor writes), slowest first by default.

Airflow 2's REST API has no such resource; this one follows its conventions (a
``{"dag_files": [...], "total_entries": N}`` page, ``limit`` / ``offset`` / ``order_by``).
Reading needs the ``viewer`` role.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from squall.api.auth import Viewer
from squall.api.pagination import OrderBy, Paged, order_by, total
from squall.api.schemas import ERRORS
from squall.api.schemas_misc import DagFileCollection
from squall.api.serializers import iso
from squall.api.state import DB
from squall.common.models import DagFile

router = APIRouter(prefix="/api/v1", tags=["DagFile"], responses=ERRORS)

_ORDER = {"fileloc": DagFile.fileloc, "last_duration": DagFile.last_duration,
          "last_parsed_at": DagFile.last_parsed_at, "task_count": DagFile.task_count}


def _dag_file_json(row: DagFile) -> dict[str, Any]:
    return {"fileloc": row.fileloc, "last_parsed_at": iso(row.last_parsed_at) or "",
            "last_duration": row.last_duration, "dag_ids": list(row.dag_ids),
            "dag_count": len(row.dag_ids), "task_count": row.task_count,
            "has_import_error": row.has_import_error}


@router.get("/dagFiles", summary="List the DAG files' last parses",
            response_model=DagFileCollection)
def list_dag_files(pages: Paged, session: DB, user: Viewer,
                   order: OrderBy = None) -> dict[str, Any]:
    stmt = select(DagFile)
    rows = session.scalars(pages.apply(
        order_by(stmt, order, _ORDER, "-last_duration").order_by(DagFile.fileloc)))
    return {"dag_files": [_dag_file_json(r) for r in rows], "total_entries": total(session, stmt)}
