"""The web UI's DAG details and code (Airflow's Details and Code tabs):
``GET /ui/api/dags/{dag_id}/details`` and ``GET /ui/api/dags/{dag_id}/code`` (viewer).

The details are the REST API's ``/api/v1/dags/{dag_id}/details``
(:func:`squall.api.routes.dags.get_dag_details`) with what the page shows beside them: the
dataset schedule as stored (a bare URI too), and the params' defaults and descriptions.
Squall keeps no copy of a DAG file's source in the database (Airflow's ``dag_code`` table):
the code is read from the DAG's ``fileloc`` by the API process, so it must see the DAGs
folder (as the scheduler does)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request

from squall.api.auth import Viewer
from squall.api.problems import not_found
from squall.api.routes.dags import get_dag_details
from squall.api.state import DB
from squall.api.ui.data import dag_row

log = logging.getLogger(__name__)

router = APIRouter(prefix="/ui/api", include_in_schema=False)

#: a DAG file larger than this is not shown (bytes)
MAX_SOURCE = 2 * 1024 * 1024


@router.get("/dags/{dag_id}/details")
def details(dag_id: str, request: Request, session: DB, user: Viewer) -> dict[str, Any]:
    row = dag_row(session, dag_id)
    out = get_dag_details(dag_id, request, session, user)
    params = [{"name": name, "default": p.get("value"), "description": p.get("description"),
               "schema": p.get("schema") or {}}
              for name, p in (out.get("params") or {}).items()]
    return {**out, "schedule": row.schedule, "dataset_schedule": row.dataset_expression,
            "param_list": params}


def read_source(fileloc: str) -> str:
    """The text of a DAG file; a 404 saying why when it cannot be read here."""
    path = Path(fileloc)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise OSError("not a regular file")
        if size > MAX_SOURCE:
            raise not_found(f"{fileloc} is {size} bytes, more than the {MAX_SOURCE} this page "
                            "shows")
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        log.info("ui: cannot read DAG file %s: %s", fileloc, exc)
        raise not_found(f"the DAG file {fileloc} cannot be read by the API server "
                        f"({exc.strerror or exc}): it reads the code from the DAGs folder, "
                        "which it must see as the scheduler does") from None


@router.get("/dags/{dag_id}/code")
def code(dag_id: str, session: DB, user: Viewer) -> dict[str, Any]:
    row = dag_row(session, dag_id)
    source = read_source(row.fileloc)
    return {"dag_id": dag_id, "fileloc": row.fileloc, "source": source,
            "lines": len(source.splitlines())}
