"""``schedule="@continuous"`` (Airflow 2.6's ``ContinuousTimetable``): a new run as soon as
the previous one has ended.

The scheduler creates the next scheduled run once its ``run_after`` has passed and the DAG
has room under ``max_active_runs``; this timetable makes every next run due at once and
allows only one active run (``active_runs_limit``), so the next starts when the previous
ends. Each run covers from the end of the previous run's interval to the time it was
planned (the first from ``start_date``); as in Airflow, ``end_date`` stops it.
"""

from __future__ import annotations

import datetime as dt
import logging

from pendulum import DateTime

from squall.sdk.timetables.base import (
    DagRunInfo,
    DataInterval,
    Timetable,
    _pendulum_utc,
)

log = logging.getLogger(__name__)

#: the smallest step between two runs' logical dates (they must differ)
_TICK = dt.timedelta(microseconds=1)


class ContinuousTimetable(Timetable):
    """``"@continuous"``: one run after another, with at most one active."""

    summary = "@continuous"
    description = "Continuous, run as soon as possible"
    periodic = False
    #: Airflow's ``active_runs_limit``: a DAG with this timetable needs max_active_runs=1
    active_runs_limit = 1

    def next_dagrun_info(
        self,
        *,
        last_automated_data_interval: DataInterval | None,
        start_date: DateTime | None,
        end_date: DateTime | None,
        catchup: bool,
        now: DateTime,
    ) -> DagRunInfo | None:
        if start_date is None:
            return None
        current = _pendulum_utc(now)
        if last_automated_data_interval is not None:
            start = _pendulum_utc(last_automated_data_interval.end)
            end = max(current, start + _TICK)
        else:
            start = _pendulum_utc(start_date)
            end = max(start, current)
        if end_date is not None and end > _pendulum_utc(end_date):
            return None
        return DagRunInfo.interval(start, end)

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        return DataInterval.exact(_pendulum_utc(run_after))
