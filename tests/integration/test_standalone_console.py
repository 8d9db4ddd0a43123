"""``squall standalone --trigger example_taskflow`` as a user runs it: a console a person can
read (ADR 34), and the example DAGs paused but the one asked for."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from tests.support.cluster import REPO_ROOT
from tests.support.services import free_port, wait_until

#: the most lines standalone may print up to its triggered run's outcome
MAX_LINES = 40
#: what the records of a try, or of a task's way through the worker, say (detail: the try's
#: own belong in its log file)
TASK_LINE_MARKS = ("TaskInstance ", "squall.execution.", "squall.sdk.", "squall.task",
                   "Returned value", "celery.app.trace", "celery.worker.strategy")


def test_standalone_console_shows_what_a_person_needs(tmp_path: Path) -> None:
    home = tmp_path / "squall_home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL")}
    port = free_port()
    env.update({"SQUALL_HOME": str(home), "PYTHONPATH": str(REPO_ROOT),
                "SQUALL__API__PORT": str(port),
                # its own, so no other test's request for a log reaches this one's
                "SQUALL__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())})
    log_path = tmp_path / "console.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "squall", "standalone", "--trigger",
                                 "example_taskflow"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def outcome_shown() -> bool:
        # the run's summary ends with its last task (by task id)
        return b"  transform: " in log_path.read_bytes() or proc.poll() is not None

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "squall", *args], env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    try:
        wait_until(outcome_shown, 180, interval=0.2, message="the triggered run's outcome")
        assert proc.poll() is None, log_path.read_text()
        text = log_path.read_text()
        head = text[:text.index("  transform: ")].splitlines()
        shown = "\n".join(head)
        assert len(head) < MAX_LINES, shown
        # what a person needs: the address and the login, the run's outcome
        password = (home / "standalone_admin_password.txt").read_text().strip()
        assert f"http://127.0.0.1:{port}/" in shown, shown
        assert f"username: admin  password: {password}" in shown, shown
        assert "Triggered DagRun example_taskflow" in shown, shown
        assert [line for line in head if line.startswith("DagRun example_taskflow ")
                and line.endswith(": success")], shown
        # and not the detail
        task_lines = [line for line in head if any(m in line for m in TASK_LINE_MARKS)]
        assert not task_lines, shown
        assert "-------------- celery@" not in shown and "[tasks]" not in shown, shown
        assert "superuser" not in shown and "SecurityWarning" not in shown, shown
        assert "No hostname was supplied" not in shown, shown
        # the task output is in the task logs
        logs = list((home / "logs" / "dag_id=example_taskflow").rglob("attempt=1.log"))
        assert len(logs) == 3 and all("starting try 1" in p.read_text() for p in logs), logs

        # new DAGs start paused ([core] dags_are_paused_at_creation): the examples stay
        # paused, and no run of theirs is made; the triggered one was unpaused
        dags = json.loads(cli("dags", "list", "-o", "json").stdout)
        paused = {d["dag_id"]: d["is_paused"] for d in dags}
        assert len(paused) > 5 and paused.pop("example_taskflow") is False, paused
        assert set(paused.values()) == {True}, paused
        for dag_id in ("example_bash_operator", "example_task_group"):
            runs = json.loads(cli("dags", "list-runs", dag_id, "-o", "json").stdout)
            assert runs == [], runs
        with closing(sqlite3.connect(home / "squall.db")) as db:  # the audit log says who
            unpaused = db.execute("SELECT dag_id, owner FROM log WHERE event = 'unpaused'")
            assert [row[0] for row in unpaused] == ["example_taskflow"]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log_path.read_text()
