"""The LocalTaskJob supervisor during a database outage (ADR 17, docs/guarantees.md).

A failing heartbeat is logged once and counted once (``worker.outage``); an outage shorter
than the heartbeat lease leaves the task running and it finishes normally; a longer one ends
every process of the try before ``zombie_threshold`` has passed since the last heartbeat the
database holds, and the failure is written by compare-and-set once the database answers,
never over a newer try.

The outage is simulated where the supervisor meets the database: its session factory
refuses to open a session (``OperationalError``, as a lost connection does) while a switch
file exists. The supervisor runs in a forked process of its own (it installs signal
handlers and becomes a child subreaper); the test reads the real database meanwhile.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import create_engine, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from squall.common.db import SessionFactory, make_engine, make_session_factory, session_scope
from squall.common.lease_terms import lease_terms
from squall.common.metrics import WORKER_LEASE_LOST, WORKER_OUTAGE
from squall.common.models import DagModel, Job, TaskInstance, TaskInstanceKey, utcnow
from squall.common.models.taskinstance import compare_and_set_state
from squall.common.payload import TaskRunCommand, relative_dag_file
from squall.common.settings import Settings
from squall.common.state import DagRunState, DagRunType, TaskInstanceState
from squall.dag_processing.dagbag import parse_files_isolated
from squall.dag_processing.sync import load_serialized_dags, sync_to_db
from squall.runs.run_creation import create_dag_run
from squall.runs.ti_updates import schedule_tis
from squall.worker.supervisor import LocalTaskJob, SupervisorStatus
from squall.worker.try_writes import TryWrites
from tests.conftest import _fresh_sqlite_url
from tests.support.metrics import RecordingMetrics
from tests.support.services import wait_until

HEARTBEAT = 0.5

# The task: its pid and a background child's pid, "ready", then it waits for RELEASE.
DAG_FILE = '''
import pendulum

from squall import DAG, BashOperator

with DAG("outage", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    BashOperator(task_id="t", bash_command=(
        'echo $$ > {marks}/pids; sleep 300 > /dev/null 2>&1 & echo $! >> {marks}/pids; '
        'echo ready >> {marks}/pids; '
        'while [ ! -e {marks}/release ]; do sleep 0.05; done; kill $!'))
'''


def test_heartbeat_during_an_outage_keeps_the_task(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)})
    engine = create_engine(f"sqlite:///{tmp_path / 'no-such-dir' / 'squall.db'}")
    command = TaskRunCommand(dag_id="d", task_id="t", run_id="r", try_number=1,
                             dag_file="DAGS_FOLDER/d.py", queue="default")
    metrics = RecordingMetrics()
    job = LocalTaskJob(command, settings=settings, engine=engine, celery_task_id="c",
                       worker_name="w", metrics=metrics)
    job.writes.job_id = 1  # as if the try had started
    with caplog.at_level(logging.DEBUG, logger="squall.worker.supervisor"):
        for _ in range(3):
            assert job.heartbeat() is None  # None: keep the task running (within the lease)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "database unreachable" in errors[0]
    assert metrics.counts[WORKER_OUTAGE] == 1
    engine.dispose()


# --------------------------------------------------------------------------- a real try


class SwitchedFactory:
    """A session factory that refuses (as an unreachable database does) while ``switch``
    exists, noting each refusal in ``refusals``."""

    def __init__(self, real: SessionFactory, switch: Path, refusals: Path) -> None:
        self.real = real
        self.switch = switch
        self.refusals = refusals

    def __call__(self, **kwargs: Any) -> Session:
        if self.switch.exists():
            with self.refusals.open("a") as out:
                out.write("refused\n")
            raise OperationalError("connect", {}, Exception("simulated partition"))
        return self.real(**kwargs)


@dataclass
class World:
    home: Path
    marks: Path
    environ: dict[str, str]
    factory: SessionFactory
    key: TaskInstanceKey
    command: TaskRunCommand
    celery_id: str
    threshold: float  # zombie_threshold and job_heartbeat_sec, as the supervisor has them
    heartbeat: float

    @property
    def switch(self) -> Path:
        return self.home / "outage"

    @property
    def refusals(self) -> Path:
        return self.home / "refusals"

    @property
    def result_file(self) -> Path:
        return self.home / "result.json"

    def ti(self) -> TaskInstance:
        with session_scope(self.factory) as session:
            return session.get_one(TaskInstance, (self.key.dag_id, self.key.task_id,
                                                  self.key.run_id, self.key.map_index))

    def job_heartbeat(self, job_id: int) -> float:
        """The job row's latest_heartbeat, as a POSIX timestamp."""
        with session_scope(self.factory) as session:
            beat = session.scalar(select(Job.latest_heartbeat).where(Job.id == job_id))
        assert beat is not None
        return beat.timestamp()

    def pids(self) -> list[int]:
        path = self.marks / "pids"
        wait_until(lambda: path.exists() and path.read_text().endswith("ready\n"), 30,
                   message="the task to start its processes")
        return [int(line) for line in path.read_text().split()[:-1]]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie process has ended: it only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def make_world(tmp_path: Path, template: Path, threshold: float | None) -> World:
    """A try QUEUED for the supervisor, with ``threshold`` and a heartbeat of
    :data:`HEARTBEAT` (None: both at their defaults)."""
    home, marks, dags = tmp_path / "home", tmp_path / "marks", tmp_path / "dags"
    for folder in (home, marks, dags):
        folder.mkdir()
    (dags / "outage_dag.py").write_text(DAG_FILE.format(marks=marks))
    db_url = _fresh_sqlite_url(template, tmp_path)
    environ = {"SQUALL_HOME": str(home), "SQUALL__DATABASE__SQL_ALCHEMY_CONN": db_url,
               "SQUALL__CORE__DAGS_FOLDER": str(dags)}
    if threshold is not None:
        environ.update({"SQUALL__SCHEDULER__JOB_HEARTBEAT_SEC": str(HEARTBEAT),
                        "SQUALL__SCHEDULER__ZOMBIE_THRESHOLD": str(threshold)})
    scheduler = Settings.load(env=environ).scheduler
    factory = make_session_factory(make_engine(db_url))
    parsed = parse_files_isolated(sorted(dags.glob("*.py")), dags, 30.0)
    assert not parsed.import_errors, parsed.import_errors
    celery_id = str(uuid.uuid4())
    with session_scope(factory) as session:
        sync_to_db(session, parsed, paused_at_creation=False, now=utcnow())
    with session_scope(factory) as session:
        dag = load_serialized_dags(session, ["outage"])["outage"]
        run = create_dag_run(session, dag, run_type=DagRunType.MANUAL,
                             logical_date=utcnow().replace(microsecond=0),
                             data_interval=None, state=DagRunState.RUNNING,
                             run_id="manual__outage")
        key = TaskInstanceKey("outage", "t", run.run_id)
    with session_scope(factory) as session:
        ti = session.get_one(TaskInstance, (key.dag_id, key.task_id, key.run_id, key.map_index))
        assert schedule_tis(session, [ti], now=utcnow()) == 1
        try_number = ti.try_number
        fileloc = session.get_one(DagModel, key.dag_id).fileloc
    with session_scope(factory) as session:
        assert compare_and_set_state(
            session, key, expected=TaskInstanceState.SCHEDULED, try_number=try_number,
            new_state=TaskInstanceState.QUEUED, external_executor_id=celery_id,
            queued_dttm=utcnow())
    command = TaskRunCommand(dag_id=key.dag_id, task_id=key.task_id, run_id=key.run_id,
                             try_number=try_number, queue="default",
                             dag_file=relative_dag_file(fileloc, dags, None))
    return World(home, marks, environ, factory, key, command, celery_id,
                 scheduler.zombie_threshold, scheduler.job_heartbeat_sec)


def supervise(world: World) -> None:
    """In the forked supervisor process: run the try, write its result to a file."""
    settings = Settings.load(env=world.environ)
    engine = make_engine(settings.sql_alchemy_conn)
    factory = SwitchedFactory(make_session_factory(engine), world.switch, world.refusals)
    metrics = RecordingMetrics()
    writes = TryWrites(world.command, settings=settings,
                       factory=cast(SessionFactory, factory),
                       celery_task_id=world.celery_id, worker_name="w")
    result = LocalTaskJob(world.command, settings=settings, engine=engine,
                          celery_task_id=world.celery_id, worker_name="w",
                          metrics=metrics, writes=writes).run()
    # written whole, then renamed: the test reads it as soon as it exists
    partial = world.result_file.with_suffix(".partial")
    partial.write_text(json.dumps(
        {**result.as_dict(), "metrics": dict(metrics.counts)}, default=str))
    partial.replace(world.result_file)


@pytest.fixture
def start(tmp_path: Path, _sqlite_template: Path
          ) -> Iterator[Any]:
    procs: list[multiprocessing.process.BaseProcess] = []

    def starter(threshold: float | None) -> tuple[World, int]:
        world = make_world(tmp_path, _sqlite_template, threshold)
        proc = multiprocessing.get_context("fork").Process(target=supervise, args=(world,))
        proc.start()
        procs.append(proc)
        wait_until(lambda: world.ti().state == TaskInstanceState.RUNNING, 30,
                   message="the try to start")
        job_id = world.ti().job_id
        assert job_id is not None
        return world, job_id

    yield starter
    for proc in procs:  # whatever happened, no supervisor outlives its test
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, 9)
        proc.join(10)


def finish(world: World) -> dict[str, Any]:
    wait_until(world.result_file.exists, 60, message="the supervisor to finish")
    result: dict[str, Any] = json.loads(world.result_file.read_text())
    return result


def refusals(world: World) -> int:
    return len(world.refusals.read_text().split()) if world.refusals.exists() else 0


def test_a_short_outage_leaves_the_task_running_and_it_finishes(start: Any) -> None:
    world, job_id = start(6.0)  # lease: 6 - (max(1, 0.6) + 0.25) = 4.75 s
    pids = world.pids()
    world.switch.touch()
    # two heartbeats refused (about a second): well inside the lease
    wait_until(lambda: refusals(world) >= 2, 30, message="two refused heartbeats")
    world.switch.unlink()
    lifted = time.time()
    wait_until(lambda: world.job_heartbeat(job_id) > lifted, 30,
               message="the heartbeat to resume")
    assert all(alive(pid) for pid in pids), "a short outage ended the try's processes"
    (world.marks / "release").touch()
    result = finish(world)
    assert result["status"] == SupervisorStatus.COMPLETED and result["state"] == "success"
    assert result["metrics"].get(WORKER_OUTAGE) == 1
    assert not result["metrics"].get(WORKER_LEASE_LOST)
    assert world.ti().state == TaskInstanceState.SUCCESS


@pytest.mark.parametrize(("threshold", "newer_try"), [(4.0, False), (4.0, True), (None, False)],
                         ids=["written", "newer-try-kept", "written-at-the-defaults"])
def test_a_long_outage_ends_the_try_before_the_zombie_threshold(
        start: Any, threshold: float | None, newer_try: bool) -> None:
    # 4 s and a 0.5 s heartbeat: a lease of 4 - (1 + 0.25) = 2.75 s; None: the defaults,
    # 60 s and 5 s, a lease of 60 - (10 + 2.5) = 47.5 s
    world, job_id = start(threshold)
    threshold, heartbeat = world.threshold, world.heartbeat
    terms = lease_terms(threshold, heartbeat)
    pids = world.pids()
    world.switch.touch()
    # the last heartbeat the database holds: the watchdog may act threshold s after it
    wait_until(lambda: refusals(world) >= 1, 30, message="a refused heartbeat")
    last_beat = world.job_heartbeat(job_id)
    wait_until(lambda: not any(alive(pid) for pid in pids), threshold + 30, interval=0.02,
               message="the try's processes to end")
    gone_at = time.time()
    assert gone_at < last_beat + threshold, (
        f"the try's processes ended {gone_at - last_beat:.2f} s after the last heartbeat, "
        f"not before zombie_threshold ({threshold:g} s)")
    # and not early: the lease ran out first (counted from just before that heartbeat)
    assert gone_at > last_beat + terms.lease - heartbeat, gone_at - last_beat
    ti = world.ti()
    assert ti.state == TaskInstanceState.RUNNING and ti.job_id == job_id  # nothing written
    if newer_try:  # meanwhile the scheduler failed it as a zombie and started try 2
        with session_scope(world.factory) as session:
            session.execute(update(TaskInstance).where(
                TaskInstance.dag_id == world.key.dag_id).values(
                try_number=ti.try_number + 1, job_id=job_id + 100))
    world.switch.unlink()
    result = finish(world)
    assert result["status"] == SupervisorStatus.LEASE_LOST
    assert "heartbeat lease lost: no database for" in result["reason"]
    assert result["metrics"].get(WORKER_LEASE_LOST) == 1
    ti = world.ti()
    if newer_try:
        assert result["state"] is None
        assert ti.state == TaskInstanceState.RUNNING and ti.job_id == job_id + 100
    else:
        assert result["state"] == "failed" and ti.state == TaskInstanceState.FAILED
        assert ti.state_reason is not None and "heartbeat lease lost" in ti.state_reason
