"""``python -m bench triggerer --through-worker``: 1,000 deferred sensors through the real
path (issue 25): a scheduler, a Celery worker (``-c 4``), one ``squall triggerer``.

1. A cluster (``redis-pg``: PostgreSQL and Redis of its own; ``standalone``: SQLite and the
   embedded broker) with a scheduler, a worker and a triggerer. ``squall dags trigger
   bench_deferred_worker --conf {"fire_at": T}`` starts one run of
   ``bench/dags/bench_deferred.py``: one operator mapped 1,000 ways, each instance deferring
   on a :class:`bench.triggers.TimerTrigger` due at the common moment ``T`` (``--lead``
   seconds after the trigger command, far enough ahead that all 1,000 defer first).
2. Once every task instance is DEFERRED and the triggerer's log shows 1,000 triggers
   started (and 2 s more), the triggerer's RSS (every 0.2 s) and CPU (``/proc``) are
   sampled for ``--idle`` seconds (shortened to end 1 s before ``T``), and the worker slots
   in use are read every second: task instances QUEUED or RUNNING in the database and,
   on redis-pg, the worker's active Celery tasks (``inspect().active()``, at the window's
   start and end).
3. At ``T`` every timer fires; each event carries the wall time it fired, and the resumed
   method returns it with the wall time it ran (its XCom). Firing -> resumed is their
   difference (one host, one clock); also firing -> the resumed try's RUNNING (its ``job``
   row's ``start_date``, written by the worker's QUEUED -> RUNNING), and ``T`` -> all 1,000
   SUCCESS (the newest ``end_date``). The resumptions queue behind the worker's 4 slots,
   so these figures are the worker's throughput as much as the triggerer's latency.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from bench.cluster import BenchCluster, wait_for
from bench.procs import TreeSampler, tree_rss_mib
from bench.report import Row
from squall.common.models import Job, TaskInstance, XCom
from squall.common.state import TaskInstanceState

DAG_ID = "bench_deferred_worker"
TASK_ID = "wait"
#: the DAG's mapped instances (bench/dags/bench_deferred.py: MAP_LENGTH)
TASKS = 1000
#: task instance states that hold (or are about to hold) a worker slot
SLOT_STATES = (TaskInstanceState.QUEUED.value, TaskInstanceState.RUNNING.value)


@dataclass
class ThroughWorkerSample:
    tasks: int
    lead_s: float
    all_deferred_s: float = 0.0
    idle_window_s: float = 0.0
    idle_rss_mib: float = 0.0
    idle_peak_rss_mib: float = 0.0
    idle_cpu_pct: float = 0.0
    slots_db_max: int = 0
    #: the worker's active Celery tasks at the window's start and end (None: not asked)
    celery_active: list[int] | None = None
    fire_late_ms: list[float] = field(default_factory=list)
    resumed_ms: list[float] = field(default_factory=list)
    running_ms: list[float] = field(default_factory=list)
    all_success_s: float = 0.0

    def rows(self) -> list[Row]:
        idle = f"{self.tasks:,} deferred tasks, one triggerer (idle)"
        fire = f"{self.tasks:,} deferred tasks, firing at T"

        def pct(values: list[float], p: float) -> float:
            v = sorted(values)
            return v[min(len(v) - 1, int(p / 100 * len(v)))]

        rows: list[Row] = [
            (idle, "trigger -> all DEFERRED s", [self.all_deferred_s]),
            (idle, "deferring tasks/s (1,000 / trigger -> all DEFERRED)",
             [self.tasks / self.all_deferred_s]),
            (idle, "window s", [self.idle_window_s]),
            (idle, "triggerer RSS MiB (end of window)", [self.idle_rss_mib]),
            (idle, "triggerer peak RSS MiB", [self.idle_peak_rss_mib]),
            (idle, "triggerer CPU % of a core", [self.idle_cpu_pct]),
            (idle, "TIs queued/running (max, per 1 s)", [float(self.slots_db_max)]),
        ]
        if self.celery_active is not None:
            rows.append((idle, "worker active Celery tasks (start, end)",
                         [float(n) for n in self.celery_active]))
        rows += [
            (fire, "T -> fired ms (max)", [max(self.fire_late_ms)]),
            (fire, "fired -> resumed min ms", [min(self.resumed_ms)]),
            (fire, "fired -> resumed p50 ms", [statistics.median(self.resumed_ms)]),
            (fire, "fired -> resumed p95 ms", [pct(self.resumed_ms, 95)]),
            (fire, "fired -> resumed max ms", [max(self.resumed_ms)]),
            (fire, "fired -> resumed try RUNNING p50 ms", [statistics.median(self.running_ms)]),
            (fire, "fired -> resumed try RUNNING p95 ms", [pct(self.running_ms, 95)]),
            (fire, "T -> all SUCCESS s", [self.all_success_s]),
            (fire, "resumed tasks/s (1,000 / T -> all SUCCESS)",
             [self.tasks / self.all_success_s]),
        ]
        return rows


def _count(cluster: BenchCluster, *states: str, task_only: bool = True) -> int:
    where = [TaskInstance.state.in_(states)]
    if task_only:
        where.append(TaskInstance.dag_id == DAG_ID)
    with cluster.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(TaskInstance)
                               .where(*where)) or 0)


def _started(cluster: BenchCluster) -> int:
    return cluster.proc("triggerer").log_path.read_text(errors="replace").count(" starting\n")


def _celery_active(cluster: BenchCluster) -> int | None:
    """The worker's active Celery tasks (``inspect().active()``); None: no reply, or no
    Redis broker to ask (standalone)."""
    if cluster.kind != "redis-pg":
        return None
    from celery import Celery

    app = Celery("bench-inspect", broker=f"redis://127.0.0.1:{cluster.redis_port}/0",
                 set_as_current=False)
    try:
        replies = app.control.inspect(timeout=2.0).active()
    finally:
        app.close()
    if not replies:
        return None
    return sum(len(tasks) for tasks in replies.values())


def _results(cluster: BenchCluster, run_id: str) -> list[Any]:
    with cluster.engine.connect() as conn:
        return list(conn.execute(
            select(TaskInstance.state, TaskInstance.try_number, TaskInstance.end_date,
                   Job.start_date.label("job_start"), XCom.value)
            .outerjoin(Job, Job.id == TaskInstance.job_id)
            .outerjoin(XCom, (XCom.dag_id == TaskInstance.dag_id)
                       & (XCom.run_id == TaskInstance.run_id)
                       & (XCom.task_id == TaskInstance.task_id)
                       & (XCom.map_index == TaskInstance.map_index)
                       & (XCom.key == "return_value"))
            .where(TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == run_id,
                   TaskInstance.task_id == TASK_ID, TaskInstance.map_index >= 0)))


def run_through_worker(kind: str, *, tasks: int = TASKS, idle: float = 20.0,
                       lead: float = 90.0, concurrency: int = 4, keep_home: bool = False,
                       extra_env: dict[str, str] | None = None) -> ThroughWorkerSample:
    sample = ThroughWorkerSample(tasks=tasks, lead_s=lead)
    with BenchCluster(kind, concurrency=concurrency, keep_home=keep_home,
                      extra_env=extra_env or {}) as cluster:
        triggerer = cluster._spawn("triggerer", ["triggerer"])
        print(f"bench: cluster {kind} up (home {cluster.home}), triggerer started; waiting "
              "for the DAG", flush=True)
        cluster.wait_parsed([DAG_ID])
        t_trigger = time.time()
        fire_at = t_trigger + lead
        (run_id,) = cluster.trigger([DAG_ID], conf={"fire_at": fire_at}).values()

        def all_held() -> bool:
            cluster.check_alive()
            return (_count(cluster, TaskInstanceState.DEFERRED.value) >= tasks
                    and _started(cluster) >= tasks)

        try:
            wait_for(all_held, max(fire_at - time.time() - 3, 1),
                     f"{tasks} task instances DEFERRED and held before T", interval=0.5)
        except TimeoutError:
            deferred = _count(cluster, TaskInstanceState.DEFERRED.value)
            rate = deferred / max(time.time() - t_trigger, 1e-3)
            raise RuntimeError(
                f"only {deferred} of {tasks} task instances DEFERRED {lead:g} s after the "
                f"trigger ({rate:.1f}/s): raise --lead (to about "
                f"{tasks / max(rate, 0.1) * 1.2 + idle + 10:.0f} s at this rate)") from None
        sample.all_deferred_s = time.time() - t_trigger
        print(f"bench: {tasks} deferred and held {sample.all_deferred_s:.1f} s after the "
              f"trigger (triggerer RSS {tree_rss_mib(triggerer.pid):.0f} MiB); T in "
              f"{fire_at - time.time():.1f} s", flush=True)
        time.sleep(2.0)  # let the last claims settle before measuring idle
        window = min(idle, fire_at - time.time() - 1.0)
        if window < 5:
            raise RuntimeError(f"only {window:.1f} s left before T for the idle window: "
                               "raise --lead")
        active = [_celery_active(cluster)]
        with TreeSampler({"triggerer": triggerer.pid}) as sampler:
            t0 = time.monotonic()
            end = t0 + window
            while time.monotonic() < end:
                sample.slots_db_max = max(sample.slots_db_max,
                                          _count(cluster, *SLOT_STATES, task_only=False))
                time.sleep(min(1.0, max(end - time.monotonic(), 0.0)))
            elapsed = time.monotonic() - t0
        active.append(_celery_active(cluster))
        sample.idle_window_s = elapsed
        usage = sampler.usage["triggerer"]
        sample.idle_peak_rss_mib = usage.peak_rss_mib
        sample.idle_rss_mib = sampler.rss_series["triggerer"][-1][1]
        sample.idle_cpu_pct = usage.cpu_s / elapsed * 100
        if all(a is not None for a in active):
            sample.celery_active = [int(a) for a in active if a is not None]
        if _count(cluster, TaskInstanceState.DEFERRED.value) < tasks:
            raise RuntimeError("task instances left DEFERRED before T")
        print(f"bench: idle {elapsed:.1f} s: triggerer {sample.idle_rss_mib:.0f} MiB, "
              f"{sample.idle_cpu_pct:.2f} % CPU; waiting for T and the resumptions",
              flush=True)
        cluster.wait_runs({DAG_ID: run_id}, timeout=fire_at - time.time() + 600)
        rows = _results(cluster, run_id)
        states = Counter((r.state, r.try_number) for r in rows)
        if states != {(TaskInstanceState.SUCCESS.value, 1): tasks}:
            raise RuntimeError(f"expected {tasks} task instances SUCCESS in try 1, got "
                               f"{dict(states)}")
        for r in rows:
            value = json.loads(r.value)
            fired, resumed = float(value["fired_at"]), float(value["resumed_at"])
            sample.fire_late_ms.append((fired - fire_at) * 1000)
            sample.resumed_ms.append((resumed - fired) * 1000)
            sample.running_ms.append((r.job_start.timestamp() - fired) * 1000)
        last_end: datetime = max(r.end_date for r in rows)
        sample.all_success_s = last_end.astimezone(UTC).timestamp() - fire_at
        return sample
