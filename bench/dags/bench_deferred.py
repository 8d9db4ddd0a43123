"""``python -m bench triggerer --through-worker`` (issue 25): one operator mapped 1,000 ways,
each instance deferring on a :class:`bench.triggers.TimerTrigger` due at the run's
``conf["fire_at"]`` (epoch seconds, one moment for all), and resuming in :meth:`resume`,
which returns the wall time its event fired and the wall time it resumed (its XCom)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pendulum

from bench.triggers import TimerTrigger
from squall import DAG
from squall.sdk.operators.base import BaseOperator

DAG_ID = "bench_deferred_worker"
MAP_LENGTH = 1000


class DeferUntilFireAt(BaseOperator):
    """Defers on a timer due at ``dag_run.conf["fire_at"]``; resumes on a worker."""

    def __init__(self, *, i: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.i = i

    def execute(self, context: Any) -> None:
        moment = datetime.fromtimestamp(float(context["dag_run"].conf["fire_at"]), UTC)
        self.defer(trigger=TimerTrigger(moment), method_name="resume")

    def resume(self, context: Any, event: dict[str, Any]) -> dict[str, float]:
        return {"fired_at": float(event["fired_at"]), "resumed_at": time.time()}


with DAG(DAG_ID, schedule=None, catchup=False, max_active_tasks=MAP_LENGTH,
         start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    DeferUntilFireAt.partial(task_id="wait").expand(i=list(range(MAP_LENGTH)))
