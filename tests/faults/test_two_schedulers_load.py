"""Two schedulers on PostgreSQL under load, one of them SIGKILLed and restarted twice
(issue 13, item 6).

The load is W3's shape (``../shared/bench/WORKLOADS.md``): 20 DAGs of ``head >> [p0 .. p7]
>> tail``, triggered five times back to back (100 runs, 1,000 task instances), run by two
``squall scheduler`` processes and one Celery worker (``-c 4``) on a private Redis and the
session's PostgreSQL test database. While the runs are going, scheduler ``a`` is SIGKILLed
(with its process group: its DAG processor) and started again, twice; each kill waits
until enough task instances have executed *and* the scheduler to be killed has task
instances QUEUED under its job id (so it leaves tries in flight for the others to adopt).
Scheduler ``b`` lives throughout.

What must hold:

* every run succeeds, within a deadline (nothing lost);
* every task instance executed exactly once, as try 1 (counted by a line each task
  appends to a file: ``dag_id task_id run_id try_number pid``), and none was failed by the
  queued timeout or as a zombie (no retries are configured: any of those fails its run);
* every Celery delivery beyond the first of a task instance (counted from the worker's
  ``received`` lines) was refused by the worker, and the refusal is accounted for by a
  re-queue the scheduler logged (an adoption reset, an orphan without a Celery task id, a
  failed publish) or by a duplicate send of a publish retry (same Celery task id): no task
  instance was queued twice as two live tries.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from squall.common.db import session_scope
from squall.common.models import DagRun, Job, TaskInstance
from tests.faults.helpers import sigkill_group
from tests.support.cluster import Cluster, Proc
from tests.support.services import wait_until

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)

DAGS = 20
TASKS_PER_DAG = 10
TRIGGERS = 5
TOTAL_TIS = DAGS * TASKS_PER_DAG * TRIGGERS
#: kill scheduler ``a`` once this many task instances have executed (and it has some QUEUED)
KILL_AFTER = (200, 550)
#: every run must have succeeded this long after the first trigger (a run takes 2-3 min on
#: the 2-core machine at a load average of 10-18; the deadline is for a stalled cluster)
RUN_DEADLINE = 600.0

#: W3's shape, with a task that records its execution (no-op otherwise)
LOAD_DAGS = '''
import os

import pendulum
from squall import DAG, PythonOperator

LOG = os.environ["SQUALL_TEST_EXEC_LOG"]


def record(ti):
    with open(LOG, "a") as f:
        f.write(f"{ti.dag_id} {ti.task_id} {ti.run_id} {ti.try_number} {os.getpid()}\\n")


for n in range(DAGS):
    with DAG(f"load_{n}", schedule=None, catchup=False,
             start_date=pendulum.datetime(2024, 1, 1, tz="UTC")) as dag:
        head = PythonOperator(task_id="head", python_callable=record)
        tail = PythonOperator(task_id="tail", python_callable=record)
        head >> [PythonOperator(task_id=f"p{i}", python_callable=record)
                 for i in range(8)] >> tail
    globals()[f"dag_{n}"] = dag
'''

#: small intervals so adoption and its timeout happen within seconds; the queued timeout
#: is long enough for a try to wait its turn behind 60 others on a loaded 2-core machine,
#: and short enough that a try stuck in QUEUED fails its run well inside the deadline; no
#: worker dies here, so the zombie threshold only needs to leave a heartbeat lease (ADR 17)
#: that a starved supervisor thread cannot outlive (26.75 s)
OVERRIDES: dict[str, dict[str, object]] = {
    "scheduler": {
        "orphaned_tasks_check_interval": 1,
        "scheduler_health_check_threshold": 3,
        "task_queued_timeout": 90,
        "zombie_threshold": 30,
    },
    "celery": {"task_adoption_timeout": 10},
    "core": {"default_task_retries": 0},
}

RECEIVED = re.compile(r"Celery task (\S+): TaskInstance (\S+) try (\d+) received")
NOT_STARTED = re.compile(r"TaskInstance (\S+): try (\d+) not started: (.*)$")
#: scheduler lines that re-queue the same try under a new Celery task id
REQUEUED = [
    re.compile(r"TaskInstance (\S+): try \d+: adopted, but its Celery task stayed PENDING"),
    re.compile(r"TaskInstance (\S+): try \d+: orphaned without a Celery task id"),
    re.compile(r"(\S+) try \d+: publish failed after"),
]
ADOPTED = re.compile(r"TaskInstance (\S+): try \d+ \(\w+\): adopted from scheduler job")


def read_load_executions(path: Path) -> Counter[tuple[str, str, str, int]]:
    """(dag_id, task_id, run_id, try_number) -> how many times it started executing."""
    counts: Counter[tuple[str, str, str, int]] = Counter()
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 5:
                counts[(parts[0], parts[1], parts[2], int(parts[3]))] += 1
    return counts


def executed(path: Path) -> int:
    return sum(read_load_executions(path).values())


def scheduler_job_id(cluster: Cluster, proc: Proc) -> int | None:
    with session_scope(cluster.session_factory) as session:
        return session.scalar(select(Job.id).where(Job.job_type == "SchedulerJob",
                                                   Job.pid == proc.process.pid)
                              .order_by(Job.id.desc()).limit(1))


def queued_by(cluster: Cluster, job_id: int) -> int:
    with session_scope(cluster.session_factory) as session:
        return int(session.scalar(
            select(func.count()).select_from(TaskInstance)
            .where(TaskInstance.queued_by_job_id == job_id,
                   TaskInstance.state == "queued")) or 0)


def run_states(cluster: Cluster) -> Counter[str]:
    with session_scope(cluster.session_factory) as session:
        return Counter(dict(session.execute(
            select(DagRun.state, func.count()).group_by(DagRun.state)).all()))


def log_text(cluster: Cluster, prefix: str) -> str:
    return "\n".join(p.log_path.read_text(errors="replace") for p in
                     {p.log_path: p for p in cluster.procs if p.name.startswith(prefix)}.values())


def unfinished(cluster: Cluster) -> str:
    """The task instances not finished, with what the worker logged of their Celery task
    ids (to tell a message never delivered from one refused or lost in the worker)."""
    with session_scope(cluster.session_factory) as session:
        rows = session.execute(select(
            TaskInstance.dag_id, TaskInstance.task_id, TaskInstance.run_id,
            TaskInstance.state, TaskInstance.try_number, TaskInstance.external_executor_id,
            TaskInstance.queued_by_job_id, TaskInstance.queued_dttm,
            TaskInstance.state_reason)
            .where(TaskInstance.state.not_in(["success", "failed", "upstream_failed",
                                              "skipped", "none", "scheduled"]))).all()
    worker_log = log_text(cluster, "w1").splitlines()
    out = [f"{len(rows)} task instance(s) queued or running:"]
    for r in rows[:20]:
        seen = [line for line in worker_log if r.external_executor_id
                and r.external_executor_id in line]
        out.append(f"  {r.dag_id}.{r.task_id}[{r.run_id}] {r.state} try {r.try_number} "
                   f"celery {r.external_executor_id} queued by job {r.queued_by_job_id} at "
                   f"{r.queued_dttm} ({r.state_reason}); worker lines: {seen[:3]}")
    return "\n".join(out)


def kill_when_busy(cluster: Cluster, proc: Proc, exec_log: Path, after: int) -> int:
    """Wait until ``after`` task instances have executed and ``proc`` (a scheduler) has
    task instances QUEUED under its job id, then SIGKILL its process group; how many
    task instances it had QUEUED just before."""
    job: list[int | None] = [None]
    seen = [0]

    def ready() -> bool:
        if proc.process.poll() is not None:
            raise AssertionError(f"{proc.name} died by itself:\n{cluster.logs(proc.name)}")
        if job[0] is None:
            job[0] = scheduler_job_id(cluster, proc)
        if job[0] is None or executed(exec_log) < after:
            return False
        seen[0] = queued_by(cluster, job[0])
        return seen[0] > 0

    try:
        wait_until(ready, RUN_DEADLINE / 2, interval=0.02,
                   message=f"{after} executions and {proc.name} with tries QUEUED")
    except AssertionError as exc:
        raise AssertionError(f"{exc} (executed {executed(exec_log)})\n{cluster.logs()}") from None
    sigkill_group(cluster, proc)
    log.info("SIGKILLed %s (job %s) with %d task instance(s) QUEUED under it, after %d "
             "executions", proc.name, job[0], seen[0], executed(exec_log))
    return seen[0]


def test_two_schedulers_under_load_with_one_killed_twice_run_each_task_once(
        cluster_factory: Callable[..., Cluster], record_property: Callable[[str, object], None]
) -> None:
    """Fault: two schedulers share the load of 1,000 task instances; scheduler ``a`` is
    SIGKILLed twice while it has tries QUEUED, and restarted at once each time. Every run
    succeeds, every task instance executed once as try 1, and every extra Celery delivery
    was refused and is accounted for by a logged re-queue or a publish retry."""
    cluster = cluster_factory("redis-pg", OVERRIDES)
    exec_log = cluster.home / "executions.log"
    cluster.extra_env["SQUALL_TEST_EXEC_LOG"] = str(exec_log)
    (cluster.dags_folder / "load.py").write_text(LOAD_DAGS.replace("DAGS", str(DAGS)))
    dag_ids = [f"load_{n}" for n in range(DAGS)]
    cluster.start_worker("w1", concurrency=4, wait=False)
    a = cluster.start_scheduler("sched_a")
    cluster.start_scheduler("sched_b")

    t0 = time.monotonic()
    run_ids = [f"load_{k}" for k in range(TRIGGERS)]
    for run_id in run_ids:
        cluster.cli("dags", "trigger", *dag_ids, "--run-id", run_id)
    triggered = time.monotonic() - t0

    queued_at_kill = []
    for i, after in enumerate(KILL_AFTER, start=1):
        queued_at_kill.append(kill_when_busy(cluster, a, exec_log, after))
        a = cluster.start_scheduler(f"sched_a{i}")

    def all_done() -> bool:
        for proc in cluster.procs:
            if not proc.stopped and proc.process.poll() is not None:
                raise AssertionError(f"{proc.name} died:\n{cluster.logs()}")
        states = run_states(cluster)
        return states.get("success", 0) + states.get("failed", 0) == DAGS * TRIGGERS

    try:
        wait_until(all_done, RUN_DEADLINE - (time.monotonic() - t0), interval=0.2,
                   message=f"all {DAGS * TRIGGERS} runs to finish")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: runs {dict(run_states(cluster))}, executed "
                             f"{executed(exec_log)}\n{unfinished(cluster)}\n"
                             f"{cluster.logs()}") from None
    wall = time.monotonic() - t0

    with session_scope(cluster.session_factory) as session:
        tis = session.execute(select(TaskInstance.dag_id, TaskInstance.task_id,
                                     TaskInstance.run_id, TaskInstance.state,
                                     TaskInstance.try_number, TaskInstance.state_reason)).all()
    assert run_states(cluster) == Counter({"success": DAGS * TRIGGERS})
    assert len(tis) == TOTAL_TIS
    bad = [t for t in tis if t.state != "success" or t.try_number != 1]
    assert not bad, bad[:20]
    counts = read_load_executions(exec_log)
    expected = {(t.dag_id, t.task_id, t.run_id, 1): 1 for t in tis}
    assert dict(counts) == expected, (
        {k: n for k, n in counts.items() if expected.get(k) != n},
        sorted(set(expected) - set(counts))[:20])

    # the Celery side: deliveries per task instance, and what explains the extra ones
    worker_log = log_text(cluster, "w1")
    scheduler_log = log_text(cluster, "sched_")
    deliveries: Counter[str] = Counter()
    ids_by_ti: dict[str, Counter[str]] = {}
    for celery_id, key, _try in RECEIVED.findall(worker_log):
        deliveries[key] += 1
        ids_by_ti.setdefault(key, Counter())[celery_id] += 1
    refused = Counter(m.group(1) for m in
                      (NOT_STARTED.search(line) for line in worker_log.splitlines()) if m)
    requeued: Counter[str] = Counter()
    for line in scheduler_log.splitlines():
        for pattern in REQUEUED:
            if m := pattern.search(line):
                requeued[m.group(1)] += 1
    adopted = sum(1 for _ in ADOPTED.finditer(scheduler_log))
    assert len(deliveries) == TOTAL_TIS, len(deliveries)
    unexplained = {}
    for key, n in deliveries.items():
        if n == 1:
            continue
        # n - 1 deliveries were refused; each is a message of an earlier Celery task id of a
        # re-queued try, or a second copy of one id (a publish attempt that timed out and
        # got through, or a redelivery)
        if refused[key] != n - 1 or len(ids_by_ti[key]) - 1 > requeued[key]:
            unexplained[key] = (n, dict(ids_by_ti[key]), refused[key], requeued[key])
    assert not unexplained, (
        f"{len(unexplained)} task instance(s) delivered more often than their logged "
        "re-queues explain (key: deliveries, Celery ids, refused, re-queues): "
        f"{dict(list(unexplained.items())[:10])}")
    figures = {
        "wall_s": round(wall, 1), "trigger_s": round(triggered, 1),
        "queued_at_kills": queued_at_kill, "adopted": adopted,
        "requeued": sum(requeued.values()),
        "extra_deliveries": sum(n - 1 for n in deliveries.values()),
        "refused": sum(refused.values()),
    }
    for name, value in figures.items():
        record_property(name, value)
    print(f"two schedulers under load: {figures}")
