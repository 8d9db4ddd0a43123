"""Faults of ``squall triggerer`` (real processes on PostgreSQL): a triggerer SIGKILLed while
it holds deferred task instances' triggers, one cut off from the database, a trigger that
raises, one that ends without an event, one that blocks the event loop; and, through a
whole cluster (scheduler, Celery worker, two triggerers), the holder of deferred tasks
SIGKILLed: each task resumes on the worker once.

Settings: ``[triggerer] job_heartbeat_sec`` 0.5 s, ``triggerer_health_check_threshold`` 3 s
(the take-over bound), so the lease is 1.75 s (``squall/common/lease_terms.py``). Every test
trigger appends ``kind tag pid time`` to a record file when its ``run()`` starts, when it
fires and when its ``cleanup()`` runs (``tests/support/triggers.py``): that file is how
runs and firings are counted.

Airflow's rules: a failed trigger (raised, or ended without an event) sends its task
instances back to SCHEDULED with ``next_method="__fail__"`` (``Trigger.submit_failure``,
``TriggerRunner.cleanup_finished_triggers``); a blocked loop is reported and the others go
on (``TriggerRunner.block_watchdog``).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from squall.common.db import session_scope
from squall.common.models import Job, TaskInstance, Trigger
from squall.common.state import TaskInstanceState
from squall.runs.jobs import TRIGGERER_JOB_TYPE
from squall.sdk.triggers import serde
from tests.conftest import _pg_clean
from tests.faults.conftest import fast_stop_all
from tests.support.cluster import Cluster, Proc
from tests.support.faults import TcpProxy, settings_env
from tests.support.services import free_port, wait_until
from tests.support.triggers import (
    BlockingTrigger,
    Deferred,
    FileTrigger,
    NoEventTrigger,
    RaisingTrigger,
    SleepTrigger,
    defer,
    read_records,
    records,
)

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

HEARTBEAT = 0.5
TAKE_OVER = 3.0
LEASE = 1.75  # TAKE_OVER - (max(2 x HEARTBEAT, TAKE_OVER / 10) + min(5, HEARTBEAT / 2))
FAST = {"triggerer": {"job_heartbeat_sec": HEARTBEAT,
                      "triggerer_health_check_threshold": TAKE_OVER}}


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    engine = request.getfixturevalue("_pg_engine")
    _pg_clean(engine)
    made = Cluster(home=tmp_path / "home", db_url=engine.url.render_as_string(
        hide_password=False), broker_url="memory://", result_backend="cache+memory://",
        extra_env=settings_env(FAST))
    yield made
    fast_stop_all(made)


def _defer(cluster: Cluster, make: Callable[[int], object], n: int,
           prefix: str = "t") -> list[Deferred]:
    with session_scope(cluster.session_factory) as session:
        return [defer(session, make(i), task_id=f"{prefix}{i}")  # type: ignore[arg-type]
                for i in range(n)]


def _tis(cluster: Cluster) -> dict[str, TaskInstance]:
    with session_scope(cluster.session_factory) as session:
        return {ti.task_id: ti for ti in session.scalars(select(TaskInstance)).all()}


def _holders(cluster: Cluster) -> set[int | None]:
    with session_scope(cluster.session_factory) as session:
        return set(session.scalars(select(Trigger.triggerer_id)).all())


def _job_id(cluster: Cluster, proc: Proc) -> int:
    found: list[int] = []

    def started() -> bool:
        with session_scope(cluster.session_factory) as session:
            found[:] = session.scalars(select(Job.id).where(
                Job.job_type == TRIGGERER_JOB_TYPE, Job.pid == proc.process.pid)).all()
        return bool(found)

    wait_until(started, 30, message=f"{proc.name}'s job row:\n{cluster.logs()}")
    return found[0]


def _started_by(record: Path, pid: int, tags: list[str]) -> bool:
    started = {r.tag for r in records(record) if r.kind == "start" and r.pid == pid}
    return started >= set(tags)


def test_a_killed_triggerers_triggers_are_taken_over_within_the_bound_and_fire_once(
        cluster: Cluster) -> None:
    """SIGKILL the triggerer holding ten triggers: the other one takes them over once their
    lease has expired (no earlier than the bound less a heartbeat after the kill, no later
    than the bound plus a heartbeat and slack), and each fires exactly once."""
    record = cluster.home / "records.txt"
    gate = cluster.home / "gate"
    tags = [f"t{i}" for i in range(10)]
    deferred = _defer(cluster, lambda i: FileTrigger(str(gate), tag=f"t{i}",
                                                     record=str(record)), 10)
    first = cluster.start("triggerer1", ["triggerer"])
    wait_until(lambda: _started_by(record, first.process.pid, tags), 30,
               message=f"triggerer1 running all ten:\n{cluster.logs()}")
    second = cluster.start("triggerer2", ["triggerer"])
    _job_id(cluster, second)
    assert _holders(cluster) == {_job_id(cluster, first)}
    killed_at = time.time()
    os.killpg(first.process.pid, signal.SIGKILL)
    first.stopped = True
    wait_until(lambda: _started_by(record, second.process.pid, tags), TAKE_OVER + 10,
               message=f"triggerer2 taking all ten over:\n{cluster.logs()}")
    taken = [r.at - killed_at for r in records(record)
             if r.kind == "start" and r.pid == second.process.pid]
    # the lease was renewed at most a heartbeat (and a beat's own time) before the kill
    assert min(taken) >= TAKE_OVER - HEARTBEAT - 0.5, taken
    assert max(taken) <= TAKE_OVER + HEARTBEAT + 3.0, taken
    gate.touch()
    wait_until(lambda: all(ti.state == TaskInstanceState.SCHEDULED
                           for ti in _tis(cluster).values()), 20,
               message=f"all ten scheduled:\n{cluster.logs()}")
    counts = read_records(record)
    assert all(counts[("fire", tag)] == 1 for tag in tags), counts
    assert all(counts[("start", tag)] == 2 for tag in tags), counts
    for d in deferred:
        event = serde.from_json(_tis(cluster)[d.task_id].next_kwargs)["event"]
        assert event == {"tag": d.task_id, "path": str(gate)}
    assert {r.pid for r in records(record) if r.kind == "fire"} == {second.process.pid}


def test_a_triggerer_stopped_with_sigterm_hands_its_triggers_over_at_once(
        cluster: Cluster) -> None:
    """SIGTERM: the holder cancels its triggers (cleanup() runs), releases their rows and
    exits 0; the other triggerer claims them at its next beat, well before the take-over
    bound, and each fires once."""
    record = cluster.home / "records.txt"
    gate = cluster.home / "gate"
    tags = [f"t{i}" for i in range(5)]
    _defer(cluster, lambda i: FileTrigger(str(gate), tag=f"t{i}", record=str(record)), 5)
    first = cluster.start("triggerer1", ["triggerer"])
    wait_until(lambda: _started_by(record, first.process.pid, tags), 30,
               message=f"triggerer1 running all five:\n{cluster.logs()}")
    second = cluster.start("triggerer2", ["triggerer"])
    _job_id(cluster, second)
    assert cluster.stop(first, signal.SIGTERM) == 0, cluster.logs()
    stopped_at = time.time()
    assert "5 trigger(s) released" in cluster.logs("triggerer1", tail=100)
    wait_until(lambda: _started_by(record, second.process.pid, tags), TAKE_OVER + 10,
               message=f"triggerer2 taking all five:\n{cluster.logs()}")
    rows = records(record)
    taken = [r.at - stopped_at for r in rows if r.kind == "start"
             and r.pid == second.process.pid]
    assert max(taken) < TAKE_OVER - HEARTBEAT, taken  # not waiting out the lease
    for tag in tags:
        [cleanup] = [r.at for r in rows if r.tag == tag and r.kind == "cleanup"]
        [start] = [r.at for r in rows if r.tag == tag and r.kind == "start"
                   and r.pid == second.process.pid]
        assert cleanup < start
    gate.touch()
    wait_until(lambda: all(ti.state == TaskInstanceState.SCHEDULED
                           for ti in _tis(cluster).values()), 20,
               message=f"all five scheduled:\n{cluster.logs()}")
    assert all(read_records(record)[("fire", tag)] == 1 for tag in tags)


def test_a_triggerer_cut_off_from_the_database_stops_its_triggers_before_another_takes_them(
        cluster: Cluster) -> None:
    """The holder's database connection goes through a TCP proxy that is cut (a partition:
    calls hang): it cancels its triggers when its lease (1.75 s) runs out, and every one
    had run its cleanup() in that triggerer before the other started it (never two at
    once). The taken-over triggers fire once, in the other triggerer."""
    record = cluster.home / "records.txt"
    gate = cluster.home / "gate"
    tags = [f"t{i}" for i in range(5)]
    _defer(cluster, lambda i: FileTrigger(str(gate), tag=f"t{i}", record=str(record)), 5)
    pg_port = int(cluster.db_url.rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy(free_port(), ("127.0.0.1", pg_port))
    try:
        via_proxy = cluster.db_url.replace(f":{pg_port}/", f":{proxy.listen_port}/")
        saved = dict(cluster.extra_env)
        cluster.extra_env["SQUALL__DATABASE__SQL_ALCHEMY_CONN"] = via_proxy
        first = cluster.start("triggerer1", ["triggerer"])
        cluster.extra_env.clear()
        cluster.extra_env.update(saved)
        wait_until(lambda: _started_by(record, first.process.pid, tags), 30,
                   message=f"triggerer1 running all five:\n{cluster.logs()}")
        second = cluster.start("triggerer2", ["triggerer"])
        _job_id(cluster, second)
        cut_at = time.time()
        proxy.cut()
        wait_until(lambda: _started_by(record, second.process.pid, tags), TAKE_OVER + 15,
                   message=f"triggerer2 taking all five over:\n{cluster.logs()}")
        assert first.process.poll() is None, cluster.logs()  # it lives on, without them
        rows = records(record)
        for tag in tags:
            stopped = [r.at for r in rows if r.tag == tag and r.kind == "cleanup"
                       and r.pid == first.process.pid]
            taken = [r.at for r in rows if r.tag == tag and r.kind == "start"
                     and r.pid == second.process.pid]
            assert len(stopped) == 1 and len(taken) == 1, rows
            assert stopped[0] < taken[0], (tag, stopped, taken)
            # stopped by its own lease, within it (plus the watchdog's tick and slack)
            assert stopped[0] - cut_at <= LEASE + 1.0, (tag, stopped[0] - cut_at)
        assert "lease lost" in cluster.logs("triggerer1", tail=200)
        gate.touch()
        wait_until(lambda: all(ti.state == TaskInstanceState.SCHEDULED
                               for ti in _tis(cluster).values()), 20,
                   message=f"all five scheduled:\n{cluster.logs()}")
        proxy.restore()  # the cut-off one reconnects; nothing is left for it to fire
        counts = read_records(record)
        assert all(counts[("fire", tag)] == 1 for tag in tags), counts
        assert {r.pid for r in records(record) if r.kind == "fire"} == {second.process.pid}
    finally:
        proxy.close()


def test_a_triggerer_back_from_an_outage_starts_its_triggers_again_and_each_fires_once(
        cluster: Cluster) -> None:
    """The only triggerer loses the database (a cut TCP proxy) for longer than its lease:
    it cancels its triggers (cleanup() runs); once the database answers again it renews
    (or claims back) the rows and starts them again, and each fires once."""
    record = cluster.home / "records.txt"
    gate = cluster.home / "gate"
    tags = [f"t{i}" for i in range(3)]
    _defer(cluster, lambda i: FileTrigger(str(gate), tag=f"t{i}", record=str(record)), 3)
    pg_port = int(cluster.db_url.rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy(free_port(), ("127.0.0.1", pg_port))
    try:
        saved = dict(cluster.extra_env)
        cluster.extra_env["SQUALL__DATABASE__SQL_ALCHEMY_CONN"] = cluster.db_url.replace(
            f":{pg_port}/", f":{proxy.listen_port}/")
        proc = cluster.start("triggerer", ["triggerer"])
        cluster.extra_env.clear()
        cluster.extra_env.update(saved)
        wait_until(lambda: _started_by(record, proc.process.pid, tags), 30,
                   message=f"all three running:\n{cluster.logs()}")
        proxy.cut()
        wait_until(lambda: all(read_records(record)[("cleanup", tag)] == 1 for tag in tags),
                   LEASE + 5, message=f"the lease lost, the triggers stopped:\n{cluster.logs()}")
        proxy.restore()
        wait_until(lambda: all(read_records(record)[("start", tag)] == 2 for tag in tags),
                   TAKE_OVER + 15, message=f"the triggers started again:\n{cluster.logs()}")
        gate.touch()
        wait_until(lambda: all(ti.state == TaskInstanceState.SCHEDULED
                               for ti in _tis(cluster).values()), 20,
                   message=f"all three scheduled:\n{cluster.logs()}")
        counts = read_records(record)
        assert all(counts[("fire", tag)] == 1 for tag in tags), counts
        assert {r.pid for r in records(record)} == {proc.process.pid}
        assert proc.process.poll() is None
    finally:
        proxy.close()


def test_a_trigger_that_raises_or_ends_without_an_event_fails_its_task_and_the_others_fire(
        cluster: Cluster) -> None:
    record = cluster.home / "records.txt"
    good = _defer(cluster, lambda i: SleepTrigger(seconds=0.5 + 0.2 * i, tag=f"ok{i}",
                                                  record=str(record)), 3, prefix="ok")
    [bad] = _defer(cluster, lambda i: RaisingTrigger(seconds=0.2, tag="bad",
                                                     record=str(record)), 1, prefix="bad")
    [silent] = _defer(cluster, lambda i: NoEventTrigger(seconds=0.1, tag="silent",
                                                        record=str(record)), 1,
                      prefix="silent")
    cluster.start("triggerer", ["triggerer"])
    wait_until(lambda: all(ti.state == TaskInstanceState.SCHEDULED
                           for ti in _tis(cluster).values()), 30,
               message=f"all scheduled:\n{cluster.logs()}")
    tis = _tis(cluster)
    for d in good:
        assert tis[d.task_id].next_method == "execute_complete"
        assert serde.from_json(tis[d.task_id].next_kwargs)["event"]["tag"] == d.task_id
    failed = tis[bad.task_id]
    assert failed.next_method == "__fail__" and failed.trigger_id is None
    assert failed.next_kwargs is not None and failed.next_kwargs["error"] == "Trigger failure"
    assert "ValueError: boom bad" in "".join(failed.next_kwargs["traceback"])
    assert tis[silent.task_id].next_method == "__fail__"
    assert tis[silent.task_id].next_kwargs == {"error": "Trigger failure", "traceback": None}
    logs = cluster.logs("triggerer", tail=400)
    # reported with the task instance it belongs to
    assert "RaisingTrigger) of deferring.bad0[r1] try 1 failed: ValueError: boom bad" in logs
    assert "NoEventTrigger) of deferring.silent0[r1] try 1 exited without sending" in logs
    counts = read_records(record)
    assert counts[("cleanup", "bad")] == 1 and counts[("cleanup", "silent")] == 1


def test_a_trigger_that_blocks_the_loop_is_named_and_the_others_still_fire(
        cluster: Cluster) -> None:
    record = cluster.home / "records.txt"
    [blocker] = _defer(cluster, lambda i: BlockingTrigger(block=1.0, after=0.3, tag="blocker",
                                                          record=str(record)), 1,
                       prefix="blocker")
    others = _defer(cluster, lambda i: SleepTrigger(seconds=0.2 + 0.3 * i, tag=f"ok{i}",
                                                    record=str(record)), 5, prefix="ok")
    cluster.start("triggerer", ["triggerer"])
    wait_until(lambda: all(ti.state == TaskInstanceState.SCHEDULED
                           for ti in _tis(cluster).values()), 30,
               message=f"all scheduled:\n{cluster.logs()}")
    logs = cluster.logs("triggerer", tail=400)
    name = "BlockingTrigger) of deferring.blocker0[r1] try 1"
    blocking = [line for line in logs.splitlines() if "the event loop is blocked (" in line]
    assert len(blocking) == 1 and "WARNING" in blocking[0] and name in blocking[0], logs
    blocked_for = [line for line in logs.splitlines() if "the event loop was blocked for" in line]
    assert len(blocked_for) == 1 and name in blocked_for[0], blocked_for
    seconds = float(blocked_for[0].split("blocked for ")[1].split(" s")[0])
    assert 0.9 <= seconds <= 1.5, blocked_for
    counts = read_records(record)
    assert all(counts[("fire", f"ok{i}")] == 1 for i in range(len(others))), counts
    assert counts[("fire", "blocker")] == 1
    assert _tis(cluster)[blocker.task_id].next_method == "execute_complete"


# --------------------------------------------------------------------------- with a cluster

#: each task defers to a DateTimeTrigger (Airflow 2.10's core timer) WAIT seconds after its
#: try starts; the resumed method appends ``resume task_id run_id try_number pid`` to the
#: execution log, so the test counts resumes per task
DEFERRING_DAG = '''
import os
from datetime import timedelta

import pendulum
from squall import DAG
from squall.sdk.operators.base import BaseOperator
from squall.sdk.triggers.temporal import DateTimeTrigger

LOG = os.environ["SQUALL_TEST_EXEC_LOG"]


def record(what, ti):
    with open(LOG, "a") as f:
        f.write(f"{what} {ti.task_id} {ti.run_id} {ti.try_number} {os.getpid()}\\n")


class WaitOnTimer(BaseOperator):
    def execute(self, context):
        record("execute", context["ti"])
        self.defer(trigger=DateTimeTrigger(moment=pendulum.now("UTC") + timedelta(seconds=WAIT)),
                   method_name="resume")

    def resume(self, context, event=None):
        record("resume", context["ti"])
        return str(event)


with DAG("held", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         default_args={"retries": 1}):
    for i in range(WIDTH):
        WaitOnTimer(task_id=f"t{i}")
'''


def _lines(exec_log: Path) -> list[list[str]]:
    if not exec_log.exists():
        return []
    return [line.split() for line in exec_log.read_text().splitlines()]


def test_a_killed_triggerers_deferred_tasks_resume_once_each_through_the_other(
        cluster_factory: Callable[..., Cluster]) -> None:
    """Issue 25's fault: a scheduler, a Celery worker and two triggerers; five tasks of a
    DAG defer to timers long enough to be held; SIGKILL the triggerer holding them. The
    other takes their triggers over (after the take-over bound), each timer fires there,
    and each task resumes on the worker exactly once and succeeds as try 1 (Airflow 2.10: a
    fired trigger schedules its task instance once, ``Trigger.submit_event``; the resumed
    try keeps its try number, ``TaskInstance._defer_task`` / ``_execute_task``)."""
    width, wait = 5, 45
    cluster = cluster_factory("redis-pg", FAST)
    exec_log = cluster.home / "executions.log"
    cluster.extra_env["SQUALL_TEST_EXEC_LOG"] = str(exec_log)
    (cluster.dags_folder / "held.py").write_text(
        DEFERRING_DAG.replace("WIDTH", str(width)).replace("WAIT", str(wait)))
    cluster.cli("db", "migrate")
    first = cluster.start("triggerer1", ["triggerer"])
    first_job = _job_id(cluster, first)
    cluster.start_scheduler()
    cluster.start_worker(concurrency=2)
    started = time.monotonic()
    run_id = cluster.trigger("held")

    def all_held_by_first() -> bool:
        for proc in cluster.procs:
            assert proc.process.poll() is None, f"{proc.name} died:\n{cluster.logs()}"
        tis = cluster.task_instances("held", run_id)
        return (len(tis) == width and all(ti.state == "deferred" for ti in tis.values())
                and _holders(cluster) == {first_job})

    wait_until(all_held_by_first, 60, interval=0.2,
               message=f"all five deferred and held by triggerer1:\n{cluster.logs()}")
    second = cluster.start("triggerer2", ["triggerer"])
    second_job = _job_id(cluster, second)
    assert _holders(cluster) == {first_job}  # a live holder keeps them
    os.killpg(first.process.pid, signal.SIGKILL)
    first.stopped = True
    wait_until(lambda: _holders(cluster) == {second_job}, TAKE_OVER + 10, interval=0.2,
               message=f"triggerer2 taking all five over:\n{cluster.logs()}")
    # taken over while every timer still waited (the firing is triggerer2's, checked in
    # the logs below)
    assert all(ti.state == "deferred"
               for ti in cluster.task_instances("held", run_id).values()), (
        f"{time.monotonic() - started:.1f} s after the trigger\n{cluster.logs()}")

    assert cluster.wait_for_run("held", run_id, timeout=wait + 60) == "success", cluster.logs()
    tis = cluster.task_instances("held", run_id)
    assert {t: (ti.state, ti.try_number) for t, ti in tis.items()} == {
        f"t{i}": ("success", 1) for i in range(width)}
    lines = _lines(exec_log)
    for i in range(width):
        task = f"t{i}"
        assert [x[3] for x in lines if x[:3] == ["execute", task, run_id]] == ["1"], lines
        assert [x[3] for x in lines if x[:3] == ["resume", task, run_id]] == ["1"], lines
    def fired(name: str) -> list[str]:
        return [line for line in cluster.logs(name, tail=400).splitlines()
                if "fired" in line and "DateTimeTrigger" in line]

    assert fired("triggerer1") == [] and len(fired("triggerer2")) == width, cluster.logs()
