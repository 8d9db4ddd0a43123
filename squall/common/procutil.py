"""Helpers for the processes Squall forks (supervisors, task processes, callback children):
stream flushing, the parent-death signal, and ending a process tree.

A try's processes are found by ancestry, not by process group or session: a command may
start its own session (``setsid``, a daemon), but it stays a descendant. The supervisor and
the task process are *child subreapers* (Linux ``PR_SET_CHILD_SUBREAPER``), so an orphan
(a grandchild whose parent exited) is re-parented to the nearest of them rather than to
init, and stays findable: :func:`end_descendants` walks ``/proc`` for every descendant of a
process, sends SIGTERM, waits for a grace period, sends SIGKILL to what is left and reaps
the ones that became its children.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import multiprocessing.context
import os
import signal
import sys
import time
from collections.abc import Collection
from typing import Any

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
#: how often :func:`end_descendants` looks again while it waits for processes to exit
_POLL_SECONDS = 0.01


def child_process_context() -> multiprocessing.context.BaseContext:
    """How Squall starts a short-lived child that runs Python code (a DAG file's parse, a
    callback): forked where the platform can fork (the child starts with what the parent
    imported), else spawned."""
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


def stop_child(process: Any, wait: float, *, terminate_grace: float | None = None) -> bool:
    """The one way a child with a time limit is ended: give ``process`` (a
    ``multiprocessing`` process) ``wait`` seconds to exit by itself; then, with
    ``terminate_grace``, SIGTERM and that many seconds more; then SIGKILL. It is reaped
    either way. Whether it exited by itself within ``wait``."""
    process.join(wait)
    if not process.is_alive():
        return True
    if terminate_grace is not None:
        process.terminate()
        process.join(terminate_grace)
    if process.is_alive():
        process.kill()
        process.join()
    return False


def flush_std_streams() -> None:
    """Flush stdout and stderr before a forked child leaves with ``os._exit`` (which skips
    the interpreter's own flushing); a closed or broken stream is ignored."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def set_parent_death_signal(signum: int) -> None:
    """Ask Linux to send ``signum`` to this process when its parent dies (best effort)."""
    if not _prctl(_PR_SET_PDEATHSIG, signum):
        log.debug("prctl(PR_SET_PDEATHSIG) is not available")


def set_child_subreaper() -> bool:
    """Make this process the one its orphaned descendants are re-parented to (Linux);
    whether that worked."""
    ok = _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    if not ok:
        log.debug("prctl(PR_SET_CHILD_SUBREAPER) is not available")
    return ok


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) for every process in ``/proc``."""
    table: dict[int, tuple[int, str]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue  # exited meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) >= 2:
            table[int(name)] = (int(fields[1]), fields[0].decode("ascii", "replace"))
    return table


def descendant_pids(root: int, table: dict[int, tuple[int, str]] | None = None) -> list[int]:
    """Every live (not zombie) descendant of ``root``, parents before their children."""
    table = _process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (ppid, _state) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    stack = list(children.get(root, ()))
    while stack:
        pid = stack.pop()
        if table[pid][1] != "Z":
            found.append(pid)
        stack.extend(children.get(pid, ()))
    return found


def _signal_all(pids: Collection[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def has_children() -> bool:
    """Whether this process has a child, alive or exited (one system call, no ``/proc``
    walk)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def child_pids() -> list[int]:
    """This process's children (alive or exited)."""
    me = os.getpid()
    return [pid for pid, (ppid, _state) in _process_table().items() if ppid == me]


def quick_child_pids() -> list[int]:
    """This process's children, alive or exited: those of its main thread, from one read of
    ``/proc/self/task/<pid>/children`` (a try's processes and the orphans re-parented to a
    subreaper are there); the ``/proc`` walk of :func:`child_pids` where that file is
    missing (a kernel without ``CONFIG_PROC_CHILDREN``)."""
    me = os.getpid()
    try:
        with open(f"/proc/self/task/{me}/children", "rb") as handle:
            return [int(pid) for pid in handle.read().split()]
    except OSError:
        return child_pids()


def reap_children(exclude: Collection[int] = ()) -> None:
    """Collect the exit status of this process's exited children (orphans re-parented to
    it), other than ``exclude``, so none is left a zombie."""
    me = os.getpid()
    for pid, (ppid, state) in _process_table().items():
        if ppid == me and state == "Z" and pid not in exclude:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def end_descendants(grace: float, *, root: int | None = None,
                    exclude: Collection[int] = ()) -> list[int]:
    """End every descendant of ``root`` (default: this process) except the subtrees of
    ``exclude``: SIGTERM, up to ``grace`` seconds to exit, then SIGKILL until none is left.
    Returns the pids it signalled. Zombie children of this process are reaped."""
    root = os.getpid() if root is None else root
    ended: list[int] = []
    deadline = time.monotonic() + max(grace, 0.0)
    signum = signal.SIGTERM
    for _ in range(1000):  # each round ends at least one process, or the tree is empty
        if root == os.getpid():
            reap_children(exclude)
        table = _process_table()
        skip = set(exclude)
        for pid in exclude:
            skip.update(descendant_pids(pid, table))
        alive = [pid for pid in descendant_pids(root, table) if pid not in skip]
        if not alive:
            break
        new = [pid for pid in alive if pid not in ended]
        ended.extend(new)
        if signum == signal.SIGTERM and time.monotonic() >= deadline:
            signum = signal.SIGKILL
            log.debug("processes %s still alive %.2f s after SIGTERM; sending SIGKILL",
                      alive, grace)
            _signal_all(alive, signum)
        elif new or signum == signal.SIGKILL:
            _signal_all(new if signum == signal.SIGTERM else alive, signum)
        time.sleep(_POLL_SECONDS)
    return ended
