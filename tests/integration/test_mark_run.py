"""Marking a whole run failed has one rule (squall.runs.mark_run), whichever way it is
asked for: through the REST API, or by cancelling a backfill with ``end_running``. Both on
a real PostgreSQL, through a real uvicorn."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, update

from squall.common.db import SessionFactory, session_scope
from squall.common.models import Backfill, DagRun, TaskInstance
from squall.common.settings import Settings
from squall.common.state import BackfillState, DagRunState, DagRunType, TaskInstanceState
from squall.runs.run_creation import create_dag_run
from squall.sdk.dag import DAG
from tests.support.api import serve
from tests.support.scheduling import Noop, sync_dags

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("db_url", ["postgres"],
                                                           indirect=True)]

TI = TaskInstanceState
NOW = datetime(2024, 2, 10, 12, tzinfo=UTC)
DAYS = [datetime(2024, 2, d, tzinfo=UTC) for d in (1, 2)]
#: a task per state a task instance of an unfinished run may be in
STATES = [TI.NONE, TI.SCHEDULED, TI.QUEUED, TI.RUNNING, TI.RESTARTING, TI.UP_FOR_RETRY,
          TI.UP_FOR_RESCHEDULE, TI.SUCCESS, TI.FAILED, TI.UPSTREAM_FAILED]


def every_state_dag() -> DAG:
    with DAG("every_state", schedule="@daily", start_date=datetime(2024, 1, 1, tzinfo=UTC),
             catchup=False) as dag:
        for state in STATES:
            Noop(task_id=f"t_{state.value}")
    return dag


def run_in_every_state(sf: SessionFactory, dag: DAG, day: datetime,
                       backfill_id: int | None = None) -> str:
    """A running run of ``dag`` whose task ``t_<state>`` is in ``<state>``."""
    with session_scope(sf) as session:
        run = create_dag_run(session, dag, run_type=DagRunType.BACKFILL if backfill_id
                             else DagRunType.SCHEDULED, logical_date=day, data_interval=None,
                             state=DagRunState.RUNNING, now=NOW)
        run.backfill_id = backfill_id
        for state in STATES:
            session.execute(update(TaskInstance).where(
                TaskInstance.run_id == run.run_id, TaskInstance.task_id == f"t_{state.value}",
            ).values(state=state.value, try_number=1))
        return run.run_id


def states(sf: SessionFactory, run_id: str) -> dict[str, str]:
    with session_scope(sf) as session:
        return dict(session.execute(select(TaskInstance.task_id, TaskInstance.state)
                                    .where(TaskInstance.run_id == run_id)).all())


def test_a_cancelled_backfill_and_the_api_fail_a_run_alike(
        tmp_path: Path, session_factory: SessionFactory) -> None:
    dag = every_state_dag()
    sync_dags(session_factory, dag, now=NOW)
    with session_scope(session_factory) as session:
        backfill = Backfill(dag_id=dag.dag_id, from_date=DAYS[0], to_date=DAYS[0],
                            max_active_runs=1, state=BackfillState.RUNNING, total_runs=1)
        session.add(backfill)
        session.flush()
        backfill_id = backfill.id
    in_backfill = run_in_every_state(session_factory, dag, DAYS[0], backfill_id)
    plain = run_in_every_state(session_factory, dag, DAYS[1])
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)})
    with serve(settings, session_factory) as api:
        cancelled = api.post(f"/api/v1/backfills/{backfill_id}/cancel", user="op",
                             json={"end_running": True})
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["ended_runs"] == [in_backfill]
        marked = api.patch(f"/api/v1/dags/{dag.dag_id}/dagRuns/{plain}", user="op",
                           json={"state": "failed"})
        assert marked.status_code == 200, marked.text
    # Airflow 2's set_dag_run_state_to_failed: the tries under way fail, the rest of the
    # unfinished task instances are skipped, the finished ones stay
    expected = {"t_none": "skipped", "t_scheduled": "skipped", "t_queued": "skipped",
                "t_running": "failed", "t_restarting": "skipped",
                "t_up_for_retry": "skipped", "t_up_for_reschedule": "failed",
                "t_success": "success", "t_failed": "failed",
                "t_upstream_failed": "upstream_failed"}
    assert states(session_factory, plain) == expected
    assert states(session_factory, in_backfill) == expected
    with session_scope(session_factory) as session:
        assert {r: s for r, s in session.execute(select(DagRun.run_id, DagRun.state))} == {
            in_backfill: "failed", plain: "failed"}
