"""Fixtures of the fault-injection suite: clusters of real processes with small timeouts,
private services a test may break, and the DAG every scenario runs.

Every task of :data:`FAULT_DAG` appends ``task_id run_id try_number pid`` to the file named
by ``SQUALL_TEST_EXEC_LOG`` when its try starts executing: that file, not a log line, is how
the tests count executions.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import _pg_clean, in_ci
from tests.support.cluster import Cluster, Proc
from tests.support.faults import PrivatePostgres, settings_env
from tests.support.services import RedisServer

#: Small settings, so every fault is detected and recovered within seconds.
FAST: dict[str, dict[str, object]] = {
    "scheduler": {
        "job_heartbeat_sec": 0.5,
        "scheduler_heartbeat_sec": 0.5,
        "zombie_threshold": 3,
        "zombie_detection_interval": 1,
        "task_queued_timeout": 10,
        "scheduler_health_check_threshold": 3,
        "min_file_process_interval": 2,
        "dag_dir_list_interval": 2,
    },
    "celery": {
        "operation_timeout": 0.5,
        "task_publish_max_retries": 2,
        "task_adoption_timeout": 5,
    },
}

FAULT_DAG = '''
import logging
import os
import time
from datetime import timedelta

import pendulum
from squall import DAG, PythonOperator

LOG = os.environ["SQUALL_TEST_EXEC_LOG"]
if os.environ.get("SQUALL_TEST_BREAK_IMPORT"):
    raise ImportError("DAG file made unimportable on this worker (SQUALL_TEST_BREAK_IMPORT)")


def work(ti):
    with open(LOG, "a") as f:
        f.write(f"{ti.task_id} {ti.run_id} {ti.try_number} {os.getpid()}\\n")
    logging.getLogger("fault_dag").warning("executing %s try %d in pid %d", ti.task_id,
                                           ti.try_number, os.getpid())
    time.sleep(SLEEP_FIRST if ti.try_number == 1 else SLEEP_LATER)
    logging.getLogger("fault_dag").warning("done %s try %d", ti.task_id, ti.try_number)


with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         default_args={"retries": RETRIES, "retry_delay": timedelta(seconds=0.2)}):
    tasks = [PythonOperator(task_id=f"t{i}", python_callable=work) for i in range(WIDTH)]
    if CHAIN:
        for up, down in zip(tasks, tasks[1:]):
            up >> down
'''


def write_dag(cluster: Cluster, dag_id: str = "faulty", *, width: int = 1,
              sleep_first: float = 0.0, sleep_later: float = 0.0, retries: int = 1,
              chain: bool = False) -> Path:
    """Write :data:`FAULT_DAG` into the cluster's DAG folder; returns the execution log."""
    text = (FAULT_DAG.replace("DAG_ID", repr(dag_id)).replace("WIDTH", str(width))
            .replace("SLEEP_FIRST", repr(sleep_first)).replace("SLEEP_LATER", repr(sleep_later))
            .replace("RETRIES", str(retries)).replace("CHAIN", str(chain)))
    (cluster.dags_folder / f"{dag_id}.py").write_text(text)
    exec_log = cluster.home / "executions.log"
    cluster.extra_env["SQUALL_TEST_EXEC_LOG"] = str(exec_log)
    return exec_log


@contextmanager
def process_env(cluster: Cluster, **env: str) -> Iterator[None]:
    """Extra environment for the processes started inside the block only."""
    saved = dict(cluster.extra_env)
    cluster.extra_env.update(env)
    try:
        yield
    finally:
        cluster.extra_env.clear()
        cluster.extra_env.update(saved)


def start_with_env(cluster: Cluster, start: Callable[[], Proc], **env: str) -> Proc:
    with process_env(cluster, **env):
        return start()


#: what :class:`Cluster` sets to speed up heartbeats and the scheduler loop; a cluster at the
#: default settings leaves them out (the DAG parse intervals stay short: they only matter
#: before the first run)
TIMING_ENV = frozenset({"SQUALL__SCHEDULER__JOB_HEARTBEAT_SEC",
                        "SQUALL__SCHEDULER__SCHEDULER_HEARTBEAT_SEC",
                        "SQUALL__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"})


def fast_env(overrides: dict[str, dict[str, object]] | None = None) -> dict[str, str]:
    values = {section: dict(keys) for section, keys in FAST.items()}
    for section, keys in (overrides or {}).items():
        values.setdefault(section, {}).update(keys)
    return settings_env(values)


def new_cluster(home: Path, db_url: str, broker_url: str, result_backend: str,
                overrides: dict[str, dict[str, object]] | None = None, *,
                defaults: bool = False) -> Cluster:
    """With :data:`FAST` and ``overrides``; ``defaults``: with ``overrides`` only, and
    without :data:`TIMING_ENV` (heartbeats, thresholds and the lease at their defaults)."""
    if defaults:
        return Cluster(home=home, db_url=db_url, broker_url=broker_url,
                       result_backend=result_backend, extra_env=settings_env(overrides or {}),
                       unset_env=TIMING_ENV)
    return Cluster(home=home, db_url=db_url, broker_url=broker_url,
                   result_backend=result_backend, extra_env=fast_env(overrides))


def redis_pg_cluster(request: pytest.FixtureRequest, home: Path,
                     overrides: dict[str, dict[str, object]] | None = None, *,
                     defaults: bool = False) -> Cluster:
    """Private Redis (flushed) + the session PostgreSQL test database (cleaned)."""
    redis_server: RedisServer = request.getfixturevalue("redis_server")
    redis_server.flushall()
    engine = request.getfixturevalue("_pg_engine")
    _pg_clean(engine)
    return new_cluster(home, engine.url.render_as_string(hide_password=False),
                       redis_server.db_url(0), redis_server.db_url(1), overrides,
                       defaults=defaults)


def standalone_cluster(home: Path,
                       overrides: dict[str, dict[str, object]] | None = None, *,
                       defaults: bool = False) -> Cluster:
    """The embedded default: SQLite and the embedded broker and result backend."""
    return new_cluster(home, f"sqlite:///{home / 'squall.db'}", "", "", overrides,
                       defaults=defaults)


def make_cluster(request: pytest.FixtureRequest, kind: str, home: Path,
                 overrides: dict[str, dict[str, object]] | None = None, *,
                 defaults: bool = False) -> Cluster:
    if kind == "redis-pg":
        return redis_pg_cluster(request, home, overrides, defaults=defaults)
    return standalone_cluster(home, overrides, defaults=defaults)


@pytest.fixture
def cluster_factory(request: pytest.FixtureRequest, tmp_path: Path
                    ) -> Iterator[Callable[..., Cluster]]:
    """``cluster_factory(kind, overrides=None, defaults=False)``: a cluster (see
    :func:`new_cluster`) stopped at teardown."""
    made: list[Cluster] = []

    def make(kind: str, overrides: dict[str, dict[str, object]] | None = None, *,
             defaults: bool = False) -> Cluster:
        cluster = make_cluster(request, kind, tmp_path / f"home{len(made)}", overrides,
                               defaults=defaults)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        fast_stop_all(cluster)


@pytest.fixture(scope="session")
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster this session owns and may restart (initdb + pg_ctl)."""
    try:
        server = PrivatePostgres()
        server.start()
    except (RuntimeError, OSError, KeyError) as exc:
        message = f"cannot run a private PostgreSQL cluster: {exc}"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    yield server
    server.destroy()


def fast_stop_all(cluster: Cluster) -> None:
    """Teardown: SIGKILL every process group the cluster started (no test here is about a
    clean shutdown at teardown, and waiting for one costs seconds a test)."""
    for proc in cluster.procs:
        proc.stopped = True
        try:
            os.killpg(proc.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for proc in cluster.procs:
        proc.process.wait(10)
    if cluster._factory is not None:
        cluster._factory.kw["bind"].dispose()


def prepare_db(cluster: Cluster, kind: str) -> None:
    """Migrate the metadata database unless it is the session's (already migrated)."""
    if kind != "redis-pg":
        cluster.cli("db", "migrate")


def trigger(cluster: Cluster, dag_id: str, run_id: str = "fault") -> str:
    """``squall dags trigger DAG --run-id RUN`` (one CLI call, not two)."""
    cluster.cli("dags", "trigger", dag_id, "--run-id", run_id)
    return run_id
