"""``python -m bench triggerer``: one ``squall triggerer`` holding 1,000 deferred task
instances' timers (issue 25).

1. A cluster of its own (``redis-pg``: a PostgreSQL database of its own; ``standalone``:
   SQLite) with no scheduler and no worker; ``--triggers`` DEFERRED task instances are
   written straight into the database (a DAG row, one run, one task instance each, and its
   ``trigger`` row: :class:`bench.triggers.TimerTrigger`), as a deferring worker leaves them.
2. ``python -m squall triggerer`` starts; the bench waits until its log shows every trigger
   started, then samples the triggerer's RSS (every 0.2 s) and CPU (``/proc``) for
   ``--idle`` seconds while every timer waits: the idle figures.
3. The timers are due at moments spread evenly over ``--spread`` seconds after the idle
   window. Each event carries the wall time it fired; the task instance's ``updated_at``
   is written by the triggerer's compare-and-set to SCHEDULED (one host, one clock): their
   difference is the time from a trigger firing to its task instance being SCHEDULED.

No worker resumes the tasks here: the resuming side (``next_method`` run on a worker) is
built separately (issue 25's defer-worker part); the figure stops at SCHEDULED.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select

from bench.cluster import BenchCluster, wait_for
from bench.procs import TreeSampler, tree_rss_mib
from bench.report import Row
from bench.triggers import TimerTrigger
from squall.common.models import DagModel, DagRun, TaskInstance, Trigger
from squall.common.state import DagRunState, TaskInstanceState
from squall.sdk.triggers import serde

DAG_ID = "bench_deferred"


@dataclass
class TriggererSample:
    triggers: int
    start_s: float = 0.0
    idle_rss_mib: float = 0.0
    idle_peak_rss_mib: float = 0.0
    idle_cpu_pct: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    all_scheduled_s: float = 0.0

    def rows(self) -> list[Row]:
        group = f"{self.triggers:,} deferred timers, one triggerer"
        lat = sorted(self.latencies_ms)

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p / 100 * len(lat)))]

        return [
            (group, "all started after triggerer start s", [self.start_s]),
            (group, "idle RSS MiB (end of window)", [self.idle_rss_mib]),
            (group, "idle peak RSS MiB", [self.idle_peak_rss_mib]),
            (group, "idle CPU % of a core", [self.idle_cpu_pct]),
            (group, "fire -> SCHEDULED p50 ms", [statistics.median(lat)]),
            (group, "fire -> SCHEDULED p99 ms", [pct(99)]),
            (group, "fire -> SCHEDULED max ms", [lat[-1]]),
            (group, "last due -> all SCHEDULED s", [self.all_scheduled_s]),
        ]


def _defer_all(cluster: BenchCluster, n: int, first_due: datetime, spread: float) -> None:
    now = datetime.now(UTC)
    with cluster.engine.begin() as conn:
        conn.execute(insert(DagModel).values(dag_id=DAG_ID, fileloc="/bench/deferred.py",
                                             is_paused=False, is_active=True))
        conn.execute(insert(DagRun).values(dag_id=DAG_ID, run_id="r1", run_type="manual",
                                           logical_date=now, state=DagRunState.RUNNING.value,
                                           external_trigger=True, start_date=now))
        step = spread / max(n - 1, 1)
        triggers = []
        for i in range(n):
            classpath, kwargs = TimerTrigger(first_due + timedelta(seconds=i * step)).serialize()
            triggers.append({"id": i + 1, "classpath": classpath,
                             "kwargs": serde.dumps(kwargs), "created_date": now})
        conn.execute(insert(Trigger), triggers)
        conn.execute(insert(TaskInstance), [
            {"dag_id": DAG_ID, "task_id": f"wait_{i:04d}", "run_id": "r1", "map_index": -1,
             "try_number": 1, "max_tries": 0, "state": TaskInstanceState.DEFERRED.value,
             "pool": "default_pool", "pool_slots": 1, "queue": "default",
             "priority_weight": 1, "trigger_id": i + 1, "next_method": "execute_complete",
             "start_date": now, "updated_at": now} for i in range(n)])
        if cluster.kind == "redis-pg":
            conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('trigger', 'id'), "
                                 f"{n})")


def _started(cluster: BenchCluster, name: str) -> int:
    text = cluster.proc(name).log_path.read_text(errors="replace")
    return text.count(" starting\n")


def _scheduled(cluster: BenchCluster) -> list[Any]:
    with cluster.engine.connect() as conn:
        return list(conn.execute(select(TaskInstance.updated_at, TaskInstance.next_kwargs)
                                 .where(TaskInstance.dag_id == DAG_ID,
                                        TaskInstance.state == TaskInstanceState.SCHEDULED.value)))


def _count_scheduled(cluster: BenchCluster) -> int:
    with cluster.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(TaskInstance).where(
            TaskInstance.dag_id == DAG_ID,
            TaskInstance.state == TaskInstanceState.SCHEDULED.value)) or 0)


def run_triggerer_bench(kind: str, *, triggers: int = 1000, idle: float = 30.0,
                        spread: float = 2.0, keep_home: bool = False,
                        extra_env: dict[str, str] | None = None) -> TriggererSample:
    sample = TriggererSample(triggers=triggers)
    cluster = BenchCluster(kind, keep_home=keep_home, extra_env=extra_env or {})
    try:
        cluster.start(scheduler=False, worker=False)
        # due after: the start (generous on a loaded machine), the idle window, a margin
        first_due = datetime.now(UTC) + timedelta(seconds=idle + 60)
        _defer_all(cluster, triggers, first_due, spread)
        t0 = time.monotonic()
        proc = cluster._spawn("triggerer", ["triggerer"])
        wait_for(lambda: _started(cluster, "triggerer") >= triggers, 60,
                 f"{triggers} triggers started")
        sample.start_s = time.monotonic() - t0
        print(f"bench: triggerer: {triggers} triggers started in {sample.start_s:.1f} s "
              f"(RSS {tree_rss_mib(proc.pid):.0f} MiB); idle for {idle:g} s", flush=True)
        time.sleep(2.0)  # let the start-up's own work settle before measuring idle
        with TreeSampler({"triggerer": proc.pid}) as sampler:
            time.sleep(idle)
        usage = sampler.usage["triggerer"]
        sample.idle_peak_rss_mib = usage.peak_rss_mib
        sample.idle_rss_mib = sampler.rss_series["triggerer"][-1][1]
        sample.idle_cpu_pct = usage.cpu_s / idle * 100
        cluster.check_alive()
        remaining = (first_due - datetime.now(UTC)).total_seconds()
        if remaining < 1:
            raise RuntimeError("the timers came due during the idle window: raise the margin")
        last_due = first_due + timedelta(seconds=spread)
        wait_for(lambda: _count_scheduled(cluster) >= triggers, remaining + spread + 60,
                 "every task instance SCHEDULED")
        rows = _scheduled(cluster)
        for updated_at, next_kwargs in rows:
            fired_at = serde.from_json(next_kwargs)["event"]["fired_at"]
            sample.latencies_ms.append((updated_at.timestamp() - fired_at) * 1000)
        sample.all_scheduled_s = max(r[0] for r in rows).timestamp() - last_due.timestamp()
        return sample
    finally:
        cluster.stop()
