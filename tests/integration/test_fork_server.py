"""The fork server (``[celery] worker_fork_server``, ADR 21) under a real Celery worker.

A worker of its own (``-c 1``, the setting on explicitly) on a queue of its own, with the DAG
files, database and broker of ``test_worker.py``'s environment: the task process's parent is
the server (a child of the pool process), a SIGKILLed server fails the running try with a
reason and the next try gets a new server, and the pool process's death still ends the task
process.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_worker import (  # noqa: F401 (env: a fixture)
    HOST,
    KILL_BOUND,
    Env,
    Worker,
    alive,
    celery_result,
    env,
    job_row,
    marks,
    new_run,
    queue_try,
    start_worker,
    stop_worker,
    ti_row,
    wait_state,
)
from tests.support.services import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

QUEUE = "fork_server_tests"


def ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2:].split()[1])


@pytest.fixture(scope="module")
def fs_worker(env: Env) -> Iterator[Worker]:  # noqa: F811
    w = start_worker(env, ["-m", "squall", "celery", "worker", "-q", QUEUE, "-c", "1",
                           "-n", "fs@%h"], "fs",
                     {"SQUALL__CELERY__WORKER_FORK_SERVER": "true"})
    yield w
    stop_worker(w)


def running_sleepy(env: Env, worker: Worker) -> tuple[int, int, int, object]:  # noqa: F811
    """A running ``w_sleep`` try: (pool process, fork server, task process, sent)."""
    sent = queue_try(env, new_run(env, "w_sleep"), queue=QUEUE)
    ti = wait_state(env, sent.key, {"running"}, worker)
    pool = job_row(env, ti.job_id).pid
    assert pool is not None
    wait_until(lambda: bool(marks(env, sent.key)), 15, message="the task to start")
    task = ti_row(env, sent.key).pid
    assert task is not None and alive(task)
    return pool, ppid(task), task, sent


def test_the_task_process_is_forked_by_the_server_and_its_outcome_recorded(
        env: Env, fs_worker: Worker) -> None:  # noqa: F811
    sent = queue_try(env, new_run(env, "w_ok"), queue=QUEUE)
    ti = wait_state(env, sent.key, {"success"}, fs_worker)
    assert ti.hostname == f"fs@{HOST}"
    assert len(marks(env, sent.key)) == 1

    pool, server, task, sleepy = running_sleepy(env, fs_worker)
    assert server != pool and ppid(server) == pool  # pool process -> server -> task process
    os.kill(task, signal.SIGKILL)
    after = wait_state(env, sleepy.key, {"failed"}, fs_worker)  # type: ignore[attr-defined]
    assert after.state_reason == "task process exited with signal SIGKILL"
    assert alive(server)  # the server is not the try's: the sweep leaves it


def test_a_killed_server_fails_the_try_and_the_next_try_gets_a_new_one(
        env: Env, fs_worker: Worker) -> None:  # noqa: F811
    pool, server, task, sent = running_sleepy(env, fs_worker)
    assert ppid(server) == pool
    os.kill(server, signal.SIGKILL)
    after = wait_state(env, sent.key, {"failed"}, fs_worker)  # type: ignore[attr-defined]
    assert after.state_reason is not None and "fork server died" in after.state_reason
    wait_until(lambda: not alive(task), 10, message="the task process to end")
    result = celery_result(env, sent.celery_id, "task_process_died")  # type: ignore[attr-defined]
    assert result["pid"] == task

    again = queue_try(env, new_run(env, "w_ok"), queue=QUEUE)
    assert wait_state(env, again.key, {"success"}, fs_worker).state == "success"
    _pool, new_server, _task, last = running_sleepy(env, fs_worker)
    assert new_server not in (server, pool) and ppid(new_server) == pool
    os.kill(_task, signal.SIGKILL)
    wait_state(env, last.key, {"failed"}, fs_worker)  # type: ignore[attr-defined]


def test_the_pool_process_death_ends_the_server_and_the_task_process(
        env: Env) -> None:  # noqa: F811
    w = start_worker(env, ["-m", "squall", "celery", "worker", "-q", QUEUE + "_kill", "-c",
                           "1", "-n", "fskill@%h"], "fskill",
                     {"SQUALL__CELERY__WORKER_FORK_SERVER": "true"})
    try:
        sent = queue_try(env, new_run(env, "w_sleep"), queue=QUEUE + "_kill")
        ti = wait_state(env, sent.key, {"running"}, w)
        pool = job_row(env, ti.job_id).pid
        assert pool is not None
        wait_until(lambda: bool(marks(env, sent.key)), 15, message="the task to start")
        task = ti_row(env, sent.key).pid
        assert task is not None
        server = ppid(task)
        assert ppid(server) == pool
        since = time.monotonic()
        os.kill(pool, signal.SIGKILL)
        wait_until(lambda: not alive(task) and not alive(server), 30, interval=0.02,
                   message="the server and the task process to end with the pool process")
        assert time.monotonic() - since <= KILL_BOUND
    finally:
        stop_worker(w)
