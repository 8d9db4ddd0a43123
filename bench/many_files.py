"""W5 (issue 15): the DAG processor with 1,000 generated DAG files of 10 tasks each.

A cluster of its own (the scheduler's start is what is measured): its DAG folder is a copy
of ``bench/dags`` plus ``w5/``, 1,000 files ``w5_NNNN.py``, each one DAG ``w5_NNNN`` of
``head >> [p0 .. p7] >> tail`` no-op tasks, ``schedule=None``. The DAG processor runs with
the settings a user has (nothing is tuned here); :func:`processor_settings` records them.

Figures (times from the bench's clock, states from the metadata database):

- start -> all parsed s: from starting ``squall scheduler`` until every ``w5_*`` DAG has a
  ``dag`` row (active) and a ``serialized_dag`` row, i.e. is schedulable once unpaused;
- change -> re-parsed s: from rewriting one file (an 11th task added) until its
  ``serialized_dag.dag_hash`` changes;
- W1 tasks/s with the files present: W1 (``bench_fanout``) on this cluster, to compare with
  W1 on a cluster of the bench DAGs only (the scheduler loop's user-visible effect);
- scheduler CPU % idle: the scheduler tree's CPU over one ``min_file_process_interval``
  window after W1, nothing running (W4 measures the same with the bench DAGs only);
- scheduler peak RSS / CPU s while the first pass runs (the scheduler's process tree: the
  scheduler, its DAG processor and the processor's parse children)."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from sqlalchemy import func, select

from bench.cluster import DAGS_FOLDER, BenchCluster
from bench.procs import TreeSampler, tree_cpu_seconds
from bench.workloads import Sample, w1_fanout
from squall.common.models import DagModel, SerializedDagModel
from squall.common.settings import Settings

log = logging.getLogger(__name__)

FILES = 1000
PREFIX = "w5_"
#: how long the first pass may take before W5 gives up
PARSE_DEADLINE = 1800.0
REPARSE_DEADLINE = 600.0

_TEMPLATE = '''"""W5: one generated DAG of the 1,000 (bench/many_files.py)."""

from __future__ import annotations

import pendulum

from squall import DAG, PythonOperator


def noop() -> None:
    return None


with DAG("{dag_id}", schedule=None, catchup=False,
         start_date=pendulum.datetime(2024, 1, 1, tz="UTC")) as dag:
    head = PythonOperator(task_id="head", python_callable=noop)
    tail = PythonOperator(task_id="tail", python_callable=noop)
    head >> [PythonOperator(task_id=f"p{{i}}", python_callable=noop)
             for i in range({parallel})] >> tail
'''


def write_dag_file(folder: Path, n: int, parallel: int = 8) -> Path:
    path = folder / f"{PREFIX}{n:04d}.py"
    path.write_text(_TEMPLATE.format(dag_id=f"{PREFIX}{n:04d}", parallel=parallel))
    return path


def make_dags_folder(root: Path, files: int = FILES) -> Path:
    """``root/dags``: the bench DAG files and ``w5/`` with ``files`` generated ones."""
    folder = root / "dags"
    shutil.copytree(DAGS_FOLDER, folder, ignore=shutil.ignore_patterns("__pycache__"))
    sub = folder / "w5"
    sub.mkdir()
    for n in range(files):
        write_dag_file(sub, n)
    return folder


def processor_settings(cluster: BenchCluster) -> dict[str, str]:
    """The DAG processor settings the cluster's processes run with (the defaults, unless
    ``--set`` changed them)."""
    settings = Settings.load(env=cluster.env)
    s = settings.scheduler
    return {"min_file_process_interval": f"{s.min_file_process_interval:g}",
            "dag_dir_list_interval": f"{s.dag_dir_list_interval:g}",
            "file_check_interval": f"{s.file_check_interval:g}",
            "parsing_processes": str(s.parsing_processes),
            "parsing_nice": str(s.parsing_nice),
            "dagbag_import_timeout": f"{settings.core.dagbag_import_timeout:g}"}


def _counts(cluster: BenchCluster) -> tuple[int, int]:
    with cluster.engine.connect() as conn:
        dags = conn.scalar(select(func.count()).select_from(DagModel).where(
            DagModel.dag_id.like(f"{PREFIX}%"), DagModel.is_active.is_(True)))
        ser = conn.scalar(select(func.count()).select_from(SerializedDagModel).where(
            SerializedDagModel.dag_id.like(f"{PREFIX}%")))
    return int(dags or 0), int(ser or 0)


def _hash(cluster: BenchCluster, dag_id: str) -> str | None:
    with cluster.engine.connect() as conn:
        value = conn.scalar(select(SerializedDagModel.dag_hash)
                            .where(SerializedDagModel.dag_id == dag_id))
    return None if value is None else str(value)


def _poll(predicate: object, deadline: float, what: str, cluster: BenchCluster,
          interval: float = 0.2) -> float:
    """Poll until ``predicate()`` is true; returns the monotonic time it was first seen."""
    assert callable(predicate)
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return time.monotonic()
        cluster.check_alive()
        time.sleep(interval)
    raise TimeoutError(f"W5: timed out after {deadline} s waiting for {what}")


def w5_many_files(kind: str, *, concurrency: int, extra_env: dict[str, str],
                  keep_home: bool, w1_repeat: int = 3) -> Sample:
    """One repetition of W5 on a fresh cluster (see the module's docstring)."""
    cluster = BenchCluster(kind, concurrency=concurrency, extra_env=extra_env,
                           keep_home=keep_home)
    try:
        cluster.dags_folder = make_dags_folder(cluster.home)
        cluster.start(scheduler=False, worker=True)
        t0 = time.monotonic()
        sched = cluster.start_scheduler()
        counts: list[tuple[int, int]] = [(0, 0)]

        def all_parsed() -> bool:
            counts[0] = _counts(cluster)
            return counts[0] == (FILES, FILES)

        with TreeSampler({"scheduler": sched.pid}) as sampler:
            t_parsed = _poll(all_parsed, PARSE_DEADLINE, f"{FILES} DAGs parsed", cluster, 0.5)
        log.info("W5: %d DAGs parsed %.1f s after the scheduler's start", FILES, t_parsed - t0)
        figures = {"start->all parsed s": t_parsed - t0}
        usage = {"scheduler cpu s (first pass)": sampler.usage["scheduler"].cpu_s,
                 "scheduler peak RSS MiB (first pass)": sampler.usage["scheduler"].peak_rss_mib}

        # a changed file: an 11th task, then wait for the new serialized version
        changed = f"{PREFIX}0500"
        before = _hash(cluster, changed)
        t1 = time.monotonic()
        write_dag_file(cluster.dags_folder / "w5", 500, parallel=9)
        t_reparsed = _poll(lambda: _hash(cluster, changed) not in (None, before),
                           REPARSE_DEADLINE, f"{changed} re-parsed", cluster)
        figures["change->re-parsed s"] = t_reparsed - t1

        cluster.wait_parsed()
        cluster.wait_runs(cluster.trigger(["bench_chain"]))  # the usual warm-up
        with TreeSampler({"scheduler": sched.pid}) as steady:
            w1 = [w1_fanout(cluster) for _ in range(w1_repeat)]
        figures["W1 tasks/s with 1,000 files (median)"] = sorted(
            s.figures["tasks/s"] for s in w1)[len(w1) // 2]
        usage["scheduler peak RSS MiB (during W1)"] = steady.usage["scheduler"].peak_rss_mib
        # idle: one min_file_process_interval window holds one periodic pass over the files
        window = max(float(processor_settings(cluster)["min_file_process_interval"]), 1.0)
        cpu0 = tree_cpu_seconds(sched.pid)
        t2 = time.monotonic()
        idle_end = t2 + window
        while time.monotonic() < idle_end:  # not a wait for a condition: a fixed window
            cluster.check_alive()
            time.sleep(1.0)
        figures["scheduler CPU % idle with 1,000 files"] = (
            100 * (tree_cpu_seconds(sched.pid) - cpu0) / (time.monotonic() - t2))
        return Sample(figures, usage)
    finally:
        cluster.stop()
