"""``python -m bench pickup`` (issue 26): how soon a new, changed or removed DAG file shows
in the metadata database, and what watching the folder costs an idle scheduler.

A fresh cluster per mode (no worker: nothing runs), whose DAG folder is ``bench/dags`` plus
1,000 generated files (:func:`bench.many_files.make_dags_folder`), the DAG processor at the
defaults (nothing tuned) but for the mode:

- ``notify``: ``[scheduler] dag_dir_watch`` on (the default): file-system notifications;
- ``poll``: ``dag_dir_watch = false``: the folder scanned every ``dag_dir_poll_interval``.

Once every generated DAG is in the database, ``--samples`` times: a new file is written
(one more generated DAG) and the bench's clock runs until its ``dag`` row is active; the
file is rewritten (an 11th task) until its ``serialized_dag.dag_hash`` changes; it is
removed until its ``dag`` row is inactive (the database polled every 0.1 s). Then, nothing
running, the idle CPU over ``--idle`` seconds (/proc, utime + stime): the scheduler's whole
process tree (the scheduler loop, the DAG processor, and the parse children of the periodic
``min_file_process_interval`` pass over the 1,000 files), and the DAG processor process
alone (the change detection, the ``stat`` checks, the callback polls, the syncs; not its
parse children).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from bench.cluster import BenchCluster
from bench.many_files import FILES, PREFIX, _counts, _hash, make_dags_folder, write_dag_file
from bench.procs import CLK_TCK, tree_cpu_seconds, tree_pids
from bench.report import Row
from squall.common.models import DagModel

MODES = ("notify", "poll")
#: how long one sample may take before the bench gives up (the full listing is at 300 s)
SAMPLE_DEADLINE = 400.0
PARSE_DEADLINE = 600.0
#: the first generated file number of the bench's own files (the 1,000 are 0-999)
_FIRST_NEW = 5000


def _active(cluster: BenchCluster, dag_id: str) -> bool | None:
    with cluster.engine.connect() as conn:
        value = conn.scalar(select(DagModel.is_active).where(DagModel.dag_id == dag_id))
    return None if value is None else bool(value)


def _seconds_until(predicate: Callable[[], bool], cluster: BenchCluster, t0: float,
                   what: str) -> float:
    end = t0 + SAMPLE_DEADLINE
    while time.monotonic() < end:
        if predicate():
            return time.monotonic() - t0
        cluster.check_alive()
        time.sleep(0.1)
    raise TimeoutError(f"pickup: timed out after {SAMPLE_DEADLINE:g} s waiting for {what}")


def _time_it(cluster: BenchCluster, what: str, act: Callable[[], object],
             seen: Callable[[], bool]) -> float:
    """Seconds from ``act()`` until ``seen()``."""
    t0 = time.monotonic()
    act()
    return _seconds_until(seen, cluster, t0, what)


def _one_round(cluster: BenchCluster, folder: Path, n: int) -> tuple[float, float, float]:
    """Seconds until a new file ``n``, then its change, then its removal, are seen."""
    dag_id = f"{PREFIX}{n:04d}"
    new = _time_it(cluster, f"new {dag_id}", lambda: write_dag_file(folder, n),
                   lambda: _active(cluster, dag_id) is True)
    before = _hash(cluster, dag_id)
    changed = _time_it(cluster, f"changed {dag_id}",
                       lambda: write_dag_file(folder, n, parallel=9),
                       lambda: _hash(cluster, dag_id) != before)
    removed = _time_it(cluster, f"removed {dag_id}", (folder / f"{dag_id}.py").unlink,
                       lambda: _active(cluster, dag_id) is False)
    return new, changed, removed


def _own_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` alone (not its children)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0.0
    fields = data[data.rfind(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _processor_pid(scheduler_pid: int) -> int | None:
    for pid in tree_pids(scheduler_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"squall.scheduler.dag_processor_child" in cmdline:
            return pid
    return None


def run_mode(kind: str, mode: str, *, samples: int, idle: float, keep_home: bool,
             extra_env: dict[str, str], code: str | None = None) -> list[Row]:
    """One fresh cluster in ``mode``: its rows (see the module docstring)."""
    env = dict(extra_env)
    if mode == "poll":
        env["SQUALL__SCHEDULER__DAG_DIR_WATCH"] = "false"
    if code is not None:  # the before figures: another checkout's squall
        env["PYTHONPATH"] = code
    cluster = BenchCluster(kind, extra_env=env, keep_home=keep_home)
    group = f"pickup, {mode}" + (f" ({code})" if code else "")
    try:
        cluster.dags_folder = make_dags_folder(cluster.home)
        cluster.start(scheduler=False, worker=False)
        sched = cluster.start_scheduler()
        t0 = time.monotonic()
        _seconds_until(lambda: _counts(cluster) == (FILES, FILES), cluster, t0,
                       f"{FILES} DAGs parsed")
        folder = cluster.dags_folder / "w5"
        new_s: list[float] = []
        change_s: list[float] = []
        remove_s: list[float] = []
        for i in range(samples):
            new, changed, removed = _one_round(cluster, folder, _FIRST_NEW + i)
            new_s.append(new)
            change_s.append(changed)
            remove_s.append(removed)
            print(f"bench: pickup {mode} #{i + 1}: new {new_s[-1]:.2f} s, changed "
                  f"{change_s[-1]:.2f} s, removed {remove_s[-1]:.2f} s", flush=True)
        rows: list[Row] = [(group, "new file -> dag row active s", new_s),
                           (group, "changed file -> dag_hash changed s", change_s),
                           (group, "removed file -> dag row inactive s", remove_s)]
        if idle > 0:
            processor = _processor_pid(sched.pid)
            tree0 = tree_cpu_seconds(sched.pid)
            own0 = _own_cpu_seconds(processor) if processor else 0.0
            t = time.monotonic()
            end = t + idle
            while time.monotonic() < end:  # not a wait for a condition: a fixed window
                cluster.check_alive()
                time.sleep(1.0)
            elapsed = time.monotonic() - t
            rows.append((group, f"idle scheduler tree CPU % ({idle:g} s)",
                         [100 * (tree_cpu_seconds(sched.pid) - tree0) / elapsed]))
            if processor:
                rows.append((group, "idle DAG processor CPU % (without its parse children)",
                             [100 * (_own_cpu_seconds(processor) - own0) / elapsed]))
        return rows
    finally:
        cluster.stop()


def run_pickup(kind: str, *, modes: tuple[str, ...] = MODES, samples: int = 5,
               idle: float = 60.0, keep_home: bool = False,
               extra_env: dict[str, str] | None = None, code: str | None = None) -> list[Row]:
    rows: list[Row] = []
    for mode in modes:
        rows += run_mode(kind, mode, samples=samples, idle=idle, keep_home=keep_home,
                         extra_env=extra_env or {}, code=code)
    return rows
