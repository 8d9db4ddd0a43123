"""Process helpers on real child processes: ending a child with a time limit, and ending a
process tree found by ancestry (grandchildren in sessions of their own included)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from squall.common.procutil import (
    child_process_context,
    stop_child,
)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def test_stop_child_waits_then_kills() -> None:
    ctx = child_process_context()
    quick = ctx.Process(target=_sleep, args=(0,))  # type: ignore[attr-defined]
    quick.start()
    assert stop_child(quick, 30) is True and quick.exitcode == 0
    slow = ctx.Process(target=_sleep, args=(60,))  # type: ignore[attr-defined]
    slow.start()
    assert stop_child(slow, 0.1) is False
    assert not slow.is_alive() and slow.exitcode is not None and slow.exitcode < 0


def test_stop_child_terminates_before_it_kills() -> None:
    slow = child_process_context().Process(target=_sleep, args=(60,))  # type: ignore[attr-defined]
    slow.start()
    assert stop_child(slow, 0, terminate_grace=10) is False
    assert slow.exitcode == -15  # SIGTERM was enough


SUBREAPER = """
import subprocess, sys, time
from pathlib import Path
from squall.common.procutil import end_descendants, set_child_subreaper

pids = Path(sys.argv[1])
assert set_child_subreaper()
subprocess.Popen(["bash", "-c", sys.argv[2]], start_new_session=True)
deadline = time.monotonic() + 30
while not (pids.exists() and len(pids.read_text().split()) == 3):
    assert time.monotonic() < deadline, "the tree did not start"
    time.sleep(0.02)
print(" ".join(map(str, sorted(end_descendants(1.0)))))
"""


def test_a_subreaper_ends_its_whole_tree_own_sessions_included(tmp_path: Path) -> None:
    """A process that is a child subreaper finds and ends every process started under it:
    a command, its background child, and an orphan in a session of its own."""
    pids = tmp_path / "pids"
    script = (f'echo $$ >> {pids}; sleep 60 > /dev/null 2>&1 & echo $! >> {pids}; '
              f'(setsid bash -c \'echo $$ >> {pids}; exec sleep 60\' > /dev/null 2>&1 &); '
              'sleep 60')
    try:
        proc = subprocess.run([sys.executable, "-c", SUBREAPER, str(pids), script],
                              capture_output=True, text=True, timeout=60, check=False,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
        assert proc.returncode == 0, proc.stderr
        tree = [int(pid) for pid in pids.read_text().split()]
        assert set(tree) <= {int(pid) for pid in proc.stdout.split()}
        assert not any(_alive(pid) for pid in tree)
    finally:
        for pid in map(int, pids.read_text().split()) if pids.exists() else ():
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def test_quick_child_pids_lists_this_process_s_children() -> None:
    from squall.common.procutil import child_pids, quick_child_pids

    child = subprocess.Popen(["sleep", "30"])
    try:
        assert child.pid in quick_child_pids()
        assert sorted(quick_child_pids()) == sorted(child_pids())
    finally:
        child.kill()
        child.wait()
    assert child.pid not in quick_child_pids()


def test_a_status_pipe_brings_the_exit_code_or_says_the_server_died() -> None:
    import struct

    from squall.worker.children import TaskProcessHandle

    read, write = os.pipe()
    os.set_blocking(read, False)
    handle = TaskProcessHandle(12345, status_fd=read)
    assert handle.poll() is None
    os.write(write, struct.pack("<i", -15)[:2])  # a partial code is not an exit yet
    assert handle.poll() is None
    os.write(write, struct.pack("<i", -15)[2:])
    os.close(write)
    assert handle.poll() == -15 and handle.lost is None and handle.status_fd is None
    assert handle.describe_exit(-15) == "task process exited with signal SIGTERM"

    read, write = os.pipe()
    os.set_blocking(read, False)
    handle = TaskProcessHandle(12345, status_fd=read)
    os.close(write)  # the server died without writing a code
    assert handle.wait() < 0
    assert handle.lost is not None and "fork server died" in handle.describe_exit(-9)
