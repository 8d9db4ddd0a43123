"""A Squall cluster made of real processes, for end-to-end tests.

``Cluster`` starts ``python -m squall scheduler`` and ``python -m squall celery worker``
subprocesses (the way users start them) against a metadata database and a broker the test
chooses, runs CLI commands, and reads states straight from the metadata database. Process
output goes to log files under the cluster's home; :meth:`Cluster.logs` returns their tails
for assertion messages.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from squall.common.db import SessionFactory, make_engine, make_session_factory, session_scope
from squall.common.models import DagRun, TaskInstance
from tests.support.services import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    stopped: bool = False  # stopped on purpose by the test


@dataclass
class Cluster:
    home: Path
    db_url: str
    broker_url: str
    result_backend: str
    load_examples: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    #: variables of :attr:`env` left out, so those settings keep their defaults
    unset_env: frozenset[str] = frozenset()
    procs: list[Proc] = field(default_factory=list)
    _factory: SessionFactory | None = None

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.dags_folder.mkdir(parents=True, exist_ok=True)

    @property
    def dags_folder(self) -> Path:
        return self.home / "dags"

    @property
    def env(self) -> dict[str, str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL")}
        environ.update({
            "SQUALL_HOME": str(self.home),
            "SQUALL__DATABASE__SQL_ALCHEMY_CONN": self.db_url,
            "SQUALL__CELERY__BROKER_URL": self.broker_url,
            "SQUALL__CELERY__RESULT_BACKEND": self.result_backend,
            "SQUALL__CORE__DAGS_FOLDER": str(self.dags_folder),
            "SQUALL__CORE__LOAD_EXAMPLES": "true" if self.load_examples else "false",
            "SQUALL__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "2",
            "SQUALL__SCHEDULER__DAG_DIR_LIST_INTERVAL": "2",
            "SQUALL__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.1",
            "SQUALL__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "SQUALL__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
            # tests create DAGs and expect them scheduled, and read the services' logs
            "SQUALL__CORE__DAGS_ARE_PAUSED_AT_CREATION": "false",
            "SQUALL__LOGGING__QUIET_CONSOLE": "false",
            "PYTHONPATH": str(REPO_ROOT),
        })
        environ.update(self.extra_env)
        for name in self.unset_env:
            environ.pop(name, None)
        return environ

    # processes --------------------------------------------------------------------------

    def start(self, name: str, args: list[str]) -> Proc:
        """Start ``python -m squall ARGS`` in the cluster's home, logging to ``NAME.log``."""
        log_path = self.home / f"{name}.log"
        log_file = log_path.open("ab")
        process = subprocess.Popen([sys.executable, "-m", "squall", *args], env=self.env,
                                   stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=self.home)
        log_file.close()
        proc = Proc(name, process, log_path)
        self.procs.append(proc)
        return proc

    def start_scheduler(self, name: str = "scheduler", *extra: str) -> Proc:
        return self.start(name, ["scheduler", *extra])

    def start_worker(self, name: str = "w1", queues: str = "default", concurrency: int = 2,
                     wait: bool = True) -> Proc:
        proc = self.start(name, ["celery", "worker", "-q", queues, "-c", str(concurrency),
                                  "-n", f"{name}@%h"])
        if wait:
            wait_until(lambda: b"ready" in proc.log_path.read_bytes()
                       or proc.process.poll() is not None, 60,
                       message=f"worker {name} to be ready")
            assert proc.process.poll() is None, self.logs(name)
        return proc

    def stop(self, proc: Proc, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        proc.stopped = True
        if proc.process.poll() is None:
            proc.process.send_signal(sig)
            try:
                proc.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.process.pid, signal.SIGKILL)
                proc.process.wait()
        return int(proc.process.returncode)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        # anything the processes left behind in their process groups
        for proc in self.procs:
            try:
                os.killpg(proc.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._factory is not None:
            self._factory.kw["bind"].dispose()

    def logs(self, *names: str, tail: int = 60) -> str:
        out = []
        for proc in self.procs:
            if names and proc.name not in names:
                continue
            lines = proc.log_path.read_text(errors="replace").splitlines()[-tail:]
            out.append(f"----- {proc.name} (exit {proc.process.poll()}) -----")
            out.extend(lines)
        return "\n".join(out)

    # CLI --------------------------------------------------------------------------------

    def cli(self, *args: str, check: bool = True, timeout: float = 120,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        environ = self.env
        environ.update(env or {})
        proc = subprocess.run([sys.executable, "-m", "squall", *args], env=environ,
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"squall {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "-o", "json").stdout)

    def trigger(self, dag_id: str, *extra: str) -> str:
        out = self.cli("dags", "trigger", dag_id, *extra).stdout
        runs = self.cli_json("dags", "list-runs", dag_id)
        for run in runs:
            if run["run_id"] in out:
                return str(run["run_id"])
        raise AssertionError(f"no run id of {dag_id} in trigger output: {out!r}")

    # database ---------------------------------------------------------------------------

    @property
    def session_factory(self) -> SessionFactory:
        if self._factory is None:
            self._factory = make_session_factory(make_engine(self.db_url))
        return self._factory

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        with session_scope(self.session_factory) as session:
            return session.scalar(select(DagRun.state).where(DagRun.dag_id == dag_id,
                                                             DagRun.run_id == run_id))

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, TaskInstance]:
        with session_scope(self.session_factory) as session:
            rows = session.scalars(select(TaskInstance).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)).all()
        return {ti.task_id: ti for ti in rows}

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 90,
                     states: Iterable[str] = ("success", "failed")) -> str:
        wanted = set(states)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run_state(dag_id, run_id)
            if state in wanted:
                return str(state)
            for proc in self.procs:
                if not proc.stopped and proc.process.poll() is not None:
                    raise AssertionError(f"{proc.name} died:\n{self.logs()}")
            time.sleep(0.1)
        tis = {t: (ti.state, ti.try_number) for t, ti in
               self.task_instances(dag_id, run_id).items()}
        raise AssertionError(f"run {dag_id} {run_id} not finished after {timeout} s "
                             f"(state {self.run_state(dag_id, run_id)}, tasks {tis}):\n"
                             f"{self.logs()}")
