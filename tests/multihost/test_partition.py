"""A host cut off mid-task: its try is retried on another host, and never two at once.

Hosts h1 and h2 both consume the queue ``work``. The first try of a long bash task runs on
h1; the test takes h1's link down (its packets are dropped, its TCP connections hang, as in
a real partition). The supervisor on h1 can no longer heartbeat: when its lease runs out
(``zombie_threshold`` less the margin of ``squall/common/lease.py``: 8.75 s of 10 s here) it
ends its task, and the scheduler's watchdog, seeing no heartbeat for ``zombie_threshold``,
retries the try, which h2 runs. The link then comes back and the old supervisor's late
failure write loses its compare-and-set: the row belongs to try 2.

What the bash task itself records (the filesystem is shared by every namespace) is the
evidence: ``start.N`` (its pid and bash's ``$EPOCHREALTIME`` when try N starts) and
``end.N`` (the time its TERM trap ran; a builtin, as the trap's children are killed too).
The test also watches the old pid in ``/proc`` (every namespace's processes are visible from
the root pid namespace).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.multihost.conftest import SETTINGS, MultiHost
from tests.support.faults import process_gone
from tests.support.services import wait_until

pytestmark = [pytest.mark.multihost, pytest.mark.integration]

ZOMBIE_THRESHOLD = float(SETTINGS["scheduler"]["zombie_threshold"])  # type: ignore[arg-type]
DETECTION = float(SETTINGS["scheduler"]["zombie_detection_interval"])  # type: ignore[arg-type]
#: from the watchdog's decision to the next try's first line: the retry delay (0.2 s), a
#: scheduler loop, the publish, the worker's start transaction and the task process
SCHEDULING_SLACK = 5.0

COMMAND = r"""
d=DIR; t={{ ti.try_number }}
echo "$$ $EPOCHREALTIME" > $d/start.$t.tmp && mv $d/start.$t.tmp $d/start.$t
trap 'echo $EPOCHREALTIME > $d/end.$t; exit 143' TERM
if [ "$t" -eq 1 ]; then n=600; else n=10; fi
i=0
while [ $i -lt $n ]; do echo $i >> $d/progress.$t; sleep 0.1; i=$((i+1)); done
"""

DAG = '''
from datetime import timedelta

import pendulum
from squall import DAG, BashOperator

with DAG("partition", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         default_args={"retries": 1, "retry_delay": timedelta(seconds=0.2)}):
    BashOperator(task_id="long", queue="work", bash_command=COMMAND)
'''


def _started(marks: Path, try_number: int) -> tuple[int, float] | None:
    path = marks / f"start.{try_number}"
    if not path.exists():
        return None
    pid, at = path.read_text().split()
    return int(pid), float(at)


def test_cut_link_retries_on_another_host_and_never_two_tries_at_once(
        multihost: MultiHost) -> None:
    cluster, lab = multihost.cluster, multihost.lab
    marks = cluster.home / "marks"
    marks.mkdir()
    (cluster.dags_folder / "partition.py").write_text(
        DAG.replace("COMMAND", repr(COMMAND.replace("DIR", str(marks)))))
    old_worker = multihost.start_worker("h1", "w1", "work")
    cluster.start_scheduler()
    run_id = cluster.trigger("partition")

    wait_until(lambda: _started(marks, 1) is not None, 60, message="try 1 to start")
    first = _started(marks, 1)
    assert first is not None
    old_pid = first[0]
    ti = cluster.task_instances("partition", run_id)["long"]
    assert (ti.state, ti.try_number, ti.hostname) == ("running", 1, "w1@h1")
    multihost.start_worker("h2", "w2", "work")
    assert not process_gone(old_pid)

    lab.cut("h1")
    cut_at = time.time()
    # until try 2 starts: note when the old task's pid is first seen gone
    old_gone_seen: float | None = None
    deadline = time.monotonic() + ZOMBIE_THRESHOLD + DETECTION + SCHEDULING_SLACK + 20
    second = None
    while second is None:
        second = _started(marks, 2)
        if second is None and old_gone_seen is None and process_gone(old_pid):
            old_gone_seen = time.time()
        assert time.monotonic() < deadline, (
            f"try 2 did not start ({time.time() - cut_at:.1f} s after the cut; old task "
            f"gone: {old_gone_seen is not None})\n{cluster.logs()}")
        time.sleep(0.02)
    second_started = second[1]

    # no two tries at once: the old task was gone, and its TERM trap had run, before the
    # new try's first line
    assert old_gone_seen is not None and old_gone_seen < second_started, (
        f"try 1 (pid {old_pid}) still ran when try 2 started\n{cluster.logs()}")
    old_end = marks / "end.1"
    assert old_end.exists(), "try 1 was not ended by SIGTERM (its trap never ran)"
    assert float(old_end.read_text()) < second_started
    # ... and it ended by its own supervisor's lease, before the watchdog could act
    assert float(old_end.read_text()) - cut_at < ZOMBIE_THRESHOLD
    # the retry came within zombie_threshold + the detection interval (+ scheduling)
    latency = second_started - cut_at
    assert latency <= ZOMBIE_THRESHOLD + DETECTION + SCHEDULING_SLACK, latency

    ti = cluster.task_instances("partition", run_id)["long"]
    assert (ti.try_number, ti.hostname) == (2, "w2@h2"), (ti.state, ti.try_number,
                                                            ti.hostname)

    lab.restore("h1")
    assert cluster.wait_for_run("partition", run_id, timeout=60) == "success", cluster.logs()
    # the old supervisor, back on the network, wrote its failure late: it lost
    wait_until(lambda: b"lost: the row had moved on" in old_worker.log_path.read_bytes(), 60,
               interval=0.2, message="the old supervisor's late write to lose its "
                                     "compare-and-set")
    old_log = old_worker.log_path.read_text(errors="replace")
    assert "heartbeat lease lost" in old_log
    ti = cluster.task_instances("partition", run_id)["long"]
    assert (ti.state, ti.try_number, ti.hostname) == ("success", 2, "w2@h2")
    assert not (marks / "start.3").exists()
    assert len((marks / "progress.2").read_text().split()) == 10
