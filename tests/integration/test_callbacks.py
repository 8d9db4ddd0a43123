"""Callback requests (squall.execution.callbacks) and their execution in the DAG processor
(squall.scheduler.callback_runner): zombies, dead task processes and finished runs ask for
the callback in the transaction of their state change; the processor runs each once, in a
child process, with a timeout. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from squall.common.db import SessionFactory, session_scope
from squall.common.metrics import (
    QUEUED_TIMEOUT,
    TASKS_KILLED_EXTERNALLY,
    ZOMBIES_KILLED,
    LogMetrics,
)
from squall.common.models import (
    CallbackRequest,
    DagModel,
    DagRun,
    Job,
    SerializedDagModel,
    TaskInstance,
    TaskInstanceKey,
    utcnow,
)
from squall.common.payload import TaskRunCommand
from squall.common.settings import Settings
from squall.common.state import DagRunState, DagRunType, JobState, TaskInstanceState
from squall.dag_processing.serialization import deserialize_dag
from squall.execution.callbacks import CallbackKind
from squall.runs.run_creation import create_dag_run
from squall.scheduler import watchdog
from squall.scheduler.callback_runner import run_pending_callbacks
from squall.scheduler.dag_processor import DagProcessor, parse_and_sync_once
from squall.scheduler.dag_runs import SerializedDagCache, schedule_dag_runs
from squall.scheduler.executor import EventKind, ExecutorEvent
from squall.scheduler.job import FAILED_BEFORE_START, SchedulerJob
from squall.scheduler.watchdog import fail_zombies
from squall.sdk.dag import DAG
from squall.worker.try_writes import TryWrites
from tests.support.metrics import RecordingMetrics
from tests.support.scheduling import FakeExecutor
from tests.support.services import wait_until

TI = TaskInstanceState

DAG_FILE = '''
import json
import os
import time

import pendulum
from squall import DAG, EmptyOperator

MARKERS = MARKERS_DIR


def _write(name, payload):
    payload = {**payload, "pid": os.getpid(), "ppid": os.getppid()}
    with open(os.path.join(MARKERS, name), "a") as f:
        f.write(json.dumps(payload) + "\\n")


def _task(name):
    def callback(context):
        _write(name, {"task_id": context["ti"].task_id, "try": context["ti"].try_number,
                      "reason": context["reason"], "exception": str(context["exception"]),
                      "run_id": context["dag_run"].run_id})
    return callback


def _dag(name):
    def callback(context):
        _write(name, {"run_id": context["run_id"], "reason": context["reason"],
                      "dag_id": context["dag"].dag_id})
    return callback


def raising(context):
    raise RuntimeError("callback broke on purpose")


def sleeping(context):
    time.sleep(60)


with DAG("cb", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         on_success_callback=_dag("dag_success"), on_failure_callback=_dag("dag_failure")):
    EmptyOperator(task_id="t", retries=1, on_failure_callback=_task("task_failure"),
                  on_retry_callback=_task("task_retry"))
    EmptyOperator(task_id="raises", on_failure_callback=raising)
    EmptyOperator(task_id="sleeps", on_failure_callback=sleeping)
    EmptyOperator(task_id="plain")
'''


def settings_for(db_url: str, home: Path, **scheduler: Any) -> Settings:
    return Settings.load(env={"SQUALL_HOME": str(home)}, overrides={
        "database": {"sql_alchemy_conn": db_url},
        "core": {"dags_folder": str(home / "dags"), "dagbag_import_timeout": 20},
        "scheduler": {"scheduler_idle_sleep_time": 0.05, "callback_timeout": 20,
                      **scheduler},
    })


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    folder = tmp_path / "markers"
    folder.mkdir()
    return folder


def setup(db_url: str, tmp_path: Path, sf: SessionFactory, markers: Path,
          **scheduler: Any) -> tuple[Settings, DAG, str]:
    """The DAG file parsed and synced (by the DAG processor's pass), one RUNNING run."""
    settings = settings_for(db_url, tmp_path, **scheduler)
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "cb.py").write_text(DAG_FILE.replace("MARKERS_DIR",
                                                              repr(str(markers))))
    result = parse_and_sync_once(settings, sf)
    assert set(result.serialized) == {"cb"}, result.import_errors
    with session_scope(sf) as session:
        dag = deserialize_dag(session.get_one(SerializedDagModel, "cb").data)
        run = create_dag_run(session, dag, run_type=DagRunType.MANUAL,
                             logical_date=datetime(2024, 2, 9, tzinfo=utcnow().tzinfo),
                             data_interval=None, state=DagRunState.RUNNING,
                             external_trigger=True, now=utcnow())
        session.execute(update(DagModel).where(DagModel.dag_id == "cb")
                        .values(is_paused=False))
        return settings, dag, run.run_id


def make_zombie(sf: SessionFactory, run_id: str, task_id: str, *, try_number: int,
                max_tries: int) -> int:
    stale = utcnow() - timedelta(seconds=400)
    with session_scope(sf) as session:
        job = Job(job_type="LocalTaskJob", state=JobState.RUNNING.value, hostname="w1",
                  pid=1, start_date=stale, latest_heartbeat=stale)
        session.add(job)
        session.flush()
        session.execute(update(TaskInstance).where(
            TaskInstance.dag_id == "cb", TaskInstance.run_id == run_id,
            TaskInstance.task_id == task_id).values(
                state=TI.RUNNING.value, job_id=job.id, try_number=try_number,
                max_tries=max_tries, start_date=stale))
        return job.id


def run_watchdog(sf: SessionFactory, dag: DAG) -> int:
    with session_scope(sf) as session:
        return fail_zombies(session, {dag.dag_id: dag}, now=utcnow(), threshold=300,
                            metrics=LogMetrics())


def read_marker(markers: Path, name: str) -> list[dict[str, Any]]:
    path = markers / name
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def requests(sf: SessionFactory) -> list[CallbackRequest]:
    with session_scope(sf) as session:
        return list(session.scalars(select(CallbackRequest).order_by(CallbackRequest.id)))


def test_zombie_callbacks_run_once_in_a_child(db_url: str, tmp_path: Path, markers: Path,
                                              session_factory: SessionFactory) -> None:
    settings, dag, run_id = setup(db_url, tmp_path, session_factory, markers)
    job_id = make_zombie(session_factory, run_id, "t", try_number=1, max_tries=1)
    make_zombie(session_factory, run_id, "plain", try_number=1, max_tries=0)
    assert run_watchdog(session_factory, dag) == 2
    [request] = requests(session_factory)  # "plain" has no callback: no request
    assert (request.kind, request.task_id, request.try_number) == ("task_retry", "t", 1)
    assert request.processed_at is None
    assert request.fileloc == str(tmp_path / "dags" / "cb.py")
    assert not (markers / "task_retry").exists()  # the watchdog ran no user code

    assert run_pending_callbacks(settings, session_factory) == 1
    assert run_pending_callbacks(settings, session_factory) == 0
    [retry] = read_marker(markers, "task_retry")
    assert (retry["task_id"], retry["try"], retry["run_id"]) == ("t", 1, run_id)
    assert retry["reason"].startswith("zombie: supervisor heartbeat older than 300 s")
    assert f"job {job_id}" in retry["reason"] and retry["exception"] == retry["reason"]
    assert retry["pid"] != os.getpid() and retry["ppid"] == os.getpid()
    [done] = requests(session_factory)
    assert done.processed_at is not None and done.attempts == 1

    # the retry's try 2 becomes a zombie too, with no tries left: on_failure_callback
    make_zombie(session_factory, run_id, "t", try_number=2, max_tries=1)
    assert run_watchdog(session_factory, dag) == 1
    assert run_pending_callbacks(settings, session_factory) == 1
    [failure] = read_marker(markers, "task_failure")
    assert (failure["task_id"], failure["try"]) == ("t", 2)
    assert "zombie" in failure["reason"]
    assert len(read_marker(markers, "task_retry")) == 1
    with session_scope(session_factory) as session:
        ti = session.scalars(select(TaskInstance).where(TaskInstance.task_id == "t")).one()
        assert ti.state == TI.FAILED


def test_queued_timeout_requests_the_callback_like_any_failure(
        db_url: str, tmp_path: Path, markers: Path, session_factory: SessionFactory) -> None:
    """A try failed by task_queued_timeout asks for on_retry / on_failure_callback in the
    transaction of its compare-and-set, and the DAG processor runs it."""
    settings, dag, run_id = setup(db_url, tmp_path, session_factory, markers)
    long_ago = utcnow() - timedelta(seconds=700)
    with session_scope(session_factory) as session:
        session.execute(update(TaskInstance).where(
            TaskInstance.run_id == run_id, TaskInstance.task_id.in_(["t", "plain"])).values(
                state=TI.QUEUED.value, try_number=1, external_executor_id="celery-id",
                queued_dttm=long_ago))
        session.execute(update(TaskInstance).where(
            TaskInstance.run_id == run_id, TaskInstance.task_id == "t").values(max_tries=1))
    with session_scope(session_factory) as session:
        revoked = watchdog.fail_stuck_queued(session, {dag.dag_id: dag}, now=utcnow(),
                                             timeout=600, metrics=LogMetrics())
    assert revoked == ["celery-id", "celery-id"]
    [request] = requests(session_factory)  # "plain" has no callback: no request
    assert (request.kind, request.task_id, request.try_number) == ("task_retry", "t", 1)
    assert request.message == "queued for more than 600 s (task_queued_timeout)"

    assert run_pending_callbacks(settings, session_factory) == 1
    [retry] = read_marker(markers, "task_retry")
    assert (retry["task_id"], retry["try"], retry["run_id"]) == ("t", 1, run_id)
    assert retry["reason"] == "queued for more than 600 s (task_queued_timeout)"


#: each path that ends a try for a reason outside the task's code: its reason and metric
ENDED_FROM_OUTSIDE = {
    "dead_worker": (f"{FAILED_BEFORE_START}: WorkerLostError: worker died",
                    TASKS_KILLED_EXTERNALLY),
    "queued_timeout": ("queued for more than 600 s (task_queued_timeout)", QUEUED_TIMEOUT),
    "zombie": ("zombie: supervisor heartbeat older than 60 s", ZOMBIES_KILLED),
}


@pytest.mark.parametrize("path", sorted(ENDED_FROM_OUTSIDE))
def test_every_path_that_ends_a_try_from_outside_does_the_same(
        db_url: str, tmp_path: Path, markers: Path, session_factory: SessionFactory,
        path: str) -> None:
    """A zombie, a try queued too long and a try whose worker died before starting it (its
    Celery FAILURE while QUEUED) end alike, in one scheduler loop: the retry policy's state
    and next_retry_at, the reason, the callback requested, the metric counted once."""
    settings, _, run_id = setup(db_url, tmp_path, session_factory, markers)
    now = utcnow()
    key = TaskInstanceKey("cb", "t", run_id)
    executor = FakeExecutor()
    if path == "zombie":
        make_zombie(session_factory, run_id, "t", try_number=1, max_tries=1)
    else:
        queued = now - timedelta(seconds=700 if path == "queued_timeout" else 1)
        with session_scope(session_factory) as session:
            session.execute(update(TaskInstance).where(
                TaskInstance.run_id == run_id, TaskInstance.task_id == "t").values(
                    state=TI.QUEUED.value, try_number=1, max_tries=1,
                    external_executor_id="celery-id", queued_dttm=queued))
        if path == "dead_worker":
            executor.track(key, 1, "celery-id")
            executor.events.append(ExecutorEvent(key, 1, "celery-id", EventKind.FAILED,
                                                 "WorkerLostError: worker died"))
    metrics = RecordingMetrics()
    SchedulerJob(settings, session_factory, executor, clock=lambda: now,
                 metrics=metrics).run_once()

    reason, metric = ENDED_FROM_OUTSIDE[path]
    with session_scope(session_factory) as session:
        ti = session.scalars(select(TaskInstance).where(TaskInstance.task_id == "t")).one()
        assert (ti.state, ti.try_number) == (TI.UP_FOR_RETRY, 1)
        assert ti.state_reason is not None and ti.state_reason.startswith(reason)
        assert ti.next_retry_at == now + timedelta(minutes=5)  # the task's retry_delay
        assert ti.end_date == now
    [request] = requests(session_factory)
    assert (request.kind, request.task_id, request.try_number) == ("task_retry", "t", 1)
    assert request.message == ti.state_reason
    assert metrics.counts[metric] == 1


@pytest.mark.parametrize("moved_on", ["finished", "next_try"])
def test_no_request_when_the_compare_and_set_lost(db_url: str, tmp_path: Path,
                                                  markers: Path,
                                                  session_factory: SessionFactory,
                                                  moved_on: str) -> None:
    """The try moved on between the watchdog's read and its compare-and-set."""
    _settings, dag, run_id = setup(db_url, tmp_path, session_factory, markers)
    make_zombie(session_factory, run_id, "t", try_number=1, max_tries=1)
    with session_scope(session_factory) as session:
        [(ti, job)] = watchdog.zombie_candidates(session, now=utcnow(), threshold=300)
    if moved_on == "finished":  # its supervisor recorded the end after all
        with session_scope(session_factory) as session:
            session.execute(update(TaskInstance).where(TaskInstance.task_id == "t")
                            .values(state=TI.SUCCESS.value))
    else:  # cleared, and the next try runs under another supervisor
        make_zombie(session_factory, run_id, "t", try_number=2, max_tries=1)
    with session_scope(session_factory) as session:
        assert not watchdog.fail_zombie(session, ti, job, {dag.dag_id: dag}, now=utcnow(),
                                        threshold=300, metrics=LogMetrics())
    assert requests(session_factory) == []
    with session_scope(session_factory) as session:
        after = session.scalars(select(TaskInstance).where(TaskInstance.task_id == "t")).one()
        assert (after.state, after.try_number) == (
            (TI.SUCCESS, 1) if moved_on == "finished" else (TI.RUNNING, 2))


@pytest.mark.parametrize("outcome", ["success", "failed"])
def test_dag_callback_when_a_run_finishes(db_url: str, tmp_path: Path, markers: Path,
                                          session_factory: SessionFactory,
                                          outcome: str) -> None:
    settings, _dag, run_id = setup(db_url, tmp_path, session_factory, markers)
    with session_scope(session_factory) as session:
        session.execute(update(TaskInstance).where(TaskInstance.run_id == run_id)
                        .values(state=TI.SUCCESS.value))
        if outcome == "failed":
            session.execute(update(TaskInstance).where(TaskInstance.task_id == "plain")
                            .values(state=TI.FAILED.value))
    cache = SerializedDagCache()
    with session_scope(session_factory) as session:
        stats = schedule_dag_runs(session, cache, now=utcnow())
    assert stats.finished == 1
    with session_scope(session_factory) as session:
        cache.new_loop()
        schedule_dag_runs(session, cache, now=utcnow())  # finished: nothing more
        assert session.scalars(select(DagRun.state)
                               .where(DagRun.run_id == run_id)).one() == outcome
    [request] = requests(session_factory)
    kind = "dag_success" if outcome == "success" else "dag_failure"
    assert request.kind == kind and request.task_id is None
    assert run_pending_callbacks(settings, session_factory) == 1
    assert run_pending_callbacks(settings, session_factory) == 0
    [marker] = read_marker(markers, kind)
    assert (marker["dag_id"], marker["run_id"]) == ("cb", run_id)
    assert marker["reason"]
    other = "dag_failure" if outcome == "success" else "dag_success"
    assert read_marker(markers, other) == []


def test_failing_and_slow_callbacks_are_logged_and_not_retried(
        db_url: str, tmp_path: Path, markers: Path, session_factory: SessionFactory,
        caplog: pytest.LogCaptureFixture) -> None:
    settings, dag, run_id = setup(db_url, tmp_path, session_factory, markers)
    make_zombie(session_factory, run_id, "raises", try_number=1, max_tries=0)
    make_zombie(session_factory, run_id, "sleeps", try_number=1, max_tries=0)
    assert run_watchdog(session_factory, dag) == 2
    caplog.set_level(logging.INFO, logger="squall.scheduler.callback_runner")
    assert run_pending_callbacks(settings, session_factory, timeout=3) == 2
    messages = [r.getMessage() for r in caplog.records]
    assert any("raises" in m and "failed (exit code 1" in m for m in messages), messages
    assert any("sleeps" in m and "timed out after 3 s" in m for m in messages), messages
    assert all(r.processed_at is not None and r.attempts == 1
               for r in requests(session_factory))
    assert run_pending_callbacks(settings, session_factory, timeout=3) == 0
    with session_scope(session_factory) as session:  # the callbacks changed no state
        states = dict(session.execute(select(TaskInstance.task_id, TaskInstance.state)).all())
    assert states["raises"] == TI.FAILED and states["sleeps"] == TI.FAILED


def test_supervisor_fail_try_requests_the_callback(db_url: str, tmp_path: Path,
                                                   markers: Path,
                                                   session_factory: SessionFactory) -> None:
    settings, _dag, run_id = setup(db_url, tmp_path, session_factory, markers)
    make_zombie(session_factory, run_id, "t", try_number=2, max_tries=1)
    command = TaskRunCommand(dag_id="cb", task_id="t", run_id=run_id, try_number=2,
                             dag_file="DAGS_FOLDER/cb.py", queue="default")
    writes = TryWrites(command, settings=settings, factory=session_factory,
                       celery_task_id="c1", worker_name="w1")
    assert writes.fail("task process died: killed by SIGKILL") == TI.FAILED
    [request] = requests(session_factory)
    assert (request.kind, request.try_number) == (CallbackKind.TASK_FAILURE, 2)
    assert request.fileloc == str(tmp_path / "dags" / "cb.py")
    # a second report of the same try loses its compare-and-set: no second request
    assert writes.fail("supervisor received SIGTERM") is None
    assert len(requests(session_factory)) == 1
    assert run_pending_callbacks(settings, session_factory) == 1
    [failure] = read_marker(markers, "task_failure")
    assert failure["reason"] == "task process died: killed by SIGKILL"


def test_the_dag_processor_runs_callbacks_in_its_own_children(
        db_url: str, tmp_path: Path, markers: Path, session_factory: SessionFactory) -> None:
    settings, dag, run_id = setup(db_url, tmp_path, session_factory, markers,
                                  min_file_process_interval=3600)
    processor = DagProcessor(settings)
    processor.start()
    try:
        wait_until(lambda: processor.passes >= 1, timeout=60)
        make_zombie(session_factory, run_id, "t", try_number=1, max_tries=1)
        assert run_watchdog(session_factory, dag) == 1
        # no parse is asked for: the waiting processor picks the request up by itself
        wait_until(lambda: bool(read_marker(markers, "task_retry")), timeout=30)
    finally:
        processor.stop()
    [retry] = read_marker(markers, "task_retry")
    assert retry["pid"] not in (os.getpid(), processor.pid)
    assert retry["ppid"] != os.getpid()
    assert all(r.processed_at is not None for r in requests(session_factory))
