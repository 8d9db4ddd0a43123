"""``python -m bench scaling``: how the scheduler loop and the processes scale.

a. loop time and SQL statements per loop with 10k and 100k finished task instances in the
   history (bulk-inserted with SQLAlchemy core), one active run in flight: must stay flat;
b. loop time and statements with 1k and 5k runnable task instances (RUNNING runs whose task
   instances have no upstream: the first loop moves them all to SCHEDULED, later loops
   queue from them);
c. Celery worker tree RSS (and PSS) idle at -c 1, 2, 4;
d. scheduler RSS (this process, which runs SchedulerJob in-process) over 1,000 DAG runs
   driven to success (task instances marked success directly after each loop).

The scheduler runs in this process (``SchedulerJob.run_once``) against a PostgreSQL database
of its own, with a no-op executor: publishing always works and nothing stays "in flight";
with the waker ``squall scheduler`` has (``LISTEN``, on a connection whose statements are
not counted).
"""

from __future__ import annotations

import itertools
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pendulum
from sqlalchemy import Engine, event, insert, update

from bench.cluster import BenchCluster, drop_pg_database, recreate_pg_database
from bench.procs import tree_pss_mib, tree_rss_mib
from bench.report import Row
from squall import DAG, EmptyOperator
from squall.common import dbops
from squall.common.db import SessionFactory, make_engine, make_session_factory, session_scope
from squall.common.models import DagRun, TaskInstance, TaskInstanceKey
from squall.common.settings import Settings
from squall.common.state import DagRunState
from squall.common.wakeup import Waker, waker_for
from squall.dag_processing.dagbag import ParseResult
from squall.dag_processing.serialization import serialize_dag
from squall.dag_processing.sync import sync_to_db
from squall.runs.run_creation import create_dag_run
from squall.scheduler.executor import ExecutorEvent, PublishOutcome, QueuedTask
from squall.scheduler.job import SchedulerJob

START = pendulum.datetime(2024, 1, 1, tz="UTC")


@dataclass
class NoopExecutor:
    """Publishes nothing, reports nothing; nothing is ever counted in flight."""

    published: int = 0
    running: dict[str, Any] = field(default_factory=dict)

    def publish(self, tasks: list[QueuedTask]) -> list[PublishOutcome]:
        self.published += len(tasks)
        return [PublishOutcome(task=t, ok=True, attempts=1, error=None) for t in tasks]

    def sync(self) -> None:
        return None

    def get_event_buffer(self) -> list[ExecutorEvent]:
        return []

    def end(self) -> None:
        return None

    def track(self, key: TaskInstanceKey, try_number: int, external_executor_id: str,
              *, adopted: bool = False) -> None:
        return None

    def revoke(self, external_executor_ids: Sequence[str]) -> None:
        return None


class StatementCounter:
    def __init__(self, engine: Engine) -> None:
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, *args: Any) -> None:
        self.count += 1


@dataclass
class Env:
    engine: Engine
    factory: SessionFactory
    settings: Settings
    counter: StatementCounter
    waker: Waker


@contextmanager
def scheduler_env() -> Iterator[Env]:
    url = recreate_pg_database()
    home = Path(tempfile.mkdtemp(prefix="squall-bench-scaling-"))
    engine = make_engine(url)
    try:
        dbops.migrate(engine)
        settings = Settings.load(env={"SQUALL_HOME": str(home),
                                      "SQUALL__DATABASE__SQL_ALCHEMY_CONN": url,
                                      "SQUALL__CORE__LOAD_EXAMPLES": "false",
                                      "SQUALL__CORE__DAGS_ARE_PAUSED_AT_CREATION": "false",
                                      # the DAGs are made in this file: it must be under the
                                      # DAG folder for a task-run command to name it
                                      "SQUALL__CORE__DAGS_FOLDER": str(Path(__file__).parent)})
        waker = waker_for(engine)
        try:
            yield Env(engine, make_session_factory(engine), settings,
                      StatementCounter(engine), waker)
        finally:
            waker.close()
    finally:
        engine.dispose()
        drop_pg_database()
        shutil.rmtree(home, ignore_errors=True)


def make_dag(dag_id: str, tasks: int, chain: bool = False, max_active_runs: int = 16) -> DAG:
    with DAG(dag_id, schedule=None, catchup=False, start_date=START,
             max_active_runs=max_active_runs) as dag:
        ops = [EmptyOperator(task_id=f"t{i}") for i in range(tasks)]
        if chain:
            for a, b in itertools.pairwise(ops):
                a >> b
    return dag


def sync(env: Env, *dags: DAG) -> None:
    result = ParseResult(serialized={d.dag_id: serialize_dag(d) for d in dags})
    with session_scope(env.factory) as session:
        sync_to_db(session, result, paused_at_creation=False, now=datetime.now(UTC))


def insert_history(env: Env, dag: DAG, runs: int, first: int) -> None:
    """``runs`` finished runs of ``dag`` with all task instances SUCCESS (core inserts)."""
    base = datetime(2020, 1, 1, tzinfo=UTC)
    run_rows, ti_rows = [], []
    for n in range(first, first + runs):
        when = base + timedelta(minutes=n)
        run_id = f"hist__{n}"
        run_rows.append({"dag_id": dag.dag_id, "run_id": run_id, "run_type": "manual",
                         "logical_date": when, "state": "success", "external_trigger": True,
                         "queued_at": when, "start_date": when, "end_date": when,
                         "data_interval_start": when, "data_interval_end": when})
        for task_id in dag.task_dict:
            ti_rows.append({"dag_id": dag.dag_id, "task_id": task_id, "run_id": run_id,
                            "try_number": 1, "max_tries": 0, "state": "success",
                            "pool": "default_pool", "pool_slots": 1, "queue": "default",
                            "priority_weight": 1, "operator": "EmptyOperator",
                            "start_date": when, "end_date": when, "duration": 0.0})
    with env.engine.begin() as conn:
        conn.execute(insert(DagRun), run_rows)
        for i in range(0, len(ti_rows), 10_000):
            conn.execute(insert(TaskInstance), ti_rows[i:i + 10_000])
        conn.exec_driver_sql("ANALYZE")


def create_runs(env: Env, dag: DAG, runs: int, state: DagRunState, prefix: str) -> None:
    now = datetime.now(UTC)
    with session_scope(env.factory) as session:
        for n in range(runs):
            create_dag_run(session, dag, run_type="manual",
                           logical_date=now + timedelta(seconds=n), data_interval=None,
                           run_id=f"{prefix}__{n}", state=state, external_trigger=True)
            if n % 200 == 199:
                session.flush()
    if state == DagRunState.RUNNING:
        with env.engine.begin() as conn:
            conn.execute(update(DagRun).where(DagRun.run_id.like(f"{prefix}__%"))
                         .values(start_date=now))


def measure_loops(env: Env, job: SchedulerJob, loops: int) -> tuple[list[float], list[int]]:
    times, stmts = [], []
    for _ in range(loops):
        before = env.counter.count
        t0 = time.perf_counter()
        job.run_once()
        times.append((time.perf_counter() - t0) * 1000)
        stmts.append(env.counter.count - before)
    return times, stmts


def case_history(sizes: Sequence[int], loops: int) -> list[Row]:
    rows: list[Row] = []
    with scheduler_env() as env:
        hist = make_dag("scale_hist", 100)
        active = make_dag("scale_active", 10)
        sync(env, hist, active)
        job = SchedulerJob(env.settings, env.factory, NoopExecutor(), waker=env.waker)
        create_runs(env, active, 1, DagRunState.QUEUED, "active")
        measure_loops(env, job, 3)  # start the run, queue its tasks
        done = 0
        for size in sizes:
            insert_history(env, hist, (size - done) // 100, done // 100)
            done = size
            times, stmts = measure_loops(env, job, loops)
            group = f"a. history {size // 1000}k TIs"
            rows.append((group, "loop ms", times))
            rows.append((group, "statements/loop", [float(s) for s in stmts]))
            print(f"scaling: history {size}: loop median {statistics.median(times):.1f} ms, "
                  f"{statistics.median(stmts)} statements", flush=True)
    return rows


def case_runnable(sizes: Sequence[int], loops: int) -> list[Row]:
    rows: list[Row] = []
    for size in sizes:
        with scheduler_env() as env:
            wide = make_dag("scale_wide", 100, max_active_runs=1000)
            sync(env, wide)
            create_runs(env, wide, size // 100, DagRunState.RUNNING, "wide")
            job = SchedulerJob(env.settings, env.factory, NoopExecutor(), waker=env.waker)
            first_t, first_s = measure_loops(env, job, 1)
            times, stmts = measure_loops(env, job, loops)
            group = f"b. runnable {size // 1000}k TIs"
            rows.append((group, "first loop ms (none->scheduled)", first_t))
            rows.append((group, "first loop statements", [float(s) for s in first_s]))
            rows.append((group, "later loop ms", times))
            rows.append((group, "later statements/loop", [float(s) for s in stmts]))
            print(f"scaling: runnable {size}: first loop {first_t[0]:.0f} ms / {first_s[0]} "
                  f"statements; later median {statistics.median(times):.1f} ms", flush=True)
    return rows


def case_worker_rss(concurrencies: Sequence[int], settle: float) -> list[Row]:
    rows: list[Row] = []
    for c in concurrencies:
        cluster = BenchCluster("redis-pg", concurrency=c)
        try:
            cluster.start(scheduler=False, worker=True)
            time.sleep(settle)
            pid = cluster.proc("worker").pid
            rss, pss = tree_rss_mib(pid), tree_pss_mib(pid)
        finally:
            cluster.stop()
        rows.append((f"c. worker idle -c {c}", "tree RSS MiB", [rss]))
        rows.append((f"c. worker idle -c {c}", "tree PSS MiB", [pss]))
        rows.append((f"c. worker idle -c {c}", "PSS MiB per slot", [pss / c]))
        print(f"scaling: worker -c {c}: RSS {rss:.0f} MiB, PSS {pss:.0f} MiB", flush=True)
    return rows


def _vmrss(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def case_scheduler_rss(runs: int, budget_s: float) -> list[Row]:
    with scheduler_env() as env:
        small = make_dag("scale_small", 3, chain=True)
        sync(env, small)
        create_runs(env, small, runs, DagRunState.QUEUED, "small")
        job = SchedulerJob(env.settings, env.factory, NoopExecutor())
        rss0 = _vmrss(os.getpid())
        series: list[float] = [rss0]
        finished = 0
        loops = 0
        deadline = time.monotonic() + budget_s
        loop_ms: list[float] = []
        while finished < runs and time.monotonic() < deadline:
            t0 = time.perf_counter()
            stats = job.run_once()
            loop_ms.append((time.perf_counter() - t0) * 1000)
            finished += stats.runs_finished
            loops += 1
            now = datetime.now(UTC)
            with env.engine.begin() as conn:
                conn.execute(update(TaskInstance)
                             .where(TaskInstance.state == "queued")
                             .values(state="success", start_date=now, end_date=now,
                                     duration=0.0))
            if loops % 10 == 0:
                series.append(_vmrss(os.getpid()))
        series.append(_vmrss(os.getpid()))
    group = f"d. scheduler over {finished} runs"
    print(f"scaling: scheduler RSS {rss0:.0f} -> {series[-1]:.0f} MiB over {finished} runs, "
          f"{loops} loops", flush=True)
    return [(group, "RSS MiB (sampled every 10 loops)", series),
            (group, "RSS growth MiB", [series[-1] - rss0]),
            (group, "loop ms", loop_ms)]


#: the parts of ``bench scaling`` (``--part``): a. history, b. runnable TIs, c. idle worker
#: tree RSS/PSS, d. scheduler RSS over many runs
PARTS = ("a", "b", "c", "d")


def run_scaling(quick: bool = False, parts: Sequence[str] = PARTS) -> list[Row]:
    rows: list[Row] = []
    if "a" in parts:
        rows += case_history([1_000, 10_000] if quick else [10_000, 100_000], loops=10)
    if "b" in parts:
        rows += case_runnable([1_000] if quick else [1_000, 5_000], loops=5)
    if "c" in parts:
        rows += case_worker_rss([1, 2] if quick else [1, 2, 4], settle=5 if quick else 10)
    if "d" in parts:
        rows += case_scheduler_rss(100 if quick else 1_000, budget_s=60 if quick else 180)
    return rows
