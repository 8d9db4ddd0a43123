"""The worker parent freezes its heap before it forks a pool process (``gc.freeze()``), and a
forked pool process still finds, and disposes of, every database engine it inherited: those
made before the freeze (which ``gc.get_objects()`` no longer lists) and after it.

Runs in a fresh interpreter that really forks: freezing the test process's heap would leak
into every later test."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = textwrap.dedent("""
    import gc, json, os, sys
    from sqlalchemy import text
    from squall.common.db import make_engine
    from squall.worker.tasks import dispose_inherited_engines, freeze_heap

    before = make_engine("sqlite:///" + os.path.join(sys.argv[1], "a.db"))
    with before.connect() as conn:
        conn.execute(text("select 1"))
    freeze_heap()
    after = make_engine("sqlite:///" + os.path.join(sys.argv[1], "b.db"))
    frozen = gc.get_freeze_count()
    listed = sum(1 for o in gc.get_objects() if o is before)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        checked_in = before.pool.checkedin()
        count = dispose_inherited_engines()
        report = {"disposed": count, "pool_before": checked_in,
                  "pool_after": before.pool.checkedin()}
        os.write(write, json.dumps(report).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = json.loads(os.read(read, 65536))
    print(json.dumps({"frozen": frozen, "listed": listed, **child}))
""")


def test_a_forked_child_disposes_of_engines_made_before_and_after_the_freeze(
        tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=True)
    found = json.loads(out.stdout.splitlines()[-1])
    assert found["frozen"] > 1000  # the heap went into the permanent generation
    assert found["listed"] == 0  # ... where gc.get_objects() does not see the first engine
    assert found["disposed"] == 2  # yet the child found both
    assert found["pool_before"] == 1 and found["pool_after"] == 0  # the inherited connection
