"""Assertions and waits shared by the fault scenarios."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from squall.common.procutil import descendant_pids
from tests.support.cluster import Cluster, Proc
from tests.support.faults import (
    execution_counts,
    kill_process_group,
    read_executions,
)
from tests.support.services import wait_until


def ti_states(cluster: Cluster, dag_id: str, run_id: str) -> dict[str, tuple[str, int]]:
    return {t: (ti.state, ti.try_number) for t, ti in
            cluster.task_instances(dag_id, run_id).items()}


def wait_for_execution(cluster: Cluster, exec_log: Path, task_id: str, try_number: int,
                       timeout: float = 45) -> int:
    """Wait until ``task_id`` try ``try_number`` has started executing; returns its pid."""
    def started() -> bool:
        return any(e.task_id == task_id and e.try_number == try_number
                   for e in read_executions(exec_log))

    try:
        wait_until(started, timeout, message=f"{task_id} try {try_number} to start executing")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{cluster.logs()}") from None
    return next(e.pid for e in read_executions(exec_log)
                if e.task_id == task_id and e.try_number == try_number)


def wait_for_states(cluster: Cluster, dag_id: str, run_id: str, want: set[str],
                    count: int, timeout: float = 30) -> None:
    """Wait until at least ``count`` task instances of the run are in one of ``want``."""
    def reached() -> bool:
        return sum(s in want for s, _ in ti_states(cluster, dag_id, run_id).values()) >= count

    try:
        wait_until(reached, timeout, message=f"{count} task instance(s) in {sorted(want)}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {ti_states(cluster, dag_id, run_id)}\n"
                             f"{cluster.logs()}") from None


def sigkill_group(cluster: Cluster, proc: Proc, timeout: float = 10) -> None:
    """SIGKILL the process and everything in its process group (it is a session leader)."""
    proc.stopped = True
    kill_process_group(proc.process.pid, signal.SIGKILL)
    proc.process.wait(timeout)


def sigkill_tree(root: int) -> list[int]:
    """SIGKILL ``root`` and every process descended from it, as a lost host or ``docker
    kill`` ends them all at once; returns their pids. They are stopped first (SIGSTOP),
    until no new descendant shows up, so none forks, restarts a child or reacts meanwhile."""
    pids = [root]
    while True:
        for pid in pids:
            _signal(pid, signal.SIGSTOP)
        found = [root, *descendant_pids(root)]
        if set(found) <= set(pids):
            break
        pids = list(dict.fromkeys([*pids, *found]))
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    return pids


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def sigkill_task_process(pid: int) -> None:
    """SIGKILL a task process and its group (it runs in a group of its own)."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    kill_process_group(pgid, signal.SIGKILL)


def assert_each_try_once(cluster: Cluster, exec_log: Path, dag_id: str, run_id: str,
                         state: str = "success") -> None:
    """Every task instance of the run ends in ``state``; each of its tries 1..try_number
    started executing exactly once, and no other try executed."""
    tis = cluster.task_instances(dag_id, run_id)
    counts = execution_counts(exec_log, run_id)
    states = {t: (ti.state, ti.try_number, ti.state_reason) for t, ti in tis.items()}
    assert all(ti.state == state for ti in tis.values()), states
    expected = {(t, n): 1 for t, ti in tis.items() for n in range(1, ti.try_number + 1)}
    assert dict(counts) == expected, (dict(counts), states)


def assert_each_task_once(cluster: Cluster, exec_log: Path, dag_id: str, run_id: str,
                          state: str = "success") -> None:
    """Every task instance of the run ends in ``state`` and executed exactly once in all:
    its final try, once (an earlier try that never started -- never published, or reset by
    a watchdog -- may have been skipped, but no try executed twice)."""
    tis = cluster.task_instances(dag_id, run_id)
    counts = execution_counts(exec_log, run_id)
    states = {t: (ti.state, ti.try_number, ti.state_reason) for t, ti in tis.items()}
    assert all(ti.state == state for ti in tis.values()), states
    expected = {(t, ti.try_number): 1 for t, ti in tis.items()}
    assert dict(counts) == expected, (dict(counts), states)
