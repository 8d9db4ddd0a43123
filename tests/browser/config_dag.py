"""A DAG for the web UI's details and code pages: a cron schedule, params with defaults and
descriptions, owners, tags, doc_md holding markup, and a real file whose source the code
page shows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from squall.common.db import SessionFactory
from squall.sdk.dag import DAG
from squall.sdk.params import Param
from tests.support.scheduling import Noop, sync_dags

DETAILS_DAG = "ui_details"
DOC_MD = "# Nightly load\n<script>window.__docRan = 1</script> **bold** text"
SOURCE = '''"""ui_details: loads the nightly export."""
from squall.sdk.dag import DAG

with DAG("ui_details", schedule="0 6 * * 1-5") as dag:
    pass  # the marker line: <b>not bold</b>
'''


def add_details_dag(factory: SessionFactory, folder: Path) -> Path:
    """Sync ``ui_details`` with its fileloc a file in ``folder``; that file."""
    path = folder / "ui_details_dag.py"
    path.write_text(SOURCE, encoding="utf-8")
    with DAG(DETAILS_DAG, schedule="0 6 * * 1-5", start_date=datetime(2024, 3, 1, tzinfo=UTC),
             catchup=False, max_active_runs=2, max_active_tasks=5, tags=["nightly", "load"],
             description="Loads the nightly export", doc_md=DOC_MD,
             default_args={"owner": "data-team"},
             params={"batch": Param(500, type="integer", description="Rows per batch"),
                     "target": "warehouse"}) as dag:
        Noop(task_id="load")
    dag.fileloc = str(path)
    sync_dags(factory, dag)
    return path
