"""``squall jobs check`` (the health command) and the ``job`` row a Celery worker keeps.

The command runs as a subprocess against ``job`` rows the tests insert (alive, stale, ended,
of another type or host); then against a real ``squall celery worker`` and ``squall
scheduler`` on the embedded default (SQLite, embedded broker), while they run and after they
stop. :class:`~squall.worker.worker_job.WorkerJob` riding out a database outage runs in
process.
"""

from __future__ import annotations

import logging
import socket
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from squall.common.db import SessionFactory, make_engine, session_scope
from squall.common.dbops import migrate
from squall.common.metrics import WORKER_OUTAGE
from squall.common.models import Job, utcnow
from squall.common.settings import Settings
from squall.common.state import JobState
from squall.runs.jobs import SCHEDULER_JOB_TYPE as SCHEDULER_JOB
from squall.runs.jobs import TRIGGERER_JOB_TYPE as TRIGGERER_JOB
from squall.worker.worker_job import JOB_TYPE as WORKER_JOB
from squall.worker.worker_job import WorkerJob, worker_node_name
from tests.integration.test_cli import assert_clean_error, ok, squall
from tests.integration.test_cluster import make_cluster
from tests.support.cluster import Cluster
from tests.support.services import free_port, wait_until

pytestmark = pytest.mark.integration

THRESHOLD = 30  # [scheduler] scheduler_health_check_threshold, the default
ALIVE = "Found one alive job."
NONE_ALIVE = "No alive jobs found."


@pytest.fixture
def jobs(sqlite_session_factory: SessionFactory, tmp_path: Path) -> Iterator[JobsDb]:
    yield JobsDb(sqlite_session_factory, tmp_path / "home")


class JobsDb:
    """A migrated database to put ``job`` rows in, and ``squall jobs check`` run on it."""

    def __init__(self, factory: SessionFactory, home: Path) -> None:
        self.factory = factory
        self.home = home
        self.url = factory.kw["bind"].url.render_as_string(hide_password=False)

    def add(self, job_type: str, hostname: str, *, age: float = 0.0,
            state: JobState = JobState.RUNNING) -> None:
        """A job row whose latest heartbeat was ``age`` seconds ago."""
        beat = utcnow() - timedelta(seconds=age)
        with session_scope(self.factory) as session:
            session.add(Job(job_type=job_type, state=state.value, hostname=hostname, pid=1,
                            start_date=beat, latest_heartbeat=beat,
                            end_date=None if state == JobState.RUNNING else beat))

    def check(self, *args: str, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
        return squall(self.home, "jobs", "check", *args,
                      env={"SQUALL__DATABASE__SQL_ALCHEMY_CONN": self.url, **(env or {})})


def test_a_fresh_running_job_of_the_type_is_alive(jobs: JobsDb) -> None:
    jobs.add(SCHEDULER_JOB, "sched-host")
    assert ok(jobs.check("--job-type", "scheduler")).stdout.strip() == ALIVE
    # a scheduler is not a worker, nor is a task's supervisor
    jobs.add("LocalTaskJob", "w9@host")
    assert_clean_error(jobs.check("--job-type", "worker"), 1, NONE_ALIVE)


def test_stale_and_ended_jobs_are_not_alive(jobs: JobsDb) -> None:
    jobs.add(WORKER_JOB, "w1@host", age=THRESHOLD + 5)
    jobs.add(WORKER_JOB, "w2@host", state=JobState.SUCCESS)
    jobs.add(WORKER_JOB, "w3@host", state=JobState.FAILED)
    proc = jobs.check("--job-type", "worker")
    assert_clean_error(proc, 1, NONE_ALIVE)
    assert proc.stdout == ""
    # a heartbeat a little inside the threshold is alive
    jobs.add(WORKER_JOB, "w4@host", age=THRESHOLD - 10)
    assert ok(jobs.check("--job-type", "worker")).stdout.strip() == ALIVE


def test_a_triggerer_is_alive_within_the_triggerers_threshold(jobs: JobsDb) -> None:
    """``--job-type triggerer`` looks at ``TriggererJob`` rows with ``[triggerer]
    triggerer_health_check_threshold`` (Airflow: ``Job.is_alive`` of a TriggererJob)."""
    jobs.add(SCHEDULER_JOB, "sched-host")
    assert_clean_error(jobs.check("--job-type", "triggerer"), 1, NONE_ALIVE)
    jobs.add(TRIGGERER_JOB, "trig-host", age=15)
    assert ok(jobs.check("--job-type", "triggerer", "--hostname", "trig-host")
              ).stdout.strip() == ALIVE
    # stale by the triggerer's threshold, though not by the scheduler's (30 s)
    short = {"SQUALL__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
             "SQUALL__TRIGGERER__JOB_HEARTBEAT_SEC": "1"}
    assert_clean_error(jobs.check("--job-type", "triggerer", env=short), 1, NONE_ALIVE)


def test_hostname_and_local(jobs: JobsDb) -> None:
    here = socket.gethostname()
    jobs.add(WORKER_JOB, "w1@elsewhere.example")
    jobs.add(SCHEDULER_JOB, "elsewhere.example")
    for job_type in ("worker", "scheduler"):
        assert_clean_error(jobs.check("--job-type", job_type, "--local"), 1, NONE_ALIVE)
    assert_clean_error(jobs.check("--job-type", "worker", "--hostname", "w1@" + here), 1,
                       NONE_ALIVE)
    # a worker's node name, whole or its host part
    assert ok(jobs.check("--job-type", "worker", "--hostname", "w1@elsewhere.example"))
    assert ok(jobs.check("--job-type", "worker", "--hostname", "elsewhere.example"))
    # the scheduler records this machine's fully qualified name; a worker, its node name
    jobs.add(WORKER_JOB, "w2@" + here)
    jobs.add(SCHEDULER_JOB, socket.getfqdn())
    for job_type in ("worker", "scheduler"):
        assert ok(jobs.check("--job-type", job_type, "--local")).stdout.strip() == ALIVE
    proc = jobs.check("--job-type", "worker", "--local", "--hostname", "x")
    assert proc.returncode == 2 and "not allowed with" in proc.stderr


def test_limit_and_allow_multiple(jobs: JobsDb) -> None:
    jobs.add(WORKER_JOB, "w1@host")
    jobs.add(WORKER_JOB, "w2@host", age=1)
    jobs.add(WORKER_JOB, "w3@host", age=THRESHOLD + 5)  # stale: never counted
    assert ok(jobs.check("--job-type", "worker")).stdout.strip() == ALIVE  # --limit 1
    assert_clean_error(jobs.check("--job-type", "worker", "--limit", "3"), 1,
                       "Found 2 alive jobs. Expected only one.")
    for limit in ("3", "0"):
        assert ok(jobs.check("--job-type", "worker", "--limit", limit, "--allow-multiple")
                  ).stdout.strip() == "Found 2 alive jobs."
    assert_clean_error(jobs.check("--job-type", "worker", "--allow-multiple"), 1,
                       "--allow-multiple needs --limit above 1")
    assert_clean_error(jobs.check("--job-type", "worker", "--limit", "-1"), 1, "--limit -1")


def test_a_database_it_cannot_use_is_a_clean_failure(jobs: JobsDb, tmp_path: Path) -> None:
    empty = squall(tmp_path / "empty", "jobs", "check", "--job-type", "scheduler")
    assert_clean_error(empty, 1, "squall db migrate")
    down = squall(tmp_path / "down", "jobs", "check", "--job-type", "scheduler", env={
        "SQUALL__DATABASE__SQL_ALCHEMY_CONN": f"postgresql://u:p@127.0.0.1:{free_port()}/x"})
    assert_clean_error(down, 1)


# ------------------------------------------------------------------ the worker's job row


class Counts:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def incr(self, name: str, count: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + count

    def gauge(self, name: str, value: float) -> None:
        pass

    def timing(self, name: str, ms: float) -> None:
        pass


def test_worker_job_outlives_a_database_outage(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """Beats fail while the database cannot be opened (one warning, the thread goes on);
    the first beat that works inserts the row; stop marks it ended."""
    folder = tmp_path / "not-yet"
    url = f"sqlite:///{folder / 'squall.db'}"
    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)},
                             overrides={"database": {"sql_alchemy_conn": url}})
    caplog.set_level(logging.DEBUG, logger="squall.worker.worker_job")
    metrics = Counts()
    job = WorkerJob(settings, "w1@host", interval=0.05, metrics=metrics).start()
    try:
        wait_until(lambda: sum("still unreachable" in r.getMessage()
                               for r in caplog.records) >= 2, 10, message="failed beats")
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage(), warnings
        assert job.job_id is None
        folder.mkdir()
        engine = make_engine(url)
        try:
            migrate(engine)
            wait_until(lambda: job.job_id is not None, 10, message="the job row")
            assert any("reachable again" in r.getMessage() for r in caplog.records)
            job.stop()
            with engine.connect() as conn:
                row = conn.execute(select(Job.job_type, Job.hostname, Job.state, Job.end_date,
                                          Job.latest_heartbeat)).one()
        finally:
            engine.dispose()
    finally:
        job.stop()
    assert metrics.counts == {WORKER_OUTAGE: 1}
    assert row[:3] == (WORKER_JOB, "w1@host", JobState.SUCCESS.value)
    assert isinstance(row[3], datetime) and row[4] is not None


def test_worker_node_name_is_celerys() -> None:
    host = socket.gethostname()
    assert worker_node_name("w1@%h") == f"w1@{host}"
    assert worker_node_name(None) == f"celery@{host}"
    assert worker_node_name("w2@box") == "w2@box"


@pytest.fixture
def standalone(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    cluster = make_cluster(request, "standalone", tmp_path / "home")
    cluster.cli("db", "migrate")
    yield cluster
    cluster.stop_all()


def _check(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return cluster.cli("jobs", "check", *args, check=False, timeout=60)


def test_jobs_check_follows_a_real_worker_and_scheduler(standalone: Cluster) -> None:
    cluster = standalone
    assert _check(cluster, "--job-type", "worker").returncode == 1
    worker = cluster.start_worker("w1")
    wait_until(lambda: _check(cluster, "--job-type", "worker").returncode == 0, 30,
               interval=0.5, message="an alive worker job")
    node = f"w1@{socket.gethostname()}"
    for where in (["--local"], ["--hostname", node]):
        proc = _check(cluster, "--job-type", "worker", *where)
        assert proc.returncode == 0 and proc.stdout.strip() == ALIVE, proc.stderr
    # the row moves on while the worker runs
    with session_scope(cluster.session_factory) as session:
        first = session.scalars(select(Job.latest_heartbeat)
                                .where(Job.job_type == WORKER_JOB)).one()

    def beaten() -> bool:
        with session_scope(cluster.session_factory) as session:
            latest = session.scalars(select(Job.latest_heartbeat)
                                     .where(Job.job_type == WORKER_JOB)).one()
        return first is not None and latest is not None and latest > first

    wait_until(beaten, 15, interval=0.2, message="a later heartbeat")
    assert _check(cluster, "--job-type", "scheduler").returncode == 1

    assert cluster.stop(worker) == 0, cluster.logs("w1")
    # stopped: the row was ended in the worker's last moments, not left to go stale
    with session_scope(cluster.session_factory) as session:
        job = session.scalars(select(Job).where(Job.job_type == WORKER_JOB)).one()
        assert (job.state, job.hostname) == (JobState.SUCCESS.value, node)
        assert job.end_date is not None
    assert_clean_error(_check(cluster, "--job-type", "worker"), 1, NONE_ALIVE)

    scheduler = cluster.start_scheduler()
    wait_until(lambda: _check(cluster, "--job-type", "scheduler", "--local").returncode == 0,
               60, interval=0.5, message="an alive scheduler job")
    assert cluster.stop(scheduler) == 0, cluster.logs("scheduler")
    assert_clean_error(_check(cluster, "--job-type", "scheduler"), 1, NONE_ALIVE)


def test_a_fork_waits_for_the_beat_in_progress(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A fork of the worker's main process (Celery forking a pool process) happens between
    beats, never during one: a child forked mid-beat inherited the locks the beat held and
    hung at its first database call. The beat here is held open until the test lets it end;
    a fork attempted meanwhile returns only after it ended."""
    import os
    import threading

    settings = Settings.load(env={"SQUALL_HOME": str(tmp_path)},
                             overrides={"database": {"sql_alchemy_conn":
                                                     f"sqlite:///{tmp_path / 'x.db'}"}})
    events: list[str] = []
    in_beat, let_go = threading.Event(), threading.Event()

    def slow_beat(self: WorkerJob, factory: SessionFactory) -> None:
        if not in_beat.is_set():
            in_beat.set()
            let_go.wait(10)
            events.append("beat ended")

    monkeypatch.setattr(WorkerJob, "_beat", slow_beat)
    job = WorkerJob(settings, "w1@host", interval=60).start()
    forked = threading.Event()

    def fork() -> None:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        events.append("forked")
        os.waitpid(pid, 0)
        forked.set()

    try:
        assert in_beat.wait(10), "the first beat did not start"
        forker = threading.Thread(target=fork)
        forker.start()
        # a fork that did not wait would be done within this window
        assert not forked.wait(0.5), events
        let_go.set()
        assert forked.wait(10), "the fork did not go ahead once the beat ended"
        forker.join(5)
    finally:
        let_go.set()
        job.stop()
    assert events == ["beat ended", "forked"]
