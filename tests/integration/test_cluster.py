"""The executor cluster end to end: real scheduler and Celery worker processes, started the
way users start them, on Redis + PostgreSQL and on the embedded default (SQLite + embedded
broker). Executions are counted with a side effect each task writes, not with log lines."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _pg_clean
from tests.integration.test_examples import EXPECTED
from tests.support.cluster import REPO_ROOT, Cluster
from tests.support.services import RedisServer, free_port, wait_until

pytestmark = pytest.mark.integration

FANOUT_DAG = '''
import os
import pendulum
from squall import DAG, PythonOperator

LOG = os.environ["SQUALL_TEST_EXEC_LOG"]

def record(ti):
    with open(LOG, "a") as f:
        f.write(f"{ti.task_id} {ti.run_id} {ti.try_number}\\n")

with DAG("fanout", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    start = PythonOperator(task_id="start", python_callable=record)
    end = PythonOperator(task_id="end", python_callable=record)
    middle = [PythonOperator(task_id=f"t{i}", python_callable=record) for i in range(WIDTH)]
    start >> middle >> end
'''

ROUTING_DAG = '''
import pendulum
from squall import DAG, EmptyOperator

with DAG("routing", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    for i in range(4):
        EmptyOperator(task_id=f"a{i}", queue="qa")
        EmptyOperator(task_id=f"b{i}", queue="qb")
'''

RETRY_DAG = '''
from datetime import timedelta
import pendulum
from squall import DAG, PythonOperator

def flaky(ti):
    if ti.try_number < 3:
        raise RuntimeError(f"try {ti.try_number} fails on purpose")

with DAG("retry_twice", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    PythonOperator(task_id="flaky", python_callable=flaky, retries=2,
                   retry_delay=timedelta(seconds=0.5))
'''


def write_fanout(cluster: Cluster, width: int) -> Path:
    (cluster.dags_folder / "fanout.py").write_text(FANOUT_DAG.replace("WIDTH", str(width)))
    exec_log = cluster.home / "executions.log"
    cluster.extra_env["SQUALL_TEST_EXEC_LOG"] = str(exec_log)
    return exec_log


def executions(exec_log: Path) -> Counter[tuple[str, str, str]]:
    if not exec_log.exists():
        return Counter()
    return Counter(tuple(line.split()) for line in exec_log.read_text().splitlines())  # type: ignore[misc]


def make_cluster(request: pytest.FixtureRequest, kind: str, home: Path) -> Cluster:
    if kind == "redis-pg":
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        redis_server.flushall()
        engine = request.getfixturevalue("_pg_engine")
        _pg_clean(engine)
        pg_url = engine.url.render_as_string(hide_password=False)
        return Cluster(home=home, db_url=pg_url, broker_url=redis_server.db_url(0),
                       result_backend=redis_server.db_url(1))
    # the embedded default: SQLite and no broker or result backend configured
    return Cluster(home=home, db_url=f"sqlite:///{home / 'squall.db'}", broker_url="",
                   result_backend="")


@pytest.fixture(params=["redis-pg", "standalone"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """A cluster on Redis + PostgreSQL, and on the embedded default."""
    c = make_cluster(request, request.param, tmp_path / "home")
    yield c
    c.stop_all()


@pytest.fixture
def pg_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """A cluster on Redis + PostgreSQL only (several schedulers, Flower, raw Redis)."""
    c = make_cluster(request, "redis-pg", tmp_path / "home")
    yield c
    c.stop_all()


def test_fanout_fanin_runs_each_task_once(cluster: Cluster) -> None:
    exec_log = write_fanout(cluster, 20)
    cluster.cli("db", "migrate")
    cluster.start_scheduler()
    cluster.start_worker(concurrency=4)
    run_id = cluster.trigger("fanout")
    assert cluster.wait_for_run("fanout", run_id) == "success", cluster.logs()
    tis = cluster.task_instances("fanout", run_id)
    assert len(tis) == 22
    assert {(t.state, t.try_number) for t in tis.values()} == {("success", 1)}
    assert all(t.hostname and t.hostname.startswith("w1@") for t in tis.values())
    counts = executions(exec_log)
    assert sum(counts.values()) == 22 and set(counts.values()) == {1}


@pytest.mark.parametrize("dag_ids", [sorted(EXPECTED)])
def test_example_dags_through_the_cluster(cluster: Cluster, dag_ids: list[str]) -> None:
    cluster.load_examples = True
    cluster.cli("db", "migrate")
    cluster.start_scheduler()
    cluster.start_worker(concurrency=4)
    runs = {dag_id: cluster.trigger(dag_id) for dag_id in dag_ids}
    for dag_id, run_id in runs.items():
        want_state, tasks = EXPECTED[dag_id]
        assert cluster.wait_for_run(dag_id, run_id, timeout=120) == want_state, dag_id
        got = cluster.task_instances(dag_id, run_id)
        for task_id, want in tasks.items():
            state, tries = want if isinstance(want, tuple) else (want, None)
            assert got[task_id].state == state, (dag_id, task_id, got[task_id].state_reason)
            if tries is not None:
                assert got[task_id].try_number == tries, (dag_id, task_id)


def test_queue_routing(cluster: Cluster) -> None:
    (cluster.dags_folder / "routing.py").write_text(ROUTING_DAG)
    cluster.cli("db", "migrate")
    cluster.start_scheduler()
    cluster.start_worker("wa", queues="qa")
    cluster.start_worker("wb", queues="qb")
    run_id = cluster.trigger("routing")
    assert cluster.wait_for_run("routing", run_id) == "success", cluster.logs()
    for task_id, ti in cluster.task_instances("routing", run_id).items():
        assert ti.queue == f"q{task_id[0]}"
        assert ti.hostname is not None and ti.hostname.startswith(f"w{task_id[0]}@"), (
            task_id, ti.hostname)


def test_retries_then_success(cluster: Cluster) -> None:
    (cluster.dags_folder / "retry.py").write_text(RETRY_DAG)
    cluster.cli("db", "migrate")
    cluster.start_scheduler()
    cluster.start_worker()
    run_id = cluster.trigger("retry_twice")
    assert cluster.wait_for_run("retry_twice", run_id) == "success", cluster.logs()
    ti = cluster.task_instances("retry_twice", run_id)["flaky"]
    assert (ti.state, ti.try_number) == ("success", 3)
    for attempt in (1, 2, 3):
        log = cluster.cli("tasks", "logs", "retry_twice", "flaky", run_id, "--try",
                          str(attempt)).stdout
        assert ("fails on purpose" in log) == (attempt < 3), (attempt, log)


def test_cli_state_commands(cluster: Cluster) -> None:
    (cluster.dags_folder / "retry.py").write_text(RETRY_DAG)
    cluster.cli("db", "migrate")
    cluster.start_scheduler()
    cluster.start_worker()
    run_id = cluster.trigger("retry_twice", "--conf", '{"x": 1}')
    cluster.wait_for_run("retry_twice", run_id)
    assert cluster.cli("dags", "state", "retry_twice", run_id).stdout.strip() == "success"
    assert cluster.cli("tasks", "state", "retry_twice", "flaky", run_id).stdout.strip() == (
        "success")
    rows = cluster.cli_json("tasks", "states-for-dag-run", "retry_twice", run_id)
    assert [(r["task_id"], r["state"], r["try_number"]) for r in rows] == [
        ("flaky", "success", 3)]
    bad = cluster.cli("dags", "state", "retry_twice", "no_such_run", check=False)
    assert bad.returncode == 1 and "no_such_run" in bad.stderr


def test_two_schedulers_queue_and_run_each_task_once(pg_cluster: Cluster) -> None:
    cluster = pg_cluster
    exec_log = write_fanout(cluster, 40)
    cluster.cli("db", "migrate")
    cluster.start_scheduler("scheduler1")
    cluster.start_scheduler("scheduler2")
    cluster.start_worker(concurrency=4)
    run_ids = [cluster.trigger("fanout", "--run-id", f"two_{i}") for i in range(3)]
    for run_id in run_ids:
        assert cluster.wait_for_run("fanout", run_id, timeout=120) == "success", cluster.logs()
        tis = cluster.task_instances("fanout", run_id)
        assert {(t.state, t.try_number) for t in tis.values()} == {("success", 1)}
    counts = executions(exec_log)
    assert sum(counts.values()) == 3 * 42 and set(counts.values()) == {1}
    queued_by = {t.queued_by_job_id for r in run_ids
                 for t in cluster.task_instances("fanout", r).values()}
    assert len(queued_by) >= 1


def test_malformed_messages_are_refused_and_worker_keeps_serving(pg_cluster: Cluster) -> None:
    cluster = pg_cluster
    import redis as redis_lib
    from celery import Celery

    exec_log = write_fanout(cluster, 2)
    cluster.cli("db", "migrate")
    worker = cluster.start_worker()
    # a well-formed Celery message for our task with a bogus payload, and raw garbage
    app = Celery(broker=cluster.broker_url, set_as_current=False)
    app.send_task("squall.run_task", args=[{"bogus": 1}], queue="default")
    app.send_task("squall.run_task", args=["not even a dict"], queue="default")
    client = redis_lib.Redis.from_url(cluster.broker_url)
    client.lpush("default", b"\x00\x01 definitely not json")
    wait_until(lambda: worker.log_path.read_text(errors="replace").count("refused") >= 2, 30,
               message="the worker to refuse both bogus payloads")
    cluster.start_scheduler()
    run_id = cluster.trigger("fanout")
    assert cluster.wait_for_run("fanout", run_id) == "success", cluster.logs()
    assert sum(executions(exec_log).values()) == 4
    assert worker.process.poll() is None


def test_flower_lists_workers_and_tasks(pg_cluster: Cluster) -> None:
    cluster = pg_cluster
    exec_log = write_fanout(cluster, 3)
    cluster.cli("db", "migrate")
    port = free_port()
    flower = cluster.start("flower", ["celery", "flower", "--port", str(port)])
    cluster.start_scheduler()
    cluster.start_worker()
    run_id = cluster.trigger("fanout")
    assert cluster.wait_for_run("fanout", run_id) == "success", cluster.logs()
    assert sum(executions(exec_log).values()) == 5

    def get(path: str) -> dict[str, Any]:
        assert flower.process.poll() is None, cluster.logs("flower")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                data = json.loads(resp.read())
        except OSError:
            return {}
        assert isinstance(data, dict)
        return data

    def workers_listed() -> bool:
        return any(name.startswith("w1@") for name in get("/api/workers?refresh=1"))

    wait_until(workers_listed, 60, interval=0.5, message="flower to list the worker")
    ids = {t.external_executor_id for t in cluster.task_instances("fanout", run_id).values()}

    def tasks_done() -> bool:
        tasks = get("/api/tasks")
        return ids <= set(tasks) and all(tasks[i]["state"] == "SUCCESS" for i in ids)

    wait_until(tasks_done, 60, interval=0.5, message="flower to show every task SUCCESS")
    assert flower.process.poll() is None


def test_standalone_runs_an_example_from_an_empty_home(tmp_path: Path) -> None:
    home = tmp_path / "squall_home"
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("SQUALL")}
    env.update({"SQUALL_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)})
    log_path = tmp_path / "standalone.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "squall", "standalone", "--trigger",
                                 "example_python_operator"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: b"Press Ctrl-C" in log_path.read_bytes() or proc.poll() is not None,
                   60, message="standalone to start")
        assert proc.poll() is None, log_path.read_text()

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "squall", *args], env=env,
                                  capture_output=True, text=True, timeout=60, check=False)

        # its triggerer heartbeats too (deferred tasks wait there)
        wait_until(lambda: cli("jobs", "check", "--job-type", "triggerer", "--local")
                   .returncode == 0, 60, interval=0.5, message="standalone's triggerer")
        # the examples start paused ([core] dags_are_paused_at_creation), as in Airflow
        assert cli("dags", "unpause", "example_taskflow").returncode == 0
        trig = cli("dags", "trigger", "example_taskflow", "--run-id", "from_test")
        assert trig.returncode == 0, trig.stderr
        try:
            wait_until(lambda: cli("dags", "state", "example_taskflow", "from_test")
                       .stdout.strip() in ("success", "failed"), 120, interval=0.5,
                       message="example_taskflow to finish under standalone")
        except AssertionError:
            states = cli("tasks", "states-for-dag-run", "example_taskflow", "from_test").stdout
            raise AssertionError(f"{states}\n{log_path.read_text()[-6000:]}") from None
        assert cli("dags", "state", "example_taskflow", "from_test").stdout.strip() == "success"
        states = json.loads(cli("tasks", "states-for-dag-run", "example_taskflow",
                                "from_test", "-o", "json").stdout)
        assert {r["task_id"]: r["state"] for r in states} == {
            "extract": "success", "transform": "success", "load": "success"}
        # the run standalone triggered itself is reported when it finishes
        wait_until(lambda: b"DagRun example_python_operator" in log_path.read_bytes(), 60,
                   interval=0.2, message="standalone to report its triggered run")
        report = log_path.read_text()
        assert "DagRun example_python_operator" in report and ": success" in report, report
        assert "  consume: success (try 1)" in report, report
        assert (home / "squall.toml").is_file()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log_path.read_text()


def test_rabbitmq_broker(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The same pipeline with RabbitMQ as the broker (the machine's server, on a queue name
    of this test's own) and Redis as the result backend."""
    import uuid

    from tests.conftest import require_service

    require_service("RabbitMQ", "127.0.0.1", 5672)
    redis_server: RedisServer = request.getfixturevalue("redis_server")
    redis_server.flushall()
    engine = request.getfixturevalue("_pg_engine")
    _pg_clean(engine)
    queue = f"squall_test_{uuid.uuid4().hex[:12]}"
    cluster = Cluster(home=tmp_path / "home",
                      db_url=engine.url.render_as_string(hide_password=False),
                      broker_url="amqp://guest:guest@127.0.0.1:5672//",
                      result_backend=redis_server.db_url(1),
                      extra_env={"SQUALL__CELERY__DEFAULT_QUEUE": queue})
    try:
        exec_log = write_fanout(cluster, 5)
        cluster.cli("db", "migrate")
        cluster.start_scheduler()
        cluster.start_worker(queues=queue)
        run_id = cluster.trigger("fanout")
        assert cluster.wait_for_run("fanout", run_id) == "success", cluster.logs()
        tis = cluster.task_instances("fanout", run_id)
        assert {(t.state, t.try_number, t.queue) for t in tis.values()} == {
            ("success", 1, queue)}
        assert sum(executions(exec_log).values()) == 7
    finally:
        cluster.stop_all()
