"""``GET /metrics``: Prometheus metrics read from the metadata database on each scrape.

The endpoint needs **no credentials** (read-only, like ``/api/v1/health``): Prometheus
scrapers usually have none, and the numbers it shows are counts and ages, never names of
users, configuration or task data beyond pool and queue names. Put it behind the network's
own access rules when those names are sensitive.

Each app has its own :class:`~prometheus_client.CollectorRegistry` (never the global one)
holding one :class:`SquallCollector`, which runs a handful of grouped queries per scrape.
The names are documented in ``docs/metrics.md``:

* ``squall_task_instances{state,queue}``: task instances by state and queue
* ``squall_dag_runs{state}``: DAG runs by state
* ``squall_pool_slots{pool,kind}``: ``kind`` is ``total`` (``+Inf`` when unlimited),
  ``open``, ``running``, ``queued`` (slots held) and ``scheduled`` (slots waited for)
* ``squall_scheduler_heartbeat_age_seconds``: since the newest scheduler heartbeat
* ``squall_oldest_queued_try_seconds``: how long the oldest QUEUED try has waited (0: none)
* ``squall_queue_backlog{queue}``: SCHEDULED + QUEUED task instances per queue
* ``squall_metadatabase_up``: 1 when the queries answered, else 0 (and nothing else)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import datetime

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from squall.api.state import ApiState
from squall.common.db import SessionFactory, session_scope
from squall.common.models import DagRun, TaskInstance, utcnow
from squall.common.state import BACKLOG_STATES, TaskInstanceState
from squall.runs import pools
from squall.runs.jobs import latest_scheduler_heartbeat

log = logging.getLogger(__name__)

metrics_router = APIRouter(tags=["Monitoring"])

TI = TaskInstanceState


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else max(0.0, (now - then).total_seconds())


class SquallCollector(Collector):
    """Queries the metadata database on each ``collect`` (one short transaction)."""

    def __init__(self, session_factory: SessionFactory) -> None:
        self.session_factory = session_factory

    def describe(self) -> list[Metric]:
        return []  # nothing to query at registration

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("squall_metadatabase_up",
                               "1 when the metadata database answered this scrape's queries")
        try:
            with session_scope(self.session_factory) as session:
                families = self._families(session)
        except SQLAlchemyError as exc:
            log.warning("metrics: the metadata database did not answer: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self, session: Session) -> list[Metric]:
        now = utcnow()
        tis = GaugeMetricFamily("squall_task_instances", "Task instances by state and queue",
                                labels=["state", "queue"])
        backlog: dict[str, int] = {}
        for state, queue, count in session.execute(
                select(TaskInstance.state, TaskInstance.queue, func.count())
                .group_by(TaskInstance.state, TaskInstance.queue)):
            tis.add_metric([state, queue], int(count))
            backlog.setdefault(queue, 0)
            if state in BACKLOG_STATES:
                backlog[queue] += int(count)
        queues = GaugeMetricFamily("squall_queue_backlog",
                                   "Task instances SCHEDULED or QUEUED, per queue",
                                   labels=["queue"])
        for queue, count in sorted(backlog.items()):
            queues.add_metric([queue], count)

        runs = GaugeMetricFamily("squall_dag_runs", "DAG runs by state", labels=["state"])
        for state, count in session.execute(
                select(DagRun.state, func.count()).group_by(DagRun.state)):
            runs.add_metric([state], int(count))

        slots = GaugeMetricFamily(
            "squall_pool_slots", "Pool slots: total (+Inf when unlimited), open, held by "
            "running and queued task instances, and waited for by scheduled ones",
            labels=["pool", "kind"])
        scheduled = {pool: int(n) for pool, n in session.execute(
            select(TaskInstance.pool, func.coalesce(func.sum(TaskInstance.pool_slots), 0))
            .where(TaskInstance.state == TI.SCHEDULED.value).group_by(TaskInstance.pool))}
        for usage in pools.list_pools(session):
            slots.add_metric([usage.name, "total"],
                             float("inf") if usage.slots < 0 else usage.slots)
            slots.add_metric([usage.name, "open"], usage.open_slots)
            slots.add_metric([usage.name, "running"], usage.running)
            slots.add_metric([usage.name, "queued"], usage.queued)
            slots.add_metric([usage.name, "scheduled"], scheduled.get(usage.name, 0))

        out: list[Metric] = [tis, queues, runs, slots]
        beat = latest_scheduler_heartbeat(session)
        age = _age(now, beat)
        if age is not None:  # no sample at all until a scheduler has ever run
            heartbeat = GaugeMetricFamily(
                "squall_scheduler_heartbeat_age_seconds",
                "Seconds since the newest heartbeat of any scheduler")
            heartbeat.add_metric([], age)
            out.append(heartbeat)
        oldest = session.scalar(select(func.min(TaskInstance.queued_dttm))
                                .where(TaskInstance.state == TI.QUEUED.value))
        waited = GaugeMetricFamily(
            "squall_oldest_queued_try_seconds",
            "Seconds the oldest QUEUED task instance try has waited (0 when none is queued)")
        waited.add_metric([], _age(now, oldest) or 0.0)
        out.append(waited)
        return out


_registry_lock = threading.Lock()


def registry_for(app: FastAPI) -> CollectorRegistry:
    """The app's own registry (made on the first scrape)."""
    with _registry_lock:
        registry: CollectorRegistry | None = getattr(app.state, "squall_metrics", None)
        if registry is None:
            state: ApiState = app.state.squall
            registry = CollectorRegistry(auto_describe=False)
            registry.register(SquallCollector(state.session_factory))
            app.state.squall_metrics = registry
        return registry


@metrics_router.get(
    "/metrics", summary="Prometheus metrics (no credentials needed)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                     "description": "Prometheus' text format"}})
def metrics(request: Request) -> Response:
    """Prometheus' text exposition format; read from the database at each scrape."""
    body = generate_latest(registry_for(request.app))
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
