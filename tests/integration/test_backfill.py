"""Backfill planning and the backfill row (squall.scheduler.backfill) on SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from squall.common.db import SessionFactory
from squall.common.errors import BackfillError
from squall.common.models import Backfill, DagModel
from squall.common.state import BackfillState, DagRunState, DagRunType
from squall.scheduler.backfill import create_backfill, plan_backfill, range_run_infos
from squall.scheduler.run_creation import create_dag_run
from squall.sdk.dag import DAG
from squall.sdk.operators.base import BaseOperator, Context

START = datetime(2024, 1, 1, tzinfo=UTC)


class Noop(BaseOperator):
    def execute(self, context: Context) -> Any:
        return None


def daily_dag(dag_id: str = "bf", **task_kwargs: Any) -> DAG:
    with DAG(dag_id, schedule="@daily", start_date=START) as dag:
        Noop(task_id="a", **task_kwargs) >> Noop(task_id="b")
    return dag


def day(n: int) -> datetime:
    return START + timedelta(days=n - 1)


def test_range_is_the_schedule_ticks_both_ends_included() -> None:
    infos = range_run_infos(daily_dag(), day(1), day(10))
    assert [i.logical_date for i in infos] == [day(n) for n in range(1, 11)]
    assert infos[0].data_interval.end == day(2)
    # bounds between ticks: the ticks inside the range
    infos = range_run_infos(daily_dag(), day(1) + timedelta(hours=1), day(3) + timedelta(hours=1))
    assert [i.logical_date for i in infos] == [day(2), day(3)]


def test_range_errors() -> None:
    with pytest.raises(BackfillError, match="is after the end"):
        range_run_infos(daily_dag(), day(5), day(1))
    with DAG("manual_only", schedule=None, start_date=START) as dag:
        Noop(task_id="a")
    with pytest.raises(BackfillError, match="no periodic schedule"):
        range_run_infos(dag, day(1), day(3))


def test_plan_leaves_existing_runs_alone(session_factory: SessionFactory) -> None:
    dag = daily_dag()
    with session_factory() as session:
        session.add(DagModel(dag_id=dag.dag_id, fileloc=dag.fileloc))
        session.flush()
        create_dag_run(session, dag, run_type=DagRunType.MANUAL, logical_date=day(3),
                       data_interval=None, run_id="by_hand", state=DagRunState.SUCCESS)
        session.commit()
        plan = plan_backfill(session, dag, day(1), day(5))
    assert [r.run_id for r in plan.runs] == [
        f"backfill__{day(n).isoformat()}" for n in (1, 2, 4, 5)]
    assert [r.logical_date for r in plan.runs] == [day(1), day(2), day(4), day(5)]
    [existing] = plan.existing
    assert (existing.run_id, existing.run_type, existing.state) == (
        "by_hand", "manual", "success")
    assert existing.logical_date == day(3)


def test_plan_backwards_is_newest_first(session_factory: SessionFactory) -> None:
    with session_factory() as session:
        plan = plan_backfill(session, daily_dag(), day(1), day(4), run_backwards=True)
    assert [r.logical_date for r in plan.runs] == [day(4), day(3), day(2), day(1)]


def test_backwards_with_depends_on_past_is_refused(session_factory: SessionFactory) -> None:
    dag = daily_dag(depends_on_past=True)
    with session_factory() as session:
        with pytest.raises(BackfillError, match=r"backwards.*depends_on_past.*: a"):
            plan_backfill(session, dag, day(1), day(4), run_backwards=True)
        assert len(plan_backfill(session, dag, day(1), day(4)).runs) == 4


def test_create_backfill_row(session_factory: SessionFactory) -> None:
    dag = daily_dag()
    with session_factory() as session:
        plan = plan_backfill(session, dag, day(1), day(3), run_backwards=True)
        row = create_backfill(session, plan, max_active_runs=2, conf={"x": 1},
                              options={"task_regex": "^a$"})
        session.commit()
        backfill_id = row.id
    with session_factory() as session:
        row = session.scalars(select(Backfill)).one()
        assert row.id == backfill_id
        assert (row.dag_id, row.from_date, row.to_date, row.run_backwards,
                row.max_active_runs, row.conf, row.options, row.state, row.total_runs) == (
            "bf", day(1), day(3), True, 2, {"x": 1}, {"task_regex": "^a$"},
            BackfillState.QUEUED, 3)
        assert row.created_at is not None and row.completed_at is None
        with pytest.raises(BackfillError, match="unknown backfill options: nope"):
            create_backfill(session, plan, max_active_runs=1, options={"nope": 1})
        with pytest.raises(BackfillError, match="max_active_runs"):
            create_backfill(session, plan, max_active_runs=0)
