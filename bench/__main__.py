"""``python -m bench run ...`` and ``python -m bench scaling``; see bench/README.md."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from types import FrameType

from bench.cluster import ACTIVE, CLUSTERS, BenchCluster
from bench.report import Row, append_results, print_table
from bench.workloads import WORKLOADS, Sample


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Stop every cluster still running (processes, redis-server, database), then exit."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for cluster in list(ACTIVE):
        try:
            cluster.stop()
        except Exception as exc:
            print(f"bench: cleanup of {cluster.home} failed: {exc}", file=sys.stderr)
    print(f"bench: {signal.Signals(signum).name}: everything started was stopped",
          file=sys.stderr, flush=True)
    os._exit(128 + signum)


def _parse_set(values: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"--set wants section.key=value, got {item!r}")
        section, name = key.split(".", 1)
        env[f"SQUALL__{section.upper()}__{name.upper()}"] = value
    return env


def cmd_run(args: argparse.Namespace) -> int:
    wanted = [w.strip().upper() for w in args.workload.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; known: {', '.join(WORKLOADS)}")
    extra = _parse_set(args.set)
    results: dict[str, list[Sample]] = {w: [] for w in wanted}
    with BenchCluster(args.cluster, concurrency=args.concurrency, extra_env=extra,
                      keep_home=args.keep_home) as cluster:
        print(f"bench: cluster {args.cluster} up (home {cluster.home}); waiting for DAGs",
              flush=True)
        cluster.wait_parsed()
        if args.warmup:
            cluster.wait_runs(cluster.trigger(["bench_chain"]))
        for w in wanted:
            for rep in range(args.repeat):
                t0 = time.monotonic()
                sample = WORKLOADS[w][1](cluster)
                results[w].append(sample)
                figures = ", ".join(f"{k}={v:.3g}" for k, v in sample.figures.items())
                print(f"bench: {w} #{rep + 1}: {figures} ({time.monotonic() - t0:.0f} s)",
                      flush=True)
    rows: list[Row] = []
    for w, samples in results.items():
        group = f"{w} {WORKLOADS[w][0]}"
        for key in samples[0].figures:
            rows.append((group, key, [s.figures[key] for s in samples]))
        for key in samples[0].usage:
            rows.append((group, key, [s.usage[key] for s in samples]))
    settings = (" " + " ".join(args.set)) if args.set else ""
    title = (f"bench run: cluster {args.cluster}, worker -c {args.concurrency}, "
             f"repeat {args.repeat}{settings}")
    print_table(title, rows)
    if not args.no_record:
        notes = ("Times from the metadata DB: wall = dag_run.queued_at (trigger) -> "
                 "dag_run.end_date (W3: first queued_at -> last end_date); hop = "
                 "start(c[i+1]) - end(c[i]). CPU s and peak RSS are of the process trees "
                 "(RSS summed over the tree's processes, sampled every 0.2 s).")
        if "WB" in wanted:
            notes += (" WB: wall = backfill.created_at (written by `squall dags backfill`) -> "
                      "the last end_date of its 1,000 task instances; tasks/s = 1000 / wall; "
                      "command start->success seen = the bench's clock from starting the "
                      "command until it reads the backfill row as success.")
        append_results(title, rows, notes)
    return 0


def cmd_scaling(args: argparse.Namespace) -> int:
    from bench.scaling import run_scaling

    rows = run_scaling(quick=args.quick)
    title = "bench scaling" + (" (quick)" if args.quick else "")
    print_table(title, rows)
    if not args.no_record:
        append_results(title, rows, "Loop times are wall ms of one SchedulerJob.run_once "
                       "(no-op executor, PostgreSQL); statements are SQL statements sent "
                       "per loop.")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bench.profile import run_profile

    return run_profile(Path(args.out), args.duration, _parse_set(args.set),
                       args.workload.upper(), on_cpu=args.on_cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run workloads W1-W4 and WB on a cluster of real processes")
    p.add_argument("--workload", default="W1,W2,W3,WB,W4",
                   help=f"comma-separated, e.g. W1,W2 (known: {', '.join(WORKLOADS)})")
    p.add_argument("--cluster", choices=CLUSTERS, default="redis-pg")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=4, help="worker -c (default 4)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="a Squall setting for every process (SQUALL__SECTION__KEY), e.g. "
                   "scheduler.scheduler_idle_sleep_time=0.1; recorded in the title")
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="skip the one unrecorded bench_chain run before measuring")
    p.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    p.add_argument("--keep-home", action="store_true", help="keep the temp SQUALL_HOME")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("scaling", help="scheduler loop / memory scaling")
    p.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test)")
    p.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    p.set_defaults(func=cmd_scaling)
    p = sub.add_parser("profile", help="py-spy the scheduler and worker during W2 (or W1, W3, "
                       "WB)")
    p.add_argument("--out", default="/tmp/squall-bench-profile", help="output folder")
    p.add_argument("--duration", type=int, default=25, help="py-spy seconds")
    p.add_argument("--workload", default="W2",
                   choices=["W1", "W2", "W3", "WB", "w1", "w2", "w3", "wb"])
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--on-cpu", action="store_true",
                   help="sample running threads only (CPU), not waiting ones")
    p.set_defaults(func=cmd_profile)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
