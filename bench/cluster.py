"""A benchmark cluster of real processes: a private redis-server (redis-pg), a PostgreSQL
database of its own (dropped and recreated per start) or SQLite + the embedded broker
(standalone), one ``python -m squall scheduler`` (or several: ``schedulers``, redis-pg only)
and one ``python -m squall celery worker``.

Everything started here runs in a process group of its own and is killed by :meth:`stop`
(also on exceptions / Ctrl-C, when used as a context manager)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, func, select, text

from squall.common.models import (
    Backfill,
    DagModel,
    DagRun,
    Job,
    SerializedDagModel,
    TaskInstance,
)

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DAGS_FOLDER = REPO_ROOT / "bench" / "dags"
PG_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
#: the database a redis-pg cluster recreates; ``SQUALL_BENCH_PG_DB`` names another, so two
#: benches on one PostgreSQL server do not drop each other's
PG_DB = os.environ.get("SQUALL_BENCH_PG_DB", "squall_bench")
BENCH_DAG_IDS = ["bench_fanout", "bench_chain", *[f"bench_many_{i}" for i in range(20)],
                 "bench_backfill", "bench_mapped", "bench_deferred_worker"]
#: DAGs left paused by :meth:`BenchCluster.wait_parsed`: ``bench_backfill`` (WB) has a daily
#: schedule, and paused it gets no scheduled run, only the backfills' runs
KEEP_PAUSED = frozenset({"bench_backfill"})
#: the states of a backfill that has ended (squall.common.state.BACKFILL_FINISHED_STATES)
BACKFILL_DONE = ("success", "failed", "cancelled")
CLUSTERS = ("redis-pg", "standalone")

#: clusters started and not yet stopped, so a signal handler can stop them all
ACTIVE: list[BenchCluster] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str,
             interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def recreate_pg_database(name: str = PG_DB) -> str:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"


def drop_pg_database(name: str = PG_DB) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@dataclass(frozen=True)
class TiTimes:
    queued: datetime
    start: datetime
    end: datetime


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return int(self.popen.pid)


def _killpg(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:  # whatever is left in the group (forked task processes, pool children)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(5)


@dataclass
class BenchCluster:
    kind: str  # "redis-pg" | "standalone"
    concurrency: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)
    keep_home: bool = False
    #: schedulers started by :meth:`start` (more than one needs PostgreSQL: redis-pg)
    schedulers: int = 1
    #: ``[core] dags_folder`` of every process (W5 points it at a folder under the home)
    dags_folder: Path = DAGS_FOLDER
    home: Path = field(init=False)
    db_url: str = field(init=False, default="")
    redis: subprocess.Popen[bytes] | None = field(init=False, default=None)
    redis_port: int = field(init=False, default=0)
    procs: list[Proc] = field(init=False, default_factory=list)
    _engine: Engine | None = field(init=False, default=None)
    #: set by :meth:`wait_parsed`: the DAG files are in the database
    _parsed_once: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        if self.kind not in CLUSTERS:
            raise ValueError(f"unknown cluster {self.kind!r} (one of {', '.join(CLUSTERS)})")
        if self.schedulers < 1 or (self.schedulers > 1 and self.kind != "redis-pg"):
            raise ValueError(f"{self.schedulers} schedulers on {self.kind}: one or more, and "
                             "more than one only on redis-pg (PostgreSQL)")
        self.home = Path(tempfile.mkdtemp(prefix=f"squall-bench-{self.kind}-"))

    # -------------------------------------------------------------- environment

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL")}
        env.update({
            "SQUALL_HOME": str(self.home),
            "SQUALL__CORE__DAGS_FOLDER": str(self.dags_folder),
            "SQUALL__CORE__LOAD_EXAMPLES": "false",
            # the bench's DAGs run as soon as they are parsed; its services log in full
            "SQUALL__CORE__DAGS_ARE_PAUSED_AT_CREATION": "false",
            "SQUALL__LOGGING__QUIET_CONSOLE": "false",
            "PYTHONPATH": str(REPO_ROOT),
        })
        if self.kind == "redis-pg":
            env["SQUALL__DATABASE__SQL_ALCHEMY_CONN"] = self.db_url
            env["SQUALL__CELERY__BROKER_URL"] = f"redis://127.0.0.1:{self.redis_port}/0"
            env["SQUALL__CELERY__RESULT_BACKEND"] = f"redis://127.0.0.1:{self.redis_port}/1"
        env.update(self.extra_env)
        return env

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.db_url)
        return self._engine

    # -------------------------------------------------------------- lifecycle

    def __enter__(self) -> BenchCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, *, scheduler: bool = True, worker: bool = True) -> None:
        if self not in ACTIVE:
            ACTIVE.append(self)
        if self.kind == "redis-pg":
            self.db_url = recreate_pg_database()
            self._start_redis()
        else:
            self.db_url = f"sqlite:///{self.home / 'squall.db'}"
        self.cli("db", "migrate")
        if scheduler:
            self.set_schedulers(self.schedulers)
        if worker:
            self.start_worker()

    def _start_redis(self) -> None:
        self.redis_port = free_port()
        log = (self.home / "redis.log").open("ab")
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.home)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

        def pong() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.redis_port), 0.5) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        wait_for(pong, 10, "redis-server")

    def _spawn(self, name: str, args: Sequence[str]) -> Proc:
        log_path = self.home / f"{name}.log"
        log = log_path.open("ab")
        popen = subprocess.Popen([sys.executable, "-m", "squall", *args], env=self.env,
                                 stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True, cwd=self.home)
        log.close()
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def start_scheduler(self, name: str = "scheduler") -> Proc:
        return self._spawn(name, ["scheduler"])

    @staticmethod
    def scheduler_name(n: int) -> str:
        """The name of the n-th scheduler (1-based): ``scheduler``, ``scheduler2``, ..."""
        return "scheduler" if n == 1 else f"scheduler{n}"

    def scheduler_procs(self) -> list[Proc]:
        return [p for p in self.procs if p.name.startswith("scheduler")]

    def set_schedulers(self, count: int, timeout: float = 60) -> None:
        """Run exactly ``count`` schedulers: stop the last ones (SIGTERM: each finishes its
        loop and marks its job row ended, so nothing of theirs waits for adoption) or start
        more, and wait until every new one has heartbeated its ``job`` row."""
        if count < 1 or (count > 1 and self.kind != "redis-pg"):
            raise ValueError(f"{count} schedulers on {self.kind}")
        running = self.scheduler_procs()
        for proc in running[count:]:
            self.stop_proc(proc)
        started = [self.start_scheduler(self.scheduler_name(n))
                   for n in range(len(running) + 1, count + 1)]
        if not started:
            return
        pids = [p.pid for p in started]
        since: list[datetime] = []

        def beating() -> bool:
            self.check_alive()
            with self.engine.connect() as conn:
                starts = conn.scalars(select(Job.start_date).where(
                    Job.job_type == "SchedulerJob", Job.state == "running",
                    Job.pid.in_(pids), Job.latest_heartbeat > Job.start_date)).all()
            since[:] = [s for s in starts if s is not None]
            return len(starts) == len(pids)

        def parsed_since() -> bool:
            # the DAG processor of a new scheduler parses every file when it starts: let
            # that pass end before anything is measured (any processor's pass counts)
            if self.kind != "redis-pg":
                return True
            with self.engine.connect() as conn:
                oldest = conn.scalar(select(func.min(DagModel.last_parsed_time))
                                     .where(DagModel.dag_id.in_(BENCH_DAG_IDS)))
            return oldest is not None and oldest >= max(since)

        wait_for(beating, timeout, f"{len(pids)} new scheduler(s) to heartbeat", interval=0.2)
        if self._parsed_once:
            wait_for(parsed_since, timeout, "the DAG files to be parsed again", interval=0.2)

    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = object.__hash__

    def start_worker(self, concurrency: int | None = None, name: str = "worker") -> Proc:
        c = concurrency or self.concurrency
        proc = self._spawn(name, ["celery", "worker", "-c", str(c), "-n", f"{name}@%h"])
        wait_for(lambda: b"ready" in proc.log_path.read_bytes() or proc.popen.poll() is not None,
                 90, f"{name} to be ready")
        self.check_alive()
        return proc

    def stop_proc(self, proc: Proc) -> None:
        _killpg(proc.popen)
        self.procs.remove(proc)

    def proc(self, name: str) -> Proc:
        for p in self.procs:
            if p.name == name:
                return p
        raise KeyError(name)

    def check_alive(self) -> None:
        for p in self.procs:
            if p.popen.poll() is not None:
                tail = p.log_path.read_text(errors="replace").splitlines()[-40:]
                raise RuntimeError(f"{p.name} exited ({p.popen.returncode}):\n"
                                   + "\n".join(tail))

    def stop(self) -> None:
        if self in ACTIVE:
            ACTIVE.remove(self)
        for p in reversed(self.procs):
            _killpg(p.popen)
        self.procs.clear()
        if self.redis is not None:
            _killpg(self.redis)
            self.redis = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self.kind == "redis-pg" and self.db_url:
            try:
                drop_pg_database()
            except Exception as exc:
                print(f"bench: could not drop {PG_DB}: {exc}", file=sys.stderr)
        if not self.keep_home:
            shutil.rmtree(self.home, ignore_errors=True)

    # -------------------------------------------------------------- CLI and database

    def cli(self, *args: str, timeout: float = 120) -> str:
        out = subprocess.run([sys.executable, "-m", "squall", *args], env=self.env,
                             capture_output=True, text=True, timeout=timeout, check=False,
                             cwd=self.home)
        if out.returncode != 0:
            raise RuntimeError(f"squall {' '.join(args)} failed ({out.returncode}):\n"
                               f"{out.stdout}\n{out.stderr}")
        return out.stdout

    def trigger(self, dag_ids: Iterable[str],
                conf: dict[str, Any] | None = None) -> dict[str, str]:
        """One ``squall dags trigger DAG_ID... [--conf JSON]`` for all of them; returns the
        run ids."""
        ids = list(dag_ids)
        extra = ["--conf", json.dumps(conf)] if conf is not None else []
        p = subprocess.run([sys.executable, "-m", "squall", "dags", "trigger", *ids, *extra],
                           env=self.env, capture_output=True, text=True, cwd=self.home,
                           timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"trigger {' '.join(ids)} failed:\n{p.stdout}\n{p.stderr}")
        runs: dict[str, str] = {}
        for line in p.stdout.splitlines():
            # "Created DagRun <dag_id> <run_id> (queued)"
            if line.startswith("Created DagRun "):
                words = line.split()
                runs[words[2]] = words[3]
        missing = set(ids) - set(runs)
        if missing:
            raise RuntimeError(f"trigger: no run reported for {sorted(missing)}:\n{p.stdout}")
        return runs

    def wait_parsed(self, dag_ids: Sequence[str] = BENCH_DAG_IDS, timeout: float = 120) -> None:
        def ready() -> bool:
            self.check_alive()
            with self.engine.connect() as conn:
                dags = conn.execute(select(DagModel.dag_id, DagModel.is_paused)
                                    .where(DagModel.dag_id.in_(dag_ids))).all()
                ser = conn.scalar(select(func.count()).select_from(SerializedDagModel)
                                  .where(SerializedDagModel.dag_id.in_(dag_ids)))
            return len(dags) == len(dag_ids) and int(ser or 0) == len(dag_ids)

        wait_for(ready, timeout, "the bench DAGs to be parsed", interval=0.5)
        self._parsed_once = True
        with self.engine.begin() as conn:
            paused = conn.scalars(select(DagModel.dag_id).where(
                DagModel.dag_id.in_(dag_ids), DagModel.is_paused.is_(True))).all()
        for dag_id in paused:
            if dag_id not in KEEP_PAUSED:
                self.cli("dags", "unpause", dag_id)

    def run_rows(self, runs: dict[str, str]) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(
                DagRun.dag_id, DagRun.run_id, DagRun.state, DagRun.queued_at,
                DagRun.start_date, DagRun.end_date).where(
                    DagRun.run_id.in_(set(runs.values())))).all())

    def wait_runs(self, runs: dict[str, str], timeout: float = 300) -> list[Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.run_rows(runs)
            done = [r for r in rows if r.state in ("success", "failed")]
            if len(done) == len(runs):
                failed = [r.dag_id for r in done if r.state != "success"]
                if failed:
                    raise RuntimeError(f"runs failed: {failed}")
                return rows
            self.check_alive()
            time.sleep(0.1)
        raise TimeoutError(f"runs not finished after {timeout} s: "
                           f"{[(r.dag_id, r.state) for r in self.run_rows(runs)]}")

    def mapped_rows(self, dag_id: str, run_id: str, task_id: str) -> list[TiTimes]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(TaskInstance.queued_dttm, TaskInstance.start_date,
                                       TaskInstance.end_date).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id,
                TaskInstance.task_id == task_id, TaskInstance.map_index >= 0)).all()
        return [TiTimes(r.queued_dttm, r.start_date, r.end_date) for r in rows]

    def task_rows(self, dag_id: str, run_id: str) -> dict[str, TiTimes]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(TaskInstance.task_id, TaskInstance.queued_dttm,
                                       TaskInstance.start_date, TaskInstance.end_date).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)).all()
        return {r.task_id: TiTimes(r.queued_dttm, r.start_date, r.end_date) for r in rows}

    def backfill(self, dag_id: str, start: str, end: str, max_active_runs: int) -> dict[str, Any]:
        """``squall dags backfill DAG_ID -s START -e END -y --detach --max-active-runs N
        --output json``, as a user types it; returns its JSON answer (``backfill_id``,
        ``runs``, ``existing``)."""
        args = ["dags", "backfill", dag_id, "-s", start, "-e", end, "-y", "--detach",
                "--max-active-runs", str(max_active_runs), "--output", "json"]
        out = self.cli(*args)
        try:
            answer: dict[str, Any] = json.loads(out)
        except json.JSONDecodeError as exc:
            raise RuntimeError(f"squall {' '.join(args)}: no JSON answer ({exc}):\n{out}") from None
        log.debug("backfill %s of %s: %d runs", answer.get("backfill_id"), dag_id,
                  len(answer.get("runs", [])))
        return answer

    def backfill_row(self, backfill_id: int) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(select(
                Backfill.id, Backfill.dag_id, Backfill.state, Backfill.total_runs,
                Backfill.created_at, Backfill.completed_at).where(
                    Backfill.id == backfill_id)).one()

    def wait_backfill(self, backfill_id: int, timeout: float = 1800) -> Any:
        """Poll the ``backfill`` row until its state is one of :data:`BACKFILL_DONE`;
        returns the row (raises when it did not succeed, or on the deadline)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.backfill_row(backfill_id)
            if row.state in BACKFILL_DONE:
                if row.state != "success":
                    raise RuntimeError(f"backfill {backfill_id} of {row.dag_id}: {row.state}")
                return row
            self.check_alive()
            time.sleep(0.1)
        row = self.backfill_row(backfill_id)
        raise TimeoutError(f"backfill {backfill_id} not finished after {timeout} s: "
                           f"{row.state}")

    def backfill_tis(self, backfill_id: int) -> list[Any]:
        """The task instances of the backfill's runs: state, queued / start / end dates."""
        with self.engine.connect() as conn:
            return list(conn.execute(
                select(TaskInstance.state, TaskInstance.queued_dttm, TaskInstance.start_date,
                       TaskInstance.end_date)
                .join(DagRun, (DagRun.dag_id == TaskInstance.dag_id)
                      & (DagRun.run_id == TaskInstance.run_id))
                .where(DagRun.backfill_id == backfill_id)).all())

    def backfill_runs(self, backfill_id: int) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(
                DagRun.run_id, DagRun.state, DagRun.logical_date, DagRun.queued_at,
                DagRun.end_date).where(DagRun.backfill_id == backfill_id)).all())

    def last_logical_date(self, dag_id: str) -> datetime | None:
        """The newest logical date the DAG has a run for (``None``: no run)."""
        with self.engine.connect() as conn:
            value = conn.scalar(select(func.max(DagRun.logical_date))
                                .where(DagRun.dag_id == dag_id))
        return value
