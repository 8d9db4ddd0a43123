"""Celery workers as users start them, against PostgreSQL and a private redis-server.

The module starts one ``python -m squall celery worker -q <queue> -c 2 -n w1@%h`` and reuses
it; the ``celery -A squall.worker worker`` form and the new-interpreter mode get a worker of
their own. The test plays the scheduler: it syncs the DAG files, creates a run, moves a task
instance SCHEDULED -> QUEUED with a Celery task id and publishes the task-run command with that
id. Executions are counted by a side effect the task writes (one line per execution in a
"marks" file), not by log lines.
"""

from __future__ import annotations

import ast
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from sqlalchemy import Engine, select, update

from squall.common.celery_app import RUN_TASK_NAME, create_celery_app
from squall.common.db import SessionFactory, make_engine, make_session_factory, session_scope
from squall.common.models import DagModel, Job, TaskInstance, TaskInstanceKey, utcnow
from squall.common.models.taskinstance import compare_and_set_state
from squall.common.payload import TaskRunCommand, relative_dag_file
from squall.common.settings import Settings
from squall.common.state import DagRunState, DagRunType, JobState, TaskInstanceState
from squall.dag_processing.dagbag import parse_files_isolated
from squall.dag_processing.sync import sync_to_db
from squall.execution.runner import task_log_path
from squall.runs.run_creation import create_dag_run
from squall.runs.ti_updates import schedule_tis
from squall.scheduler.state_fetcher import PENDING, BulkStateFetcher, CeleryTaskState
from squall.worker.supervisor import REASON_SIGTERM
from tests.conftest import _pg_clean
from tests.support.services import RedisServer, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = socket.gethostname()
HEARTBEAT = 0.5
QUEUE = "worker_tests"

DAGS = '''
import os
import subprocess
import sys
import time

import pendulum

from squall import DAG, BashOperator, PythonOperator

MARKS = {marks!r}


def mark(context):
    ti = context["ti"]
    with open(os.path.join(MARKS, f"{{ti.dag_id}}.{{ti.run_id}}"), "a") as handle:
        handle.write(f"{{ti.try_number}} {{os.getpid()}} {{' '.join(sys.argv[1:3])}}\\n")


def ok(**context):
    mark(context)
    print("ok printed")
    subprocess.run(["echo", "ok echoed"], check=True)
    return "done"


def boom(**context):
    mark(context)
    raise ValueError("boom on purpose")


def sleepy(**context):
    mark(context)
    time.sleep(30)


def crash(**context):
    mark(context)
    os._exit(3)


def slow_callback(context):
    time.sleep(1.5)  # three heartbeats after the state was recorded
    with open(os.path.join(MARKS, f"{{context['ti'].dag_id}}.{{context['run_id']}}"), "a") as f:
        f.write("callback done\\n")


START = pendulum.datetime(2024, 1, 1, tz="UTC")
for dag_id, func, retries in (("w_ok", ok, 0), ("w_fail", boom, 1), ("w_sleep", sleepy, 0),
                              ("w_crash", crash, 0)):
    with DAG(dag_id, schedule=None, start_date=START):
        PythonOperator(task_id="t", python_callable=func, retries=retries,
                       retry_delay=pendulum.duration(seconds=60))

with DAG("w_callback", schedule=None, start_date=START):
    PythonOperator(task_id="t", python_callable=ok, on_success_callback=slow_callback)

TREE = {tree!r}  # see TREE in the test module
for dag_id, command, timeout in (
        ("w_bash", TREE + "sleep 300", None),
        ("w_bash_timeout", TREE + "sleep 300", pendulum.duration(seconds=2)),
        ("w_bash_leaves", TREE + "echo finished", None)):
    with DAG(dag_id, schedule=None, start_date=START):
        BashOperator(task_id="t", bash_command=command, env={{"MARKS": MARKS}},
                     append_env=True, execution_timeout=timeout)
'''

# A bash command that starts a tree: a background child, a grandchild, and a process in a
# session of its own whose parent has exited (an orphan). Each writes its pid to
# MARKS/<dag>.<run>.pids; the command's own pid comes first, "ready" last.
TREE = r"""
export P="$MARKS/$SQUALL_CTX_DAG_ID.$SQUALL_CTX_DAG_RUN_ID.pids"
echo $$ >> "$P"
sleep 300 > /dev/null 2>&1 &
echo $! >> "$P"
bash -c 'sleep 300 > /dev/null 2>&1 & echo $! >> "$P"; wait' > /dev/null 2>&1 &
(setsid bash -c 'echo $$ >> "$P"; exec sleep 300' > /dev/null 2>&1 &)
while [ "$(wc -l < "$P")" -lt 4 ]; do sleep 0.05; done
echo ready >> "$P"
"""

BROKEN_VALID = '''
import pendulum

from squall import DAG, EmptyOperator

with DAG("w_broken", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    EmptyOperator(task_id="t")
'''

BROKEN_ON_WORKER = '''
raise RuntimeError("this DAG file is broken on the worker")
'''


# --------------------------------------------------------------------------- the environment


@dataclass
class Env:
    home: Path
    dags_folder: Path
    marks: Path
    db_url: str
    environ: dict[str, str]
    settings: Settings
    factory: SessionFactory
    app: Celery
    redis_url: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, _pg_engine: Engine,
        redis_server: RedisServer) -> Iterator[Env]:
    _pg_clean(_pg_engine)
    redis_server.flushall()
    db_url = _pg_engine.url.render_as_string(hide_password=False)
    home = tmp_path_factory.mktemp("worker-home")
    dags, marks = home / "dags", home / "marks"
    dags.mkdir()
    marks.mkdir()
    (dags / "worker_dags.py").write_text(DAGS.format(marks=str(marks), tree=TREE))
    (dags / "broken_dag.py").write_text(BROKEN_VALID)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL")}
    environ.update({
        "SQUALL_HOME": str(home),
        "SQUALL__DATABASE__SQL_ALCHEMY_CONN": db_url,
        "SQUALL__CELERY__BROKER_URL": redis_server.db_url(0),
        "SQUALL__CELERY__RESULT_BACKEND": redis_server.db_url(1),
        "SQUALL__CORE__DAGS_FOLDER": str(dags),
        "SQUALL__SCHEDULER__JOB_HEARTBEAT_SEC": str(HEARTBEAT),
        "SQUALL__LOGGING__LOGGING_LEVEL": "INFO",
        "SQUALL__LOGGING__QUIET_CONSOLE": "false",  # the tests read the workers' logs
        "PYTHONPATH": os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    })
    settings = Settings.load(env=environ)
    engine = make_engine(db_url)
    factory = make_session_factory(engine)
    result = parse_files_isolated(sorted(dags.glob("*.py")), dags, 30.0)
    assert not result.import_errors, result.import_errors
    with session_scope(factory) as session:
        sync_to_db(session, result, paused_at_creation=False, now=utcnow())
    app = create_celery_app(settings)
    try:
        yield Env(home, dags, marks, db_url, environ, settings, factory, app,
                  redis_server.db_url(0))
    finally:
        app.close()
        engine.dispose()


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_worker(env: Env, argv: list[str], name: str,
                 extra_env: dict[str, str] | None = None) -> Worker:
    log_path = env.home / f"{name}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, *argv], env={**env.environ, **(extra_env or {})},
            cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    worker = Worker(f"{name}@{HOST}", process, log_path)

    def ready() -> bool:
        assert process.poll() is None, f"worker exited with {process.returncode}:\n{worker.log()}"
        # a connection of its own: kombu's pools are process-wide, and a pooled one may
        # date from before a test restarted the session's redis-server
        with env.app.connection_for_write() as conn:
            replies = env.app.control.ping(timeout=0.5, connection=conn)
        return any(worker.name in reply for reply in replies)

    try:
        wait_until(ready, 30, interval=0.2, message=f"worker {worker.name} to answer a ping")
    except BaseException:
        stop_worker(worker)
        raise
    return worker


def stop_worker(worker: Worker) -> None:
    if worker.process.poll() is None:
        worker.process.send_signal(signal.SIGTERM)
        try:
            worker.process.wait(15)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


@pytest.fixture(scope="module")
def worker(env: Env) -> Iterator[Worker]:
    w = start_worker(env, ["-m", "squall", "celery", "worker", "-q", QUEUE, "-c", "2",
                           "-n", "w1@%h"], "w1")
    yield w
    stop_worker(w)


# --------------------------------------------------------------------------- playing scheduler

_dates = itertools.count()


@dataclass
class Sent:
    key: TaskInstanceKey
    try_number: int
    celery_id: str
    command: TaskRunCommand


def new_run(env: Env, dag_id: str) -> TaskInstanceKey:
    from squall.dag_processing.sync import load_serialized_dags

    logical = utcnow().replace(microsecond=0) + timedelta(seconds=next(_dates))
    with session_scope(env.factory) as session:
        dag = load_serialized_dags(session, [dag_id])[dag_id]
        run = create_dag_run(session, dag, run_type=DagRunType.MANUAL, logical_date=logical,
                             data_interval=None, state=DagRunState.RUNNING,
                             run_id=f"manual__{uuid.uuid4().hex[:12]}")
        return TaskInstanceKey(dag_id, "t", run.run_id)


def queue_try(env: Env, key: TaskInstanceKey, queue: str = QUEUE) -> Sent:
    """What the scheduler does: SCHEDULED (new try), QUEUED with a Celery id, publish."""
    with session_scope(env.factory) as session:
        ti = session.get_one(TaskInstance, (key.dag_id, key.task_id, key.run_id, key.map_index))
        assert schedule_tis(session, [ti], now=utcnow()) == 1
        try_number = ti.try_number
        fileloc = session.get_one(DagModel, key.dag_id).fileloc
    celery_id = str(uuid.uuid4())
    with session_scope(env.factory) as session:
        assert compare_and_set_state(
            session, key, expected=TaskInstanceState.SCHEDULED, try_number=try_number,
            new_state=TaskInstanceState.QUEUED, external_executor_id=celery_id,
            queued_dttm=utcnow())
    command = TaskRunCommand(dag_id=key.dag_id, task_id=key.task_id, run_id=key.run_id,
                             try_number=try_number, queue=queue,
                             dag_file=relative_dag_file(fileloc, env.dags_folder, None))
    publish(env, command, celery_id, queue)
    return Sent(key, try_number, celery_id, command)


def publish(env: Env, command: Any, celery_id: str, queue: str = QUEUE) -> None:
    message = command.to_message() if isinstance(command, TaskRunCommand) else command
    env.app.send_task(RUN_TASK_NAME, args=[message], task_id=celery_id, queue=queue)


def ti_row(env: Env, key: TaskInstanceKey) -> TaskInstance:
    with session_scope(env.factory) as session:
        return session.get_one(TaskInstance, (key.dag_id, key.task_id, key.run_id, key.map_index),
                               populate_existing=True)


def wait_state(env: Env, key: TaskInstanceKey, states: set[str], worker: Worker,
               timeout: float = 30) -> TaskInstance:
    def reached() -> bool:
        return ti_row(env, key).state in states

    try:
        wait_until(reached, timeout, interval=0.1, message=f"{key} to reach {states}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; it is {ti_row(env, key)}\n--- worker log tail:\n"
                             f"{worker.log()[-4000:]}") from None
    return ti_row(env, key)


def celery_summaries(env: Env, celery_id: str) -> list[dict[str, Any]]:
    """The supervisor's summaries Celery logged for ``celery_id`` (``run_task`` ignores its
    result, so a try that ends normally stores none: ADR 22), in the order logged."""
    marker = f"squall.run_task[{celery_id}] succeeded in "
    found: list[dict[str, Any]] = []
    for path in sorted(env.home.glob("*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if marker in line:
                value = ast.literal_eval(line.split(marker, 1)[1].split(": ", 1)[1])
                assert isinstance(value, dict), line
                found.append(value)
    return found


def stored_result(env: Env, celery_id: str) -> bytes | None:
    """The raw value of ``celery_id``'s key in the result backend (Redis), if any."""
    backend = env.app.backend
    value = backend.get(backend.get_key_for_task(celery_id))
    return None if value is None else bytes(value)


def celery_result(env: Env, celery_id: str, status: str | None = None,
                  timeout: float = 30) -> dict[str, Any]:
    """The first summary the worker logged for the task (with ``status``, when given), once
    there is one; and no result is stored for it."""
    found: dict[str, Any] = {}

    def ready() -> bool:
        for value in celery_summaries(env, celery_id):
            if status is None or value.get("status") == status:
                found.update(value)
                return True
        return False

    wait_until(ready, timeout, interval=0.1, message=f"Celery summary {celery_id} ({status})")
    # Celery stores a result before it logs the task's success: none is stored
    assert stored_result(env, celery_id) is None
    return found


def marks(env: Env, key: TaskInstanceKey) -> list[str]:
    path = env.marks / f"{key.dag_id}.{key.run_id}"
    return path.read_text().splitlines() if path.exists() else []


def job_row(env: Env, job_id: int) -> Job:
    with session_scope(env.factory) as session:
        return session.get_one(Job, job_id, populate_existing=True)


def job_count(env: Env) -> int:
    with session_scope(env.factory) as session:
        return len(session.scalars(select(Job.id)).all())


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def squall_cli(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "squall", *args], env=env.environ,
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                          check=False)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has ended: it only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def tree_pids(env: Env, key: TaskInstanceKey) -> list[int]:
    """The pids the TREE bash command wrote (the command, a background child, a grandchild,
    an orphan in its own session), once it wrote them all."""
    path = env.marks / f"{key.dag_id}.{key.run_id}.pids"
    wait_until(lambda: path.exists() and path.read_text().endswith("ready\n"), 30,
               message=f"the bash command of {key} to start its processes")
    pids = [int(line) for line in path.read_text().split()[:-1]]
    assert len(pids) == 4 and all(alive(pid) for pid in pids), pids
    return pids


#: every process of a try Squall ends is gone within two heartbeats (docs/guarantees.md);
#: the second of slack is for this test's polling on a loaded machine
KILL_BOUND = 2 * HEARTBEAT + 1.0


def assert_all_gone(pids: list[int], since: float, what: str) -> None:
    wait_until(lambda: not any(alive(pid) for pid in pids), 30, interval=0.02,
               message=f"every process of the try to end after {what}: "
                       f"{[pid for pid in pids if alive(pid)]} still run")
    took = time.monotonic() - since
    assert took <= KILL_BOUND, f"the try's processes took {took:.2f} s to end after {what}"


def running_tree(env: Env, worker: Worker, dag_id: str = "w_bash"
                 ) -> tuple[Sent, int, list[int]]:
    """A running bash try with its tree started: (sent, supervisor pid, every pid of the
    try: the task process first)."""
    sent = queue_try(env, new_run(env, dag_id))
    ti = wait_state(env, sent.key, {"running"}, worker)
    supervisor = job_row(env, ti.job_id).pid
    assert supervisor is not None
    pids = tree_pids(env, sent.key)
    task_pid = ti_row(env, sent.key).pid
    assert task_pid is not None and task_pid != supervisor and alive(task_pid)
    return sent, supervisor, [task_pid, *pids]


# --------------------------------------------------------------------------- tests


def test_success_is_recorded_with_node_name_job_and_log(env: Env, worker: Worker) -> None:
    sent = queue_try(env, new_run(env, "w_ok"))
    ti = wait_state(env, sent.key, {"success"}, worker)
    assert ti.try_number == 1
    assert ti.hostname == f"w1@{HOST}"
    assert ti.job_id is not None and ti.pid is not None
    assert ti.start_date is not None and ti.end_date is not None
    lines = marks(env, sent.key)
    assert len(lines) == 1 and lines[0].split()[1] == str(ti.pid)  # the recorded task pid

    job = job_row(env, ti.job_id)
    assert (job.job_type, job.hostname) == ("LocalTaskJob", f"w1@{HOST}")
    assert job.pid != ti.pid  # the supervisor, not the task process
    wait_until(lambda: job_row(env, ti.job_id).state == JobState.SUCCESS, 10,
               message="the job row to finish")
    assert job_row(env, ti.job_id).end_date is not None
    result = celery_result(env, sent.celery_id)
    assert result["status"] == "completed" and result["state"] == "success"

    proc = squall_cli(env, "tasks", "logs", "w_ok", "t", sent.key.run_id)
    assert proc.returncode == 0, proc.stderr
    assert "starting try 1" in proc.stdout and "running -> success" in proc.stdout


def test_a_successful_try_stores_no_result_and_the_scheduler_lets_go_of_it(
        env: Env, worker: Worker) -> None:
    """ADR 22: nothing is written to the result backend for a try that ends normally, and
    the scheduler stops tracking the try from the database alone (its loop decides the run
    and sees the try over)."""
    from squall.scheduler.executor import CeleryExecutor
    from squall.scheduler.job import SchedulerJob

    executor = CeleryExecutor.from_settings(env.app, env.settings)
    try:
        sent = queue_try(env, new_run(env, "w_ok"))
        executor.track(sent.key, sent.try_number, sent.celery_id)
        wait_state(env, sent.key, {"success"}, worker)
        assert celery_result(env, sent.celery_id, "completed")["state"] == "success"
        assert stored_result(env, sent.celery_id) is None
        executor.sync()  # no result to read: still tracked, as PENDING
        assert sent.celery_id in executor.running
        assert executor.get_event_buffer() == []
        job = SchedulerJob(env.settings, env.factory, executor)
        job.run(num_runs=1)  # also ends the executor
        assert sent.celery_id not in executor.running
    finally:
        executor.end()


def test_callbacks_after_the_recorded_state_are_not_killed(env: Env, worker: Worker) -> None:
    sent = queue_try(env, new_run(env, "w_callback"))
    wait_state(env, sent.key, {"success"}, worker)
    result = celery_result(env, sent.celery_id)
    assert (result["status"], result["state"]) == ("completed", "success")
    assert marks(env, sent.key)[1:] == ["callback done"]
    assert "state changed externally" not in worker.log()


def test_duplicate_delivery_is_refused_and_changes_nothing(env: Env, worker: Worker) -> None:
    sent = queue_try(env, new_run(env, "w_ok"))
    done = wait_state(env, sent.key, {"success"}, worker)
    celery_result(env, sent.celery_id, "completed")
    log_path = task_log_path(env.settings.log_folder, sent.key, 1)
    log_before = log_path.read_bytes()
    jobs_before = job_count(env)

    other_id = str(uuid.uuid4())  # a stale copy published under another Celery id
    publish(env, sent.command, other_id)
    result = celery_result(env, other_id, "skipped_duplicate")
    assert result["reason"] == "the task instance is success, not queued"
    # A redelivery: same message, same id.
    publish(env, sent.command, sent.celery_id)
    refusal = f"TaskInstance {sent.key}: try 1 not started: "
    wait_until(lambda: worker.log().count(refusal) == 2, 30, message="the second refusal")
    redelivered = celery_result(env, sent.celery_id, "skipped_duplicate")
    assert redelivered["reason"] == "the task instance is success, not queued"

    after = ti_row(env, sent.key)
    assert (after.state, after.end_date, after.job_id, after.pid, after.try_number) == (
        done.state, done.end_date, done.job_id, done.pid, done.try_number)
    assert log_path.read_bytes() == log_before
    assert len(marks(env, sent.key)) == 1
    assert job_count(env) == jobs_before  # no job row left behind either


def test_failure_with_retries_then_final_failure_and_logs(env: Env, worker: Worker) -> None:
    key = new_run(env, "w_fail")
    first = queue_try(env, key)
    ti = wait_state(env, key, {"up_for_retry"}, worker)
    assert ti.try_number == 1
    assert ti.state_reason is not None and "boom on purpose" in ti.state_reason
    assert ti.end_date is not None and ti.next_retry_at is not None
    delay = (ti.next_retry_at - ti.end_date).total_seconds()
    assert 59 <= delay <= 61, delay
    assert celery_result(env, first.celery_id)["state"] == "up_for_retry"

    queue_try(env, key)  # the retry is due as far as this test is concerned
    ti = wait_state(env, key, {"failed"}, worker)
    assert ti.try_number == 2 and ti.next_retry_at is None
    assert [line.split()[0] for line in marks(env, key)] == ["1", "2"]

    latest = squall_cli(env, "tasks", "logs", "w_fail", "t", key.run_id)
    assert latest.returncode == 0 and "starting try 2" in latest.stdout
    assert "running -> failed" in latest.stdout
    first_log = squall_cli(env, "tasks", "logs", "w_fail", "t", key.run_id, "--try", "1")
    assert "running -> up_for_retry" in first_log.stdout
    missing = squall_cli(env, "tasks", "logs", "w_fail", "t", key.run_id, "--try", "7")
    assert missing.returncode == 1 and "no log for try 7" in missing.stderr
    assert "tries with a log: 1, 2" in missing.stderr


def test_malformed_messages_are_refused_and_the_worker_goes_on(env: Env, worker: Worker) -> None:
    bogus_id = str(uuid.uuid4())
    publish(env, {"bogus": 1}, bogus_id)
    refused = celery_result(env, bogus_id, "refused")
    assert "malformed task-run command" in refused["reason"]

    client = redis.Redis.from_url(env.redis_url)
    try:
        client.lpush(QUEUE, b"\x00not json at all {", b"\xff\xfe", b"[1, 2]",
                     b'{"body": "!!not base64!!", "content-type": "application/json", '
                     b'"properties": {"body_encoding": "base64"}, "headers": {}}')
    finally:
        client.close()

    sent = queue_try(env, new_run(env, "w_ok"))
    wait_state(env, sent.key, {"success"}, worker)
    assert len(marks(env, sent.key)) == 1
    assert worker.process.poll() is None
    log = worker.log()
    assert f"Celery task {bogus_id}: refused: malformed task-run command" in log
    assert log.count("Broker: dropped a message that is not a JSON envelope") == 2
    assert log.count("Broker: dropped a malformed message envelope") == 2


def test_marking_failed_kills_the_task_process_within_two_heartbeats(
        env: Env, worker: Worker) -> None:
    sent = queue_try(env, new_run(env, "w_sleep"))
    ti = wait_state(env, sent.key, {"running"}, worker)
    supervisor = job_row(env, ti.job_id).pid
    wait_until(lambda: ti_row(env, sent.key).pid != supervisor and marks(env, sent.key), 15,
               message="the task process to start")
    task_pid = ti_row(env, sent.key).pid
    assert task_pid is not None and not pid_gone(task_pid)
    beat = job_row(env, ti.job_id).latest_heartbeat
    wait_until(lambda: job_row(env, ti.job_id).latest_heartbeat != beat, 5,
               message="a heartbeat of the job row")

    with session_scope(env.factory) as session:  # "mark failed" from the UI / CLI
        session.execute(update(TaskInstance).where(
            TaskInstance.dag_id == "w_sleep", TaskInstance.run_id == sent.key.run_id)
            .values(state="failed", end_date=utcnow(), state_reason="marked failed by a test"))
    started = time.monotonic()
    wait_until(lambda: pid_gone(task_pid), 2 * HEARTBEAT + 1.0,
               message=f"task process {task_pid} to be killed")
    assert time.monotonic() - started <= 2 * HEARTBEAT + 1.0

    result = celery_result(env, sent.celery_id, "killed")
    assert result["reason"] == "state changed externally to failed"
    after = ti_row(env, sent.key)
    assert (after.state, after.state_reason) == ("failed", "marked failed by a test")
    assert job_row(env, ti.job_id).end_date is not None
    assert f"TaskInstance {sent.key}: state changed externally to failed; killing" in worker.log()
    assert len(marks(env, sent.key)) == 1


def test_sigterm_to_the_supervisor_fails_the_try(env: Env, worker: Worker) -> None:
    sent = queue_try(env, new_run(env, "w_sleep"))
    ti = wait_state(env, sent.key, {"running"}, worker)
    supervisor = job_row(env, ti.job_id).pid
    assert supervisor is not None
    wait_until(lambda: ti_row(env, sent.key).pid != supervisor and marks(env, sent.key), 15,
               message="the task process to start")
    task_pid = ti_row(env, sent.key).pid
    assert task_pid is not None

    os.kill(supervisor, signal.SIGTERM)
    after = wait_state(env, sent.key, {"failed"}, worker, timeout=10)
    assert after.state_reason == "supervisor received SIGTERM"
    wait_until(lambda: pid_gone(task_pid), 10, message="the task process to exit")
    assert celery_result(env, sent.celery_id, "terminated")["state"] == "failed"
    assert job_row(env, ti.job_id).state == JobState.FAILED
    # the supervisor is the pool process: it handled the signal and takes the next command
    assert not pid_gone(supervisor)
    again = queue_try(env, new_run(env, "w_ok"))
    assert wait_state(env, again.key, {"success"}, worker).state == "success"


def test_task_process_that_dies_is_recorded_by_the_supervisor(env: Env, worker: Worker) -> None:
    sent = queue_try(env, new_run(env, "w_crash"))
    ti = wait_state(env, sent.key, {"failed"}, worker)
    assert ti.state_reason == "task process exited with code 3"
    assert len(marks(env, sent.key)) == 1
    result = celery_result(env, sent.celery_id, "task_process_died")
    assert result["exit_code"] == 3


def test_dag_file_broken_on_the_worker_fails_the_try(env: Env, worker: Worker) -> None:
    (env.dags_folder / "broken_dag.py").write_text(BROKEN_ON_WORKER)
    sent = queue_try(env, new_run(env, "w_broken"))
    ti = wait_state(env, sent.key, {"failed"}, worker)
    assert ti.state_reason is not None
    assert str(env.dags_folder / "broken_dag.py") in ti.state_reason
    assert "this DAG file is broken on the worker" in ti.state_reason
    proc = squall_cli(env, "tasks", "logs", "w_broken", "t", sent.key.run_id)
    assert proc.returncode == 0 and "broken on the worker" in proc.stdout


# --------------------------------------------------------------------------- a try's processes


@pytest.mark.parametrize("how", ["set-state", "clear"])
def test_a_try_marked_or_cleared_ends_every_process_it_started(
        env: Env, worker: Worker, how: str) -> None:
    sent, _supervisor, pids = running_tree(env, worker)
    if how == "set-state":
        proc = squall_cli(env, "tasks", "set-state", "w_bash", "t", sent.key.run_id,
                          "--state", "failed")
        assert proc.returncode == 0, proc.stderr
    else:
        proc = squall_cli(env, "tasks", "clear", "w_bash", "--run-id", sent.key.run_id, "-y")
        assert proc.returncode == 0, proc.stderr
    assert_all_gone(pids, time.monotonic(), how)
    result = celery_result(env, sent.celery_id, "killed")
    assert result["reason"].startswith("state changed externally to")
    log = task_log_path(env.settings.log_folder, sent.key, 1).read_text()
    assert "Sending SIGTERM to the process group of the bash command" in log  # on_kill ran


def test_a_cleared_running_try_is_stopped_and_runs_again_once_as_the_next_try(
        env: Env, worker: Worker) -> None:
    sent, _supervisor, pids = running_tree(env, worker)
    first_job = ti_row(env, sent.key).job_id
    proc = squall_cli(env, "tasks", "clear", "w_bash", "-t", "^t$", "--run-id",
                      sent.key.run_id, "-y")
    assert proc.returncode == 0, proc.stderr
    assert "1 running: stopped" in proc.stdout
    assert_all_gone(pids, time.monotonic(), "clear")
    result = celery_result(env, sent.celery_id, "killed")
    assert result["reason"] == "state changed externally to restarting"
    # once its processes are gone the supervisor puts it up for its next try
    ti = wait_state(env, sent.key, {"none"}, worker)
    assert (ti.try_number, ti.max_tries) == (1, 1)
    assert ti.state_reason == "cleared while running: the try was stopped and runs again"
    assert job_row(env, first_job).end_date is not None

    again = queue_try(env, sent.key)  # what the scheduler does with a task instance in none
    assert again.try_number == 2
    ti = wait_state(env, sent.key, {"running"}, worker)
    assert ti.try_number == 2 and ti.job_id != first_job
    path = env.marks / f"w_bash.{sent.key.run_id}.pids"
    wait_until(lambda: path.read_text().count("ready") == 2, 30,
               message="the second try to start its processes")
    second = [int(line) for line in path.read_text().split() if line != "ready"][4:]
    proc = squall_cli(env, "tasks", "set-state", "w_bash", "t", sent.key.run_id,
                      "--state", "failed")
    assert proc.returncode == 0, proc.stderr
    assert_all_gone([ti_row(env, sent.key).pid or second[0], *second], time.monotonic(),
                    "set-state")
    assert path.read_text().count("ready") == 2  # the new try ran once
    assert task_log_path(env.settings.log_folder, sent.key, 2).exists()
    assert ti_row(env, sent.key).try_number == 2


def test_sigterm_to_the_supervisor_ends_every_process_of_the_try(
        env: Env, worker: Worker) -> None:
    sent, supervisor, pids = running_tree(env, worker)
    os.kill(supervisor, signal.SIGTERM)
    assert_all_gone(pids, time.monotonic(), "SIGTERM to the supervisor")
    assert wait_state(env, sent.key, {"failed"}, worker).state_reason == REASON_SIGTERM


def test_a_supervisor_killed_by_sigkill_takes_the_try_with_it(env: Env, worker: Worker) -> None:
    sent, supervisor, pids = running_tree(env, worker)
    os.kill(supervisor, signal.SIGKILL)  # no handler runs: the parent-death signal does it
    assert_all_gone(pids, time.monotonic(), "SIGKILL to the supervisor")
    # the try is left RUNNING for the scheduler to find a zombie; nothing of it still runs
    assert ti_row(env, sent.key).state == "running"
    # the supervisor is the pool process: Celery stores its loss although run_task ignores
    # its result, and the scheduler's fetcher reads it (a try still QUEUED would be failed
    # or retried from it)
    fetcher = BulkStateFetcher(env.app)
    read: dict[str, CeleryTaskState] = {}

    def stored() -> bool:
        read.update(fetcher.get_many([sent.celery_id]))
        return read.get(sent.celery_id, PENDING) != PENDING

    wait_until(stored, 30, message="the Celery failure of the killed pool process")
    state = read[sent.celery_id]
    assert state.state == "FAILURE"
    assert state.info is not None and state.info.startswith("WorkerLostError"), state


def test_a_zombie_try_is_ended_when_its_supervisor_wakes(env: Env, worker: Worker) -> None:
    from squall.common.metrics import LogMetrics
    from squall.scheduler.watchdog import fail_zombies

    sent, supervisor, pids = running_tree(env, worker)
    os.kill(supervisor, signal.SIGSTOP)  # a supervisor that stopped heartbeating
    try:
        with session_scope(env.factory) as session:
            later = utcnow() + timedelta(seconds=400)  # its heartbeat is long stale by then
            assert fail_zombies(session, {}, now=later, threshold=300,
                                metrics=LogMetrics()) >= 1
        assert ti_row(env, sent.key).state == "failed"
    finally:
        os.kill(supervisor, signal.SIGCONT)
    assert_all_gone(pids, time.monotonic(), "the zombie's supervisor woke")
    assert celery_result(env, sent.celery_id, "killed")["reason"] == (
        "state changed externally to failed")


def test_execution_timeout_ends_every_process_of_the_try(env: Env, worker: Worker) -> None:
    sent, _supervisor, pids = running_tree(env, worker, "w_bash_timeout")
    ti = wait_state(env, sent.key, {"failed"}, worker)
    assert ti.state_reason is not None and "execution_timeout" in ti.state_reason
    assert_all_gone(pids, time.monotonic(), "the execution timeout")


def test_what_a_finished_try_left_running_is_ended(env: Env, worker: Worker) -> None:
    sent = queue_try(env, new_run(env, "w_bash_leaves"))
    wait_state(env, sent.key, {"success"}, worker)
    pids = [int(line) for line in (env.marks / f"w_bash_leaves.{sent.key.run_id}.pids")
            .read_text().split()[:-1]]
    assert len(pids) == 4
    assert_all_gone(pids, time.monotonic(), "the try succeeded")
    lines: list[str] = []

    def swept() -> bool:  # logged once the sweep is over: just after the processes end
        lines[:] = [line for line in worker.log().splitlines()
                    if f"TaskInstance {sent.key}: try 1: ended" in line]
        return bool(lines)

    wait_until(swept, 10, message="the supervisor to log its sweep")
    [line] = lines
    assert "the try left running" in line
    named = {int(pid) for pid in line.rsplit(": ", 1)[1].split(", ")}
    assert set(pids[1:]) <= named  # all but the command itself, which had exited


# --------------------------------------------------------------------------- payload rule


@pytest.mark.parametrize("dag_file", ["{outside}", "DAGS_FOLDER/../outside.py"])
def test_a_message_naming_a_file_outside_the_dag_folder_is_refused_unread(
        env: Env, worker: Worker, dag_file: str) -> None:
    outside = env.home / "outside.py"
    imported = env.home / "outside.imported"
    outside.write_text(f"open({str(imported)!r}, 'a').write('imported\\n')\n")
    key = new_run(env, "w_ok")
    message = {"version": 1, "kind": "run_task", "dag_id": key.dag_id,
               "task_id": key.task_id, "run_id": key.run_id, "try_number": 1,
               "dag_file": dag_file.format(outside=outside), "queue": QUEUE}
    celery_id = str(uuid.uuid4())
    publish(env, message, celery_id)
    refused = celery_result(env, celery_id, "refused")
    assert "dag_file" in refused["reason"] and "DAGS_FOLDER/" in refused["reason"]
    sent = queue_try(env, new_run(env, "w_ok"))  # the worker goes on, and behind it ...
    wait_state(env, sent.key, {"success"}, worker)
    assert not imported.exists()
    assert worker.log().count(f"Celery task {celery_id}: refused") == 1  # logged once
    client = redis.Redis.from_url(env.redis_url)
    try:
        assert client.llen(QUEUE) == 0  # ... the refused message was acknowledged
    finally:
        client.close()
    assert ti_row(env, key).state == "none"  # and its task instance untouched


def test_celery_dash_a_form_runs_tasks(env: Env) -> None:
    w2 = start_worker(env, ["-m", "celery", "-A", "squall.worker", "worker", "-Q", "w2_queue",
                            "-c", "1", "-n", "w2@%h", "--loglevel=INFO"], "w2")
    try:
        sent = queue_try(env, new_run(env, "w_ok"), queue="w2_queue")
        ti = wait_state(env, sent.key, {"success"}, w2)
        assert ti.hostname == f"w2@{HOST}"
        assert len(marks(env, sent.key)) == 1
    finally:
        stop_worker(w2)


def test_new_interpreter_mode_runs_tasks(env: Env) -> None:
    w3 = start_worker(env, ["-m", "squall", "celery", "worker", "-q", "w3_queue", "-c", "1",
                            "-n", "w3@%h"], "w3",
                      {"SQUALL__CORE__EXECUTE_TASKS_NEW_PYTHON_INTERPRETER": "true"})
    try:
        sent = queue_try(env, new_run(env, "w_ok"), queue="w3_queue")
        ti = wait_state(env, sent.key, {"success"}, w3)
        assert ti.hostname == f"w3@{HOST}"
        lines = marks(env, sent.key)
        assert len(lines) == 1 and lines[0].endswith("tasks run"), lines
        assert "(new interpreter)" in w3.log()
        # what the task and its subprocess wrote: in the try's log, on the console only
        # as log lines
        log = squall_cli(env, "tasks", "logs", "w_ok", "t", sent.key.run_id).stdout
        assert "{squall.task} INFO - ok printed\n" in log, log
        assert "{squall.task} INFO - ok echoed\n" in log, log
        assert "\nok printed" not in w3.log() and "\nok echoed" not in w3.log()
        # the interpreter recorded its own outcome: the supervisor reports it, no failure
        result = celery_result(env, sent.celery_id)
        assert (result["status"], result["state"]) == ("completed", "success"), result
        assert ti.job_id is not None
        wait_until(lambda: job_row(env, ti.job_id).state == JobState.SUCCESS, 10,
                   message="the job row to finish as success")
    finally:
        stop_worker(w3)


def test_cold_shutdown_of_the_worker_fails_the_running_try(env: Env) -> None:
    w4 = start_worker(env, ["-m", "squall", "celery", "worker", "-q", "w4_queue", "-c", "1",
                            "-n", "w4@%h"], "w4")
    try:
        sent = queue_try(env, new_run(env, "w_bash"), queue="w4_queue")
        ti = wait_state(env, sent.key, {"running"}, w4)
        supervisor = job_row(env, ti.job_id).pid
        pids = tree_pids(env, sent.key)
        task_pid = ti_row(env, sent.key).pid
        assert task_pid is not None and task_pid != supervisor

        w4.process.send_signal(signal.SIGQUIT)  # Celery's cold shutdown
        after = wait_state(env, sent.key, {"failed"}, w4, timeout=15)
        assert after.state_reason == "supervisor received SIGTERM"
        assert_all_gone([task_pid, *pids], time.monotonic(), "the cold shutdown")
        w4.process.wait(15)
    finally:
        stop_worker(w4)


def test_flower_shows_workers_and_tasks(env: Env, worker: Worker) -> None:
    import json
    import urllib.request

    from tests.support.services import free_port

    port = free_port()
    log_path = env.home / "flower.log"
    with log_path.open("wb") as out:
        flower = subprocess.Popen(
            [sys.executable, "-m", "squall", "celery", "flower", "--port", str(port)],
            env=env.environ, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT)

    def get(path: str) -> Any:
        assert flower.poll() is None, log_path.read_text(errors="replace")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                return json.loads(resp.read())
        except OSError:
            return None

    try:
        wait_until(lambda: worker.name in (get("/api/workers?refresh=1") or {}), 30,
                   interval=0.5, message="Flower to list the worker")
        sent = queue_try(env, new_run(env, "w_ok"))
        wait_state(env, sent.key, {"success"}, worker)
        wait_until(lambda: (get("/api/tasks") or {}).get(sent.celery_id, {})
                   .get("state") == "SUCCESS", 15, interval=0.3,
                   message="Flower to show the task")
    finally:
        _stop(flower)


def test_flower_with_basic_auth_asks_for_it_on_metrics_too(env: Env) -> None:
    import base64
    import urllib.error
    import urllib.request

    from tests.support.services import free_port

    port = free_port()
    log_path = env.home / "flower-auth.log"
    user, password = "watcher", "s3cret-metrics"
    with log_path.open("wb") as out:
        flower = subprocess.Popen(
            [sys.executable, "-m", "squall", "celery", "flower", "--port", str(port)],
            env={**env.environ, "FLOWER_BASIC_AUTH": f"{user}:{password}"}, cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    def status(path: str, auth: tuple[str, str] | None = None) -> int | None:
        assert flower.poll() is None, log_path.read_text(errors="replace")
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return None  # not listening yet

    try:
        wait_until(lambda: status("/healthcheck") == 200, 30, interval=0.3,
                   message="Flower to answer /healthcheck (which asks for no login)")
        assert status("/metrics") == 401
        assert status("/metrics", (user, "wrong")) == 401
        assert status("/metrics", (user, password)) == 200
        assert status("/api/workers") == 401  # as Flower's own API does
    finally:
        _stop(flower)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate ``process``; kill it when it has not exited 10 s later."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
