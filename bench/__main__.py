"""``python -m bench run ...``, ``scaling``, ``profile``, ``api``, ``triggerer``, ``cli`` and
``pickup``; see bench/README.md."""

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
    api_load = sys.modules.get("bench.api_load")
    if api_load is not None:
        api_load.stop_servers()
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


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " / ".join(f.read().split()[:3])
    except OSError:
        return "?"


def _parse_schedulers(value: str) -> list[int]:
    try:
        counts = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        counts = []
    if not counts or any(n < 1 for n in counts) or len(set(counts)) != len(counts):
        raise SystemExit(f"--schedulers wants N or N,M,... (distinct, >= 1), got {value!r}")
    return counts


def _run_warm(args: argparse.Namespace, wanted: list[str], counts: list[int],
              extra: dict[str, str], results: dict[tuple[str, int], list[Sample]]) -> None:
    """W1-W4, WB and W6, each ``--repeat`` times, on one warm cluster."""
    with BenchCluster(args.cluster, concurrency=args.concurrency, extra_env=extra,
                      keep_home=args.keep_home, schedulers=counts[0]) as cluster:
        print(f"bench: cluster {args.cluster} up (home {cluster.home}); waiting for DAGs",
              flush=True)
        cluster.wait_parsed()
        if args.warmup:
            cluster.wait_runs(cluster.trigger(["bench_chain"]))
        for w in wanted:
            for rep in range(args.repeat):
                for n in counts:
                    cluster.set_schedulers(n)
                    t0 = time.monotonic()
                    sample = WORKLOADS[w][1](cluster)
                    results[(w, n)].append(sample)
                    figures = ", ".join(f"{k}={v:.3g}" for k, v in sample.figures.items())
                    print(f"bench: {w} #{rep + 1} ({n} scheduler(s)): {figures} "
                          f"({time.monotonic() - t0:.0f} s)", flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    wanted = [w.strip().upper() for w in args.workload.split(",") if w.strip()]
    w5 = "W5" in wanted
    wanted = [w for w in wanted if w != "W5"]
    unknown = [w for w in wanted if w not in WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; known: {', '.join(WORKLOADS)}")
    counts = _parse_schedulers(args.schedulers)
    if max(counts) > 1 and args.cluster != "redis-pg":
        raise SystemExit("more than one scheduler needs PostgreSQL: --cluster redis-pg")
    extra = _parse_set(args.set)
    load_before = _loadavg()
    # (workload, schedulers) -> samples; with several counts, each repetition runs the
    # workload once per count, alternating on the same warm cluster
    results: dict[tuple[str, int], list[Sample]] = {(w, n): [] for w in wanted for n in counts}
    w5_samples: list[Sample] = []
    w5_settings: dict[str, str] = {}
    if w5:
        from bench.many_files import processor_settings, w5_many_files

        if counts != [1]:
            raise SystemExit("W5 runs with one scheduler")
        for rep in range(args.repeat):
            t0 = time.monotonic()
            sample = w5_many_files(args.cluster, concurrency=args.concurrency, extra_env=extra,
                                   keep_home=args.keep_home)
            w5_samples.append(sample)
            figures = ", ".join(f"{k}={v:.3g}" for k, v in sample.figures.items())
            print(f"bench: W5 #{rep + 1}: {figures} ({time.monotonic() - t0:.0f} s)",
                  flush=True)
        probe = BenchCluster(args.cluster, extra_env=extra)
        w5_settings = processor_settings(probe)
        probe.stop()
    if wanted:
        _run_warm(args, wanted, counts, extra, results)
    rows: list[Row] = []
    for (w, n), samples in results.items():
        group = f"{w} {WORKLOADS[w][0]}"
        if counts != [1]:
            group += f", {n} scheduler{'s' if n > 1 else ''}"
        for key in samples[0].figures:
            rows.append((group, key, [s.figures[key] for s in samples]))
        for key in samples[0].usage:
            rows.append((group, key, [s.usage[key] for s in samples]))
    if w5_samples:
        group = "W5 1,000 DAG files x 10 tasks"
        for key in w5_samples[0].figures:
            rows.append((group, key, [s.figures[key] for s in w5_samples]))
        for key in w5_samples[0].usage:
            rows.append((group, key, [s.usage[key] for s in w5_samples]))
    settings = (" " + " ".join(args.set)) if args.set else ""
    schedulers = "" if counts == [1] else f"schedulers {args.schedulers}, "
    title = (f"bench run: cluster {args.cluster}, {schedulers}worker -c {args.concurrency}, "
             f"repeat {args.repeat}{settings}")
    print_table(title, rows)
    if not args.no_record:
        notes = ("Times from the metadata DB: wall = dag_run.queued_at (trigger) -> "
                 "dag_run.end_date (W3: first queued_at -> last end_date); hop = "
                 "start(c[i+1]) - end(c[i]). CPU s and peak RSS are of the process trees "
                 "(RSS summed over the tree's processes, sampled every 0.2 s).")
        notes += (f" Load average (1/5/15 min) at the start: {load_before}; at the end: "
                  f"{_loadavg()}.")
        if len(counts) > 1:
            notes += (f" Schedulers {args.schedulers}: each repetition ran the workload once "
                      "with each count in that order, on the same warm cluster (schedulers "
                      "stopped with SIGTERM or started, and heartbeating, in between).")
        if w5:
            notes += (" W5: a fresh cluster per repetition whose DAG folder is bench/dags plus "
                      "1,000 generated files (bench/many_files.py); times from the bench's "
                      "clock: scheduler start -> every w5_* DAG has an active dag row and a "
                      "serialized_dag row; one file rewritten (11th task) -> its dag_hash "
                      "changes. DAG processor settings (defaults): "
                      + ", ".join(f"{k} {v}" for k, v in w5_settings.items()) + ".")
        if "WB" in wanted:
            notes += (" WB: wall = backfill.created_at (written by `squall dags backfill`) -> "
                      "the last end_date of its 1,000 task instances; tasks/s = 1000 / wall; "
                      "command start->success seen = the bench's clock from starting the "
                      "command until it reads the backfill row as success.")
        append_results(title, rows, notes)
    return 0


def cmd_scaling(args: argparse.Namespace) -> int:
    from bench.scaling import PARTS, run_scaling

    parts = tuple(args.part) if args.part else PARTS
    rows = run_scaling(quick=args.quick, parts=parts)
    title = ("bench scaling" + (" (quick)" if args.quick else "")
             + (f" (parts {','.join(parts)})" if args.part else ""))
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


def cmd_api(args: argparse.Namespace) -> int:
    from bench.api_load import GRID_RUNS, KINDS, run

    result = run(runs=args.runs, tasks=args.tasks, rate=args.rate, seconds=args.seconds,
                 workers=args.workers, keep_db=args.keep_db, api_workers=args.api_workers)
    names = {KINDS[0]: "GET task instance", KINDS[1]: "list a run's TIs (100)"}
    rows: list[Row] = []
    for kind in KINDS:
        p = result.percentiles(kind)
        group = names[kind]
        q = result.percentiles(kind, from_slot=True)
        rows += [(group, "requests", [p["n"]]), (group, "p50 ms", [p["p50"]]),
                 (group, "p99 ms", [p["p99"]]), (group, "max ms", [p["max"]]),
                 (group, "p50 ms from slot", [q["p50"]]),
                 (group, "p99 ms from slot", [q["p99"]])]
    rows += [("load", "achieved requests/s", [result.achieved_rate]),
             ("load", "errors", [float(result.errors)]),
             ("load", "late (> 50 ms after slot)", [float(result.late)]),
             ("load", "load avg (1 min) before", [result.load_before]),
             ("load", "load avg (1 min) after", [result.load_after]),
             (f"grid {GRID_RUNS} runs x {result.tasks} tasks", "first ms",
              [result.grid_first_ms]),
             (f"grid {GRID_RUNS} runs x {result.tasks} tasks", "next ms", result.grid_ms)]
    title = (f"bench api: {result.task_instances:,} task instances ({result.runs} runs x "
             f"{result.tasks} tasks), {result.rate:g} requests/s for {result.seconds:g} s, "
             f"{args.api_workers} server process(es)")
    print_table(title, rows)
    plan_lines = [f"- {name}: {'; '.join(scans) or '(no table scan)'}"
                  for name, scans in result.plans.items()]
    seq = [name for name, scans in result.plans.items()
           if any(s.startswith("Seq Scan") for s in scans)]
    print("PostgreSQL plans:\n" + "\n".join(plan_lines))
    print("index check: " + (f"sequential scans in {seq}" if seq else
                             "every read uses an index"))
    if not args.no_record:
        notes = ("Latency: the bench's clock from sending a request to its last byte (httpx, "
                 f"{args.workers} client threads on the same machine), GET one task instance "
                 "and list the first page (100) of a run's task instances alternately, each "
                 "from a random run; late = started more than 50 ms after its slot (no free client "
                 "thread); \"from slot\" = from the time it was due to its last byte. Grid: "
                 "`GET /ui/api/dags/{dag_id}/grid` (25 newest runs x every task, "
                 f"{result.grid_cells:,} states checked), the first request and the next "
                 f"{len(result.grid_ms)}. Load avg: /proc/loadavg (1 min) before and after the "
                 "load. Plans (index check, EXPLAIN after ANALYZE):\n\n" + "\n".join(plan_lines))
        append_results(title, rows, notes)
    return 0


def cmd_triggerer(args: argparse.Namespace) -> int:
    if args.through_worker:
        return _triggerer_through_worker(args)
    from bench.triggerer import run_triggerer_bench

    if args.idle is None:
        args.idle = 30.0
    load_before = _loadavg()
    sample = run_triggerer_bench(args.cluster, triggers=args.triggers, idle=args.idle,
                                 spread=args.spread, keep_home=args.keep_home,
                                 extra_env=_parse_set(args.set))
    rows = sample.rows()
    title = (f"bench triggerer: {args.triggers:,} deferred timers held by one triggerer "
             f"({args.cluster})" + (f" {' '.join(args.set)}" if args.set else ""))
    print_table(title, rows)
    if not args.no_record:
        notes = ("Idle: the triggerer process's RSS (sampled every 0.2 s) and CPU (/proc, "
                 f"utime + stime) over {args.idle:g} s while every timer waits, from 2 s after "
                 "the last trigger started; targets (issue 25): < 150 MiB, < 5 % of a core. "
                 f"Fire -> SCHEDULED: the timers come due spread over {args.spread:g} s; each "
                 "event carries the wall time it fired, and the task instance's updated_at is "
                 "set by the triggerer's compare-and-set to SCHEDULED (same host, same clock; "
                 "the commit follows within the same write). No scheduler or worker runs: the "
                 "figure stops at SCHEDULED. Load average (1/5/15 min) at the start: "
                 f"{load_before}; at the end: {_loadavg()}.")
        append_results(title, rows, notes)
    return 0


def _triggerer_through_worker(args: argparse.Namespace) -> int:
    from bench.triggerer_worker import TASKS, run_through_worker

    if args.triggers != TASKS:
        raise SystemExit(f"--through-worker runs the DAG's {TASKS} mapped tasks: "
                         "--triggers is fixed")
    idle = 20.0 if args.idle is None else args.idle
    load_before = _loadavg()
    sample = run_through_worker(args.cluster, tasks=args.triggers, idle=idle, lead=args.lead,
                                concurrency=args.concurrency, keep_home=args.keep_home,
                                extra_env=_parse_set(args.set))
    load_after = _loadavg()
    rows = sample.rows()
    title = (f"bench triggerer --through-worker: {args.triggers:,} deferred tasks, one "
             f"triggerer, scheduler, worker -c {args.concurrency} ({args.cluster})"
             + (f" {' '.join(args.set)}" if args.set else ""))
    print_table(title, rows)
    print(f"load average (1/5/15 min): {load_before} at the start, {load_after} at the end")
    if not args.no_record:
        notes = ("One run of bench/dags/bench_deferred.py: one operator mapped "
                 f"{args.triggers:,} ways, each deferring on a timer due at T = the trigger "
                 f"command + {args.lead:g} s (a scheduler, a Celery worker, one squall "
                 "triggerer). Idle: from 2 s after every task instance was DEFERRED and the "
                 "triggerer had started every trigger, its RSS (every 0.2 s) and CPU (/proc) "
                 f"over the window (up to {idle:g} s, ending before T); targets (issue 25): "
                 "< 150 MiB, < 5 % of a core. Worker slots in use: task instances QUEUED or "
                 "RUNNING (every DAG, read each second) and the worker's active Celery tasks "
                 "(inspect, at the window's start and end). Firing: each event carries the "
                 "wall time it fired and the resumed method returns the wall time it ran "
                 "(XCom); resumed try RUNNING = its job row's start_date; T -> all SUCCESS = "
                 "the newest end_date. Resumptions queue behind the worker's slots. Load "
                 f"average (1/5/15 min) at the start: {load_before}; at the end: {load_after}.")
        append_results(title, rows, notes)
    return 0


def cmd_cli(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bench.cli import append_cli_results, print_cli_table, run_cli_bench

    trees = args.tree or [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    commits = args.tree_commit or []
    if len(commits) > len(trees):
        raise SystemExit("--tree-commit: at most one per --tree")
    pairs = [(Path(tree), commits[i] if i < len(commits) else None)
             for i, tree in enumerate(trees)]
    load_before = _loadavg()
    results = run_cli_bench(pairs, repeat=args.repeat, db=args.db)
    load_after = _loadavg()
    for times in results:
        print_cli_table(times)
    print(f"load average (1/5/15 min): {load_before} at the start, {load_after} at the end")
    if not args.no_record:
        alternated = (" The trees " + ", ".join(f"`{t.commit}`" for t in results)
                      + " ran alternately: each command once per tree in turn within every "
                      "round." if len(results) > 1 else "")
        notes = ("Wall time of each command as a new process (the venv's `squall` script, "
                 "stdout to /dev/null), from the bench's clock; CPU: user + system time of "
                 "the process and the children it waited for (the DAG parse's), less "
                 "sensitive than wall time to other jobs on the machine; the commands "
                 f"interleaved, {args.repeat} rounds.{alternated} DAG folder bench/dags "
                 "(6 files), examples off; "
                 "`db migrate` and one `dags list` unmeasured first (they also write the "
                 "tree's bytecode: PYTHONDONTWRITEBYTECODE is removed from the commands' "
                 "environment). p90: nearest rank. "
                 f"Load average (1/5/15 min) at the start: {load_before}; at the end: "
                 f"{load_after}.")
        for times in results:
            append_cli_results(times, notes)
    return 0


def cmd_pickup(args: argparse.Namespace) -> int:
    from bench.pickup import MODES, run_pickup

    modes = tuple(args.mode) if args.mode else MODES
    load_before = _loadavg()
    rows = run_pickup(args.cluster, modes=modes, samples=args.samples, idle=args.idle,
                      keep_home=args.keep_home, extra_env=_parse_set(args.set),
                      code=args.code)
    title = (f"bench pickup: a new, changed, removed DAG file among 1,000 ({args.cluster}, "
             f"{', '.join(modes)})" + (f" {' '.join(args.set)}" if args.set else "")
             + (f" squall from {args.code}" if args.code else ""))
    print_table(title, rows)
    if not args.no_record:
        from squall.common.settings import SchedulerSettings

        d = SchedulerSettings()
        notes = ("A fresh cluster per mode (scheduler only), DAG folder bench/dags plus 1,000 "
                 "generated files (bench/many_files.py), DAG processor settings at their "
                 f"defaults (min_file_process_interval {d.min_file_process_interval:g}, "
                 f"dag_dir_list_interval {d.dag_dir_list_interval:g}, file_check_interval "
                 f"{d.file_check_interval:g}, dag_dir_poll_interval "
                 f"{d.dag_dir_poll_interval:g}) unless --set says otherwise; notify: "
                 "dag_dir_watch on "
                 "(file-system notifications), poll: dag_dir_watch = false. Times from the "
                 "bench's clock, from writing / rewriting (an 11th task) / removing one file "
                 "until the database shows it (polled every 0.1 s). Idle CPU: /proc utime + "
                 "stime over the window, nothing running: the scheduler's tree (including the "
                 "periodic parse of the 1,000 files) and the DAG processor process alone. "
                 f"Load average (1/5/15 min) at the start: {load_before}; at the end: "
                 f"{_loadavg()}.")
        append_results(title, rows, notes)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run workloads W1-W4, WB and W6 on a cluster of real processes")
    p.add_argument("--workload", default="W1,W2,W3,WB,W6,W4",
                   help=f"comma-separated, e.g. W1,W2 (known: {', '.join(WORKLOADS)}, W5)")
    p.add_argument("--cluster", choices=CLUSTERS, default="redis-pg")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=4, help="worker -c (default 4)")
    p.add_argument("--schedulers", default="1", metavar="N[,M...]",
                   help="schedulers (default 1; more than one needs redis-pg); several "
                   "counts, e.g. 1,2, alternate within each repetition on one cluster")
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
    p.add_argument("--part", action="append", choices=["a", "b", "c", "d"],
                   help="run only this part (repeatable): a history, b runnable TIs, "
                   "c idle worker tree RSS/PSS, d scheduler RSS; default all")
    p.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    p.set_defaults(func=cmd_scaling)
    p = sub.add_parser("profile", help="py-spy the scheduler and worker during W2 (or W1, W3, "
                       "WB)")
    p.add_argument("--out", default="/tmp/squall-bench-profile", help="output folder")
    p.add_argument("--duration", type=int, default=25, help="py-spy seconds")
    p.add_argument("--workload", default="W2",
                   choices=["W1", "W2", "W3", "WB", "W6", "w1", "w2", "w3", "wb", "w6"])
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--on-cpu", action="store_true",
                   help="sample running threads only (CPU), not waiting ones")
    p.set_defaults(func=cmd_profile)
    p = sub.add_parser("api", help="the REST API under a steady request rate with 100k task "
                       "instances, and the grid's load time")
    p.add_argument("--runs", type=int, default=500, help="runs of the DAG (default 500)")
    p.add_argument("--tasks", type=int, default=200, help="tasks of the DAG (default 200)")
    p.add_argument("--rate", type=float, default=100.0, help="requests/s (default 100)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of the load "
                   "(default 20)")
    p.add_argument("--workers", type=int, default=16, help="client threads (default 16)")
    p.add_argument("--api-workers", type=int, default=1,
                   help="server processes of squall api (--workers; default 1)")
    p.add_argument("--keep-db", action="store_true",
                   help="keep the database squall_bench_api afterwards")
    p.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    p.set_defaults(func=cmd_api)
    p = sub.add_parser("triggerer", help="one squall triggerer holding 1,000 deferred timers: "
                       "idle RSS and CPU, and the time from a trigger firing to SCHEDULED")
    p.add_argument("--cluster", choices=CLUSTERS, default="redis-pg")
    p.add_argument("--triggers", type=int, default=1000, help="deferred task instances "
                   "(default 1000)")
    p.add_argument("--idle", type=float, default=None, help="seconds of the idle "
                   "measurement (default 30; 20 with --through-worker)")
    p.add_argument("--spread", type=float, default=2.0, help="the timers come due evenly "
                   "over this many seconds (default 2)")
    p.add_argument("--through-worker", action="store_true",
                   help="the real path: a scheduler and a Celery worker run a DAG of "
                   "--triggers mapped tasks that defer on a timer due at a common moment T "
                   "and resume on the worker (bench/triggerer_worker.py)")
    p.add_argument("--lead", type=float, default=90.0, help="--through-worker: T is this "
                   "many seconds after the run is triggered (default 90)")
    p.add_argument("--concurrency", type=int, default=4, help="--through-worker: worker -c "
                   "(default 4)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--keep-home", action="store_true", help="keep the temp SQUALL_HOME")
    p.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    p.set_defaults(func=cmd_triggerer)
    p = sub.add_parser("cli", help="wall time of short squall commands (--help, version, "
                       "dags list, dags report, pools list): median and p90")
    p.add_argument("--repeat", type=int, default=20, help="runs of each command (default 20)")
    p.add_argument("--db", choices=("sqlite", "pg"), default="sqlite",
                   help="a fresh SQLite file (default) or a fresh PostgreSQL database "
                   "(squall_bench_cli)")
    p.add_argument("--tree", action="append", default=[],
                   help="a Squall source tree to measure (PYTHONPATH; default: this one); "
                   "repeat it to measure several alternately")
    p.add_argument("--tree-commit", action="append", default=[],
                   help="the commit each --tree holds, in order, for the record (default: "
                   "git's answer)")
    p.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    p.set_defaults(func=cmd_cli)
    p = sub.add_parser("pickup", help="with 1,000 DAG files: how soon a new, changed or "
                       "removed file shows in the database, and the idle scheduler's CPU, "
                       "with notifications and with the polling scan")
    p.add_argument("--cluster", choices=CLUSTERS, default="redis-pg")
    p.add_argument("--mode", action="append", choices=["notify", "poll"],
                   help="only this mode (repeatable); default both")
    p.add_argument("--samples", type=int, default=5, help="new/change/remove rounds per "
                   "mode (default 5)")
    p.add_argument("--idle", type=float, default=60.0, help="seconds of the idle CPU "
                   "window (default 60; 0: none)")
    p.add_argument("--code", default=None, metavar="PATH",
                   help="run the cluster's processes with the squall package of another "
                   "checkout (PYTHONPATH), e.g. main's, for the before figures")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--keep-home", action="store_true", help="keep the temp SQUALL_HOME")
    p.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    p.set_defaults(func=cmd_pickup)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
