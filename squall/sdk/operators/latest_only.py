"""LatestOnlyOperator: skip the rest of a scheduled run that is not the latest one."""

from __future__ import annotations

import logging
from datetime import UTC

import pendulum

from squall.sdk.operators.base import Context
from squall.sdk.operators.branch import BaseBranchOperator
from squall.sdk.timetables import DataInterval

log = logging.getLogger(__name__)

__all__ = ["LatestOnlyOperator"]


class LatestOnlyOperator(BaseBranchOperator):
    """As Airflow 2's: in a run that is not the latest scheduled one (now is not inside the
    *next* run's data interval, ``next start < now <= next end``) the direct downstream tasks
    are skipped (and, by their trigger rules, what follows them). A manually triggered run,
    and the last run of a schedule, always proceed."""

    ui_color = "#e9ffdb"

    def choose_branch(self, context: Context) -> list[str]:
        everything = sorted(self.downstream_task_ids)
        dag_run = context.get("dag_run")
        if dag_run is not None and getattr(dag_run, "external_trigger", False):
            log.info("Externally triggered DAG_Run: allowing execution to proceed.")
            return everything
        dag = context["dag"]
        interval = DataInterval(context["data_interval_start"], context["data_interval_end"])
        now = pendulum.now("UTC")
        next_info = dag.timetable.next_dagrun_info(
            last_automated_data_interval=interval, start_date=None, end_date=None,
            catchup=True, now=now)
        if next_info is None:
            log.info("Last scheduled execution: allowing execution to proceed.")
            return everything
        left = next_info.data_interval.start.astimezone(UTC)
        right = next_info.data_interval.end.astimezone(UTC)
        log.info("Checking latest only with left_window: %s right_window: %s now: %s",
                 left.isoformat(), right.isoformat(), now.isoformat())
        if not left < now <= right:
            log.info("Not latest execution, skipping downstream.")
            return []
        log.info("Latest, allowing execution to proceed.")
        return everything
