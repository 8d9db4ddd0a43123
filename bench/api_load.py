"""``python -m bench api``: the REST API under a steady load with a large history.

A PostgreSQL database of its own (``squall_bench_api``) is filled with ``--runs`` finished
runs of one DAG of ``--tasks`` tasks (100,000 task instances by default, written with bulk
INSERTs and then ANALYZEd, no scheduler), then ``squall api`` is started as users start it
and asked, at a steady ``--rate`` requests per second for ``--seconds``, alternately for one
task instance (``GET .../dagRuns/{run_id}/taskInstances/{task_id}``) and for the first page
(100) of a run's task instances (``GET .../dagRuns/{run_id}/taskInstances``), each from a
random run. Latency is measured per request from sending it to its last byte, and also from
its slot (the time it was due), so that the wait for a free client thread counts too: a
server that falls behind is not hidden by the client sending later. The report gives p50 /
p99 / max per kind, the errors, and how many requests started more than 50 ms late.

Before the load, each endpoint is called once and its answer checked (200, the right task
instance, a full page and ``total_entries``); after it, the DAG's grid is loaded as the web
UI loads it (``GET /ui/api/dags/{dag_id}/grid``: the 25 newest runs x every task), checked to
hold 25 x ``--tasks`` states, and timed: the first request, then the median of the next
ones. Last, the PostgreSQL plans of the statements behind these reads are checked for
sequential scans of ``task_instance`` / ``dag_run`` (the index check).

No serialized DAG is written: these reads do not need one (the grid then orders the tasks by
name instead of upstream first).
"""

from __future__ import annotations

import base64
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, insert, text

from bench.cluster import drop_pg_database, free_port, recreate_pg_database, wait_for
from squall.api.users import create_user
from squall.common import dbops
from squall.common.db import make_engine, make_session_factory, session_scope
from squall.common.models import DagModel, DagRun, TaskInstance

log = logging.getLogger(__name__)

DB_NAME = "squall_bench_api"
DAG_ID = "bench_api"
USER, PASSWORD = "bench", "bench-password"
START = datetime(2020, 1, 1, tzinfo=UTC)
GRID_RUNS = 25
#: grid requests after the first (their median is reported)
GRID_REPEAT = 5
#: a request that starts this much after its slot is counted late
LATE_S = 0.05
KINDS = ("get_task_instance", "list_run_tis")
#: the ``squall api`` processes running, for the signal handler of ``bench/__main__.py``
SERVERS: list[subprocess.Popen[bytes]] = []


@dataclass
class ApiLoadResult:
    runs: int
    tasks: int
    rate: float
    seconds: float
    #: kind -> latencies in ms, from sending the request to its last byte
    latencies: dict[str, list[float]] = field(default_factory=dict)
    #: kind -> the same from the request's slot (the time it was due): includes the wait
    #: for a free client thread, which the server's slowness causes (no coordinated omission)
    from_slot: dict[str, list[float]] = field(default_factory=dict)
    errors: int = 0
    late: int = 0
    #: the achieved request rate (requests sent / time from the first to the last send)
    achieved_rate: float = 0.0
    grid_first_ms: float = 0.0
    grid_ms: list[float] = field(default_factory=list)
    grid_cells: int = 0
    #: statement -> the scans of its plan ("Index Scan using ... on task_instance", ...)
    plans: dict[str, list[str]] = field(default_factory=dict)
    #: /proc/loadavg's 1-minute figure before and after the load
    load_before: float = 0.0
    load_after: float = 0.0
    api_pid: int = 0

    @property
    def task_instances(self) -> int:
        return self.runs * self.tasks

    def percentiles(self, kind: str, *, from_slot: bool = False) -> dict[str, float]:
        ordered = sorted((self.from_slot if from_slot else self.latencies)[kind])
        if not ordered:
            return {"n": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
        return {"n": len(ordered), "p50": statistics.median(ordered),
                "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
                "max": ordered[-1]}


def load_average() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def seed(url: str, runs: int, tasks: int) -> list[str]:
    """The bench DAG with ``runs`` finished runs of ``tasks`` task instances each (oldest
    first) and a viewer user; the run ids, oldest first."""
    engine = make_engine(url)
    dbops.migrate(engine)
    factory = make_session_factory(engine)
    with session_scope(factory) as session:
        session.add(DagModel(dag_id=DAG_ID, fileloc="/bench/bench_api.py", schedule="@daily",
                             max_active_tasks=16))
        create_user(session, USER, "viewer", PASSWORD)
    engine.dispose()
    run_ids = [f"scheduled__{(START + timedelta(days=n)).isoformat()}" for n in range(runs)]
    raw = create_engine(url)
    with raw.begin() as conn:
        run_rows = []
        for n, run_id in enumerate(run_ids):
            when = START + timedelta(days=n)
            run_rows.append({"dag_id": DAG_ID, "run_id": run_id, "run_type": "scheduled",
                             "logical_date": when, "data_interval_start": when,
                             "data_interval_end": when + timedelta(days=1),
                             "state": "success", "external_trigger": False,
                             "queued_at": when, "start_date": when,
                             "end_date": when + timedelta(minutes=5)})
        conn.execute(insert(DagRun), run_rows)
        batch: list[dict[str, Any]] = []
        for n, run_id in enumerate(run_ids):
            when = START + timedelta(days=n)
            for t in range(tasks):
                batch.append({"dag_id": DAG_ID, "task_id": f"task_{t:04d}", "run_id": run_id,
                              "try_number": 1, "max_tries": 0, "state": "success",
                              "hostname": "bench-host", "pool": "default_pool",
                              "pool_slots": 1, "queue": "default", "priority_weight": 1,
                              "operator": "BashOperator", "start_date": when,
                              "end_date": when + timedelta(seconds=3), "duration": 3.0})
                if len(batch) >= 5000:
                    conn.execute(insert(TaskInstance), batch)
                    batch = []
        if batch:
            conn.execute(insert(TaskInstance), batch)
    # what autovacuum would do soon after such a load: planner statistics for the new rows
    with raw.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE dag_run"))
        conn.execute(text("ANALYZE task_instance"))
    raw.dispose()
    return run_ids


def _auth() -> dict[str, str]:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _ti_path(run_id: str, task_id: str) -> str:
    return f"/api/v1/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}"


def _list_path(run_id: str) -> str:
    return f"/api/v1/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances"


def run(*, runs: int = 500, tasks: int = 200, rate: float = 100.0, seconds: float = 20.0,
        workers: int = 16, keep_db: bool = False, api_workers: int = 1) -> ApiLoadResult:
    """Seed, start ``squall api``, check, load, time the grid, check the plans."""
    if runs < GRID_RUNS or tasks < 1:
        raise ValueError(f"--runs must be at least {GRID_RUNS} and --tasks at least 1")
    url = recreate_pg_database(DB_NAME)
    home = Path(tempfile.mkdtemp(prefix="squall-bench-api-"))
    server: subprocess.Popen[bytes] | None = None
    try:
        started = time.monotonic()
        run_ids = seed(url, runs, tasks)
        print(f"bench: seeded {runs * tasks:,} task instances ({runs} runs x {tasks} tasks) "
              f"in {time.monotonic() - started:.1f} s", flush=True)
        port = free_port()
        env = {**os.environ, "SQUALL_HOME": str(home),
               "SQUALL__DATABASE__SQL_ALCHEMY_CONN": url, "SQUALL__API__PORT": str(port),
               "SQUALL__API__WORKERS": str(api_workers),
               "SQUALL__LOGGING__LOGGING_LEVEL": "WARNING"}
        log_file = (home / "api.log").open("wb")
        server = subprocess.Popen([sys.executable, "-m", "squall", "api"], env=env,
                                  stdout=log_file, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        SERVERS.append(server)
        log_file.close()
        base = f"http://127.0.0.1:{port}"
        result = ApiLoadResult(runs=runs, tasks=tasks, rate=rate, seconds=seconds,
                               latencies={k: [] for k in KINDS},
                               from_slot={k: [] for k in KINDS}, api_pid=server.pid)
        _wait_up(server, base, home / "api.log")
        print(f"bench: squall api up (pid {server.pid}, {base})", flush=True)
        with httpx.Client(base_url=base, headers=_auth(), timeout=30) as client:
            _check_endpoints(client, run_ids, tasks)
        result.load_before = load_average()
        _load(base, run_ids, tasks, result, workers)
        result.load_after = load_average()
        _grid(base, tasks, result)
        result.plans = explain(url, run_ids)
        return result
    finally:
        if server is not None:
            _stop(server)
        shutil.rmtree(home, ignore_errors=True)
        if not keep_db:
            drop_pg_database(DB_NAME)


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if server in SERVERS:
        SERVERS.remove(server)


def stop_servers() -> None:
    """Stop every ``squall api`` still running (on SIGINT / SIGTERM)."""
    for server in list(SERVERS):
        _stop(server)


def _wait_up(server: subprocess.Popen[bytes], base: str, log_path: Path) -> None:
    def up() -> bool:
        if server.poll() is not None:
            return True
        try:
            return httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 60, "squall api to answer /api/v1/health")
    if server.poll() is not None:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"squall api exited with {server.returncode}: {tail}")


def _check_endpoints(client: httpx.Client, run_ids: list[str], tasks: int) -> None:
    """One call of each endpoint the load uses, its answer checked (this also warms the
    credential memo, so the load does not time the one password hash)."""
    run_id, task_id = run_ids[0], f"task_{tasks - 1:04d}"
    response = client.get(_ti_path(run_id, task_id))
    if response.status_code != 200:
        raise RuntimeError(f"GET task instance: {response.status_code} {response.text[:300]}")
    body = response.json()
    if (body["dag_run_id"], body["task_id"], body["state"]) != (run_id, task_id, "success"):
        raise RuntimeError(f"GET task instance: unexpected answer {body}")
    response = client.get(_list_path(run_id))
    if response.status_code != 200:
        raise RuntimeError(f"list run's task instances: {response.status_code} "
                           f"{response.text[:300]}")
    page = response.json()
    if page["total_entries"] != tasks or len(page["task_instances"]) != min(100, tasks):
        raise RuntimeError(f"list run's task instances: total_entries "
                           f"{page['total_entries']}, {len(page['task_instances'])} items, "
                           f"expected {tasks} and {min(100, tasks)}")


def _load(base: str, run_ids: list[str], tasks: int, result: ApiLoadResult,
          workers: int) -> None:
    """``rate * seconds`` requests, the i-th sent at ``start + i / rate`` by a pool of
    ``workers`` threads (a request that finds no free thread waits, and counts as late)."""
    rng = random.Random(7)
    lock = threading.Lock()
    client = httpx.Client(base_url=base, headers=_auth(), timeout=10,
                          limits=httpx.Limits(max_connections=workers,
                                              max_keepalive_connections=workers))

    def one(kind: str, path: str, due: float) -> None:
        begin = time.monotonic()
        try:
            ok = client.get(path).status_code == 200
        except httpx.HTTPError:
            ok = False
        end = time.monotonic()
        with lock:
            if not ok:
                result.errors += 1
            result.latencies[kind].append((end - begin) * 1000)
            result.from_slot[kind].append((end - due) * 1000)
            if begin - due > LATE_S:
                result.late += 1

    total = int(result.rate * result.seconds)
    start = time.monotonic() + 0.2
    last_send = start
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for i in range(total):
                run_id = rng.choice(run_ids)
                if i % 2 == 0:
                    kind, path = KINDS[0], _ti_path(run_id, f"task_{rng.randrange(tasks):04d}")
                else:
                    kind, path = KINDS[1], _list_path(run_id)
                due = start + i / result.rate
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)  # the rate pacing
                last_send = time.monotonic()
                pool.submit(one, kind, path, due)
    finally:
        client.close()
    if total > 1 and last_send > start:
        result.achieved_rate = (total - 1) / (last_send - start)


def _grid(base: str, tasks: int, result: ApiLoadResult) -> None:
    """The grid as the web UI asks for it, timed: once cold, then :data:`GRID_REPEAT` more
    times; the answer must hold 25 runs x ``tasks`` states, none missing."""
    timings = []
    with httpx.Client(base_url=base, headers=_auth(), timeout=30) as client:
        for _ in range(1 + GRID_REPEAT):
            begin = time.monotonic()
            response = client.get(f"/ui/api/dags/{DAG_ID}/grid")
            timings.append((time.monotonic() - begin) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"grid: {response.status_code} {response.text[:300]}")
            body = response.json()
            cells = sum(1 for states in body["states"].values() for s in states
                        if s is not None)
            if (len(body["runs"]) != GRID_RUNS or len(body["tasks"]) != tasks
                    or cells != GRID_RUNS * tasks):
                raise RuntimeError(f"grid: {len(body['runs'])} runs, {len(body['tasks'])} "
                                   f"tasks, {cells} states; expected {GRID_RUNS} x {tasks}")
    result.grid_first_ms, result.grid_ms, result.grid_cells = timings[0], timings[1:], cells


#: the statements behind the three reads, as the routes build them (PostgreSQL)
_STATEMENTS = {
    "get task instance (by primary key)":
        "SELECT * FROM task_instance WHERE dag_id = :dag AND task_id = :task "
        "AND run_id = :run",
    "get the run (get / list)":
        "SELECT * FROM dag_run WHERE dag_id = :dag AND run_id = :run",
    "list a run's task instances (page)":
        "SELECT * FROM task_instance JOIN dag_run ON dag_run.dag_id = task_instance.dag_id "
        "AND dag_run.run_id = task_instance.run_id WHERE task_instance.dag_id = :dag "
        "AND task_instance.run_id = :run ORDER BY dag_run.logical_date, "
        "task_instance.dag_id, task_instance.run_id, task_instance.task_id LIMIT 100",
    "list: total_entries (count)":
        "SELECT count(*) FROM (SELECT task_instance.task_id FROM task_instance JOIN dag_run "
        "ON dag_run.dag_id = task_instance.dag_id AND dag_run.run_id = task_instance.run_id "
        "WHERE task_instance.dag_id = :dag AND task_instance.run_id = :run) AS counted",
    "grid: 25 newest runs":
        "SELECT run_id FROM dag_run WHERE dag_id = :dag ORDER BY logical_date DESC LIMIT 25",
    "grid: their task instances":
        "SELECT task_id, run_id, state FROM task_instance WHERE dag_id = :dag "
        "AND run_id = ANY(:runs)",
}


def _scans(node: dict[str, Any]) -> list[str]:
    out = []
    kind = node.get("Node Type", "")
    if "Scan" in kind and "Relation Name" in node:
        index = f" using {node['Index Name']}" if "Index Name" in node else ""
        out.append(f"{kind}{index} on {node['Relation Name']}")
    for child in node.get("Plans", []):
        out.extend(_scans(child))
    return out


def explain(url: str, run_ids: list[str]) -> dict[str, list[str]]:
    """The scans PostgreSQL plans for each statement of :data:`_STATEMENTS`."""
    engine = create_engine(url)
    params = {"dag": DAG_ID, "run": run_ids[len(run_ids) // 2], "task": "task_0000",
              "runs": run_ids[-GRID_RUNS:]}
    plans = {}
    try:
        with engine.connect() as conn:
            for name, sql in _STATEMENTS.items():
                plan = conn.execute(text(f"EXPLAIN (FORMAT JSON) {sql}"), params).scalar_one()
                plans[name] = _scans(plan[0]["Plan"])
    finally:
        engine.dispose()
    return plans
