"""W1-W4 of ../shared/bench/WORKLOADS.md, WB (a backfill) and W6 (one task mapped 1,000
ways), against a warm :class:`BenchCluster`.

Every figure comes from the metadata database: ``dag_run.queued_at`` (written by
``squall dags trigger``: the trigger time) to ``dag_run.end_date`` (run SUCCESS), and the
task instances' ``start_date`` / ``end_date``; for WB, ``backfill.created_at`` (written by
``squall dags backfill``) to the last task instance's ``end_date``."""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bench.cluster import BenchCluster
from bench.procs import TreeSampler, tree_cpu_seconds

log = logging.getLogger(__name__)

MANY_DAG_IDS = [f"bench_many_{i}" for i in range(20)]
IDLE_SECONDS = 60.0

#: WB: ``bench/dags/bench_backfill.py`` (daily, W3's 10-task shape), 100 dates per backfill
BACKFILL_DAG_ID = "bench_backfill"
BACKFILL_RUNS = 100
BACKFILL_TASKS = 10
#: ``--max-active-runs`` of WB's backfill: 16 runs of up to 8 parallel tasks keep far more
#: task instances ready than the 4 worker slots take, so it is not what WB measures
BACKFILL_MAX_ACTIVE_RUNS = 16
#: the first date backfilled (the DAG's start_date); each repetition takes the next 100
BACKFILL_FIRST_DATE = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass
class Sample:
    """One repetition of one workload: named figures plus process-tree usage."""

    figures: dict[str, float] = field(default_factory=dict)
    usage: dict[str, float] = field(default_factory=dict)


def _usage(sampler: TreeSampler) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, u in sampler.usage.items():
        out[f"{name} cpu s"] = u.cpu_s
        out[f"{name} peak RSS MiB"] = u.peak_rss_mib
    return out


def _roots(cluster: BenchCluster) -> dict[str, int]:
    """Every scheduler's process tree (``scheduler``, ``scheduler2``, ...) and the worker's."""
    roots = {p.name: p.pid for p in cluster.scheduler_procs()}
    roots["worker"] = cluster.proc("worker").pid
    return roots


def w1_fanout(cluster: BenchCluster) -> Sample:
    with TreeSampler(_roots(cluster)) as sampler:
        runs = cluster.trigger(["bench_fanout"])
        (row,) = cluster.wait_runs(runs)
    wall = (row.end_date - row.queued_at).total_seconds()
    return Sample({"wall s": wall, "tasks/s": 102 / wall}, _usage(sampler))


def w2_chain(cluster: BenchCluster) -> Sample:
    with TreeSampler(_roots(cluster)) as sampler:
        runs = cluster.trigger(["bench_chain"])
        (row,) = cluster.wait_runs(runs)
    tis = cluster.task_rows("bench_chain", runs["bench_chain"])
    def ms(a: datetime, b: datetime) -> float:
        return (b - a).total_seconds() * 1000

    pairs = [(tis[f"c{i}"], tis[f"c{i + 1}"]) for i in range(19)]
    hops = [ms(a.end, b.start) for a, b in pairs]
    # a hop = scheduler part (end of c[i] -> c[i+1] QUEUED) + worker part (QUEUED -> start)
    hop_sched = [ms(a.end, b.queued) for a, b in pairs]
    hop_worker = [ms(b.queued, b.start) for _, b in pairs]
    durations = [ms(t.start, t.end) for t in tis.values()]
    wall = (row.end_date - row.queued_at).total_seconds()
    return Sample({"wall s": wall, "hop median ms": statistics.median(hops),
                   "hop max ms": max(hops),
                   "hop: end->next queued median ms": statistics.median(hop_sched),
                   "hop: queued->start median ms": statistics.median(hop_worker),
                   "task start->end median ms": statistics.median(durations),
                   "trigger->c0 start ms": ms(row.queued_at, tis["c0"].start)},
                  _usage(sampler))


def w3_many(cluster: BenchCluster) -> Sample:
    with TreeSampler(_roots(cluster)) as sampler:
        runs = cluster.trigger(MANY_DAG_IDS)
        rows = cluster.wait_runs(runs)
    wall = (max(r.end_date for r in rows) - min(r.queued_at for r in rows)).total_seconds()
    return Sample({"wall s": wall, "tasks/s": 200 / wall}, _usage(sampler))


def wb_backfill(cluster: BenchCluster) -> Sample:
    """A 100-run backfill of the 10-task ``bench_backfill``, created as a user does with
    ``squall dags backfill -s START -e END -y --detach --max-active-runs 16``, followed until
    the ``backfill`` row is ``success``.

    Each repetition backfills the 100 dates after the DAG's newest run (the first one
    starts at the DAG's start_date), so it starts with no run in its range and no backfill
    active; the earlier repetitions' runs stay behind, finished, as W1-W3's do."""
    last = cluster.last_logical_date(BACKFILL_DAG_ID)
    first = BACKFILL_FIRST_DATE if last is None else last + timedelta(days=1)
    end = first + timedelta(days=BACKFILL_RUNS - 1)
    with TreeSampler(_roots(cluster)) as sampler:
        t0 = time.monotonic()
        answer = cluster.backfill(BACKFILL_DAG_ID, first.date().isoformat(),
                                  end.date().isoformat(), BACKFILL_MAX_ACTIVE_RUNS)
        if len(answer["runs"]) != BACKFILL_RUNS or answer["existing"]:
            raise RuntimeError(f"backfill of {BACKFILL_DAG_ID} {first:%Y-%m-%d}..{end:%Y-%m-%d}"
                               f": {len(answer['runs'])} runs planned, "
                               f"{len(answer['existing'])} dates already run, "
                               f"expected {BACKFILL_RUNS} and 0")
        backfill_id = int(answer["backfill_id"])
        row = cluster.wait_backfill(backfill_id)
        command_wall = time.monotonic() - t0
    runs = cluster.backfill_runs(backfill_id)
    tis = cluster.backfill_tis(backfill_id)
    run_states = Counter(r.state for r in runs)
    ti_states = Counter(t.state for t in tis)
    expected_tis = BACKFILL_RUNS * BACKFILL_TASKS
    if run_states != {"success": BACKFILL_RUNS} or ti_states != {"success": expected_tis}:
        raise RuntimeError(f"backfill {backfill_id}: runs {dict(run_states)}, task instances "
                           f"{dict(ti_states)}; expected {BACKFILL_RUNS} and {expected_tis} "
                           "success")
    last_end = max(t.end_date for t in tis)
    wall = (last_end - row.created_at).total_seconds()
    first_queued = min(r.queued_at for r in runs)
    log.debug("backfill %s: %s..%s, wall %.2f s", backfill_id, first, end, wall)
    return Sample({"wall s": wall, "tasks/s": expected_tis / wall,
                   "created->first run queued ms":
                       (first_queued - row.created_at).total_seconds() * 1000,
                   "last task end->backfill success ms":
                       (row.completed_at - last_end).total_seconds() * 1000,
                   "command start->success seen s": command_wall},
                  _usage(sampler))


#: W6: ``bench/dags/bench_mapped.py``
MAPPED_DAG_ID = "bench_mapped"
MAPPED_LENGTH = 1000


def w6_mapped(cluster: BenchCluster) -> Sample:
    """One task expanded 1,000 ways from its upstream's return value.

    The scheduler inserts the 1,000 instances in one transaction and queues none of them
    before it commits, so upstream success (``make``'s ``end_date``) -> the first mapped
    instance's ``queued_dttm`` bounds the expansion from above; "all queued" is the newest
    ``queued_dttm`` of the 1,000, which ``[core] parallelism`` (32 at the defaults) and
    the worker's slots spread over the run."""
    with TreeSampler(_roots(cluster)) as sampler:
        runs = cluster.trigger([MAPPED_DAG_ID])
        (row,) = cluster.wait_runs(runs)
    run_id = runs[MAPPED_DAG_ID]
    make = cluster.task_rows(MAPPED_DAG_ID, run_id)["make"]
    mapped = cluster.mapped_rows(MAPPED_DAG_ID, run_id, "noop")
    if len(mapped) != MAPPED_LENGTH:
        raise RuntimeError(f"{MAPPED_DAG_ID}: {len(mapped)} mapped instances, "
                           f"expected {MAPPED_LENGTH}")
    wall = (row.end_date - row.queued_at).total_seconds()
    last_queued = max(t.queued for t in mapped)
    first_queued = min(t.queued for t in mapped)
    return Sample({
        "wall s": wall, "tasks/s": (MAPPED_LENGTH + 1) / wall,
        "make end->first mapped queued ms": (first_queued - make.end).total_seconds() * 1000,
        "make end->all mapped queued s": (last_queued - make.end).total_seconds(),
    }, _usage(sampler))


def w4_idle(cluster: BenchCluster, seconds: float = IDLE_SECONDS) -> Sample:
    roots = _roots(cluster)
    with TreeSampler(roots, interval=1.0) as sampler:
        cpu0 = {n: tree_cpu_seconds(p) for n, p in roots.items()}
        t0 = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        cpu1 = {n: tree_cpu_seconds(p) for n, p in roots.items()}
    figures = {f"{n} CPU %": 100 * (cpu1[n] - cpu0[n]) / elapsed for n in roots}
    return Sample(figures, _usage(sampler))


WORKLOADS: dict[str, tuple[str, Callable[[BenchCluster], Sample]]] = {
    "W1": ("fan-out 102 tasks", w1_fanout),
    "W2": ("chain 20 tasks", w2_chain),
    "W3": ("20 DAGs x 10 tasks", w3_many),
    "WB": ("backfill 100 runs x 10 tasks", wb_backfill),
    "W4": ("idle 60 s", w4_idle),
    "W6": ("one task mapped 1,000 ways", w6_mapped),
}
