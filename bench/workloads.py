"""W1-W4 of ../shared/bench/WORKLOADS.md against a warm :class:`BenchCluster`.

Every figure comes from the metadata database: ``dag_run.queued_at`` (written by
``squall dags trigger``: the trigger time) to ``dag_run.end_date`` (run SUCCESS), and the
task instances' ``start_date`` / ``end_date``."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from bench.cluster import BenchCluster
from bench.procs import TreeSampler, tree_cpu_seconds

MANY_DAG_IDS = [f"bench_many_{i}" for i in range(20)]
IDLE_SECONDS = 60.0


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
    return {"scheduler": cluster.proc("scheduler").pid, "worker": cluster.proc("worker").pid}


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
    "W4": ("idle 60 s", w4_idle),
}
