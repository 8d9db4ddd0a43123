"""An idle worker's pool processes share the heap of the worker they were forked from.

The worker parent freezes its heap (``gc.freeze()``) before it forks each pool process, so
no collection, in the parent or in a pool process, walks the inherited objects and writes
to their pages. Without that, each pool process copied most of its heap within seconds
(about 50 of its 85 MiB of anonymous memory became private: walking every object to find
the engines it inherited wrote to all of them). Checked on a real worker
(Redis broker, PostgreSQL database) at rest, from the kernel's accounting of its pages."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import Engine

from squall.common.celery_app import create_celery_app
from squall.common.settings import Settings
from tests.support.services import RedisServer, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
CONCURRENCY = 2


def smaps_rollup(pid: int) -> dict[str, int]:
    """The kB figures of ``/proc/PID/smaps_rollup``."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1])
    return fields


def children(pid: int) -> list[int]:
    found: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return found


@pytest.fixture
def worker(tmp_path: Path, _pg_engine: Engine, redis_server: RedisServer) -> Iterator[int]:
    """A ``squall celery worker -c 2`` at rest; yields its pid."""
    db_url = _pg_engine.url.render_as_string(hide_password=False)
    (tmp_path / "dags").mkdir()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL")}
    environ.update({
        "SQUALL_HOME": str(tmp_path),
        "SQUALL__DATABASE__SQL_ALCHEMY_CONN": db_url,
        "SQUALL__CELERY__BROKER_URL": redis_server.db_url(0),
        "SQUALL__CELERY__RESULT_BACKEND": redis_server.db_url(1),
        "SQUALL__CORE__DAGS_FOLDER": str(tmp_path / "dags"),
        "PYTHONPATH": os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    })
    name = f"memory@{socket.gethostname()}"
    app: Celery = create_celery_app(Settings.load(env=environ))
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "squall", "celery", "worker", "-q", "memory_test",
             "-c", str(CONCURRENCY), "-n", name],
            env=environ, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT)
    try:
        def ready() -> bool:
            assert process.poll() is None, log_path.read_text(errors="replace")
            # a connection of its own: kombu's pools are process-wide, and a pooled one
            # may date from before a test restarted the session's redis-server
            with app.connection_for_write() as conn:
                replies = app.control.ping(timeout=0.5, connection=conn)
            return any(name in reply for reply in replies)

        wait_until(ready, 60, interval=0.2, message="the worker to answer a ping")
        wait_until(lambda: len(children(process.pid)) >= CONCURRENCY, 30,
                   message="the pool processes")
        yield process.pid
    finally:
        app.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_idle_pool_processes_keep_sharing_the_workers_heap(worker: int) -> None:
    pool = children(worker)
    assert len(pool) >= CONCURRENCY
    for pid in pool:
        rollup = smaps_rollup(pid)
        anonymous, private = rollup["Anonymous"], rollup["Private_Dirty"]
        assert anonymous > 20_000, rollup  # a real Python worker, tens of MiB
        # before the freeze about 60 % of it was private; with it about 15 %
        assert private < 0.35 * anonymous, (pid, rollup)
