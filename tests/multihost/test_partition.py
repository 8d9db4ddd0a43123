"""A host cut off mid-task: its tries are retried on other hosts, and never two at once.

Hosts h1, h2 and h3 all consume the queue ``work``. The first tries of two long bash tasks
run on h1 (its worker starts alone; the others start once both run); the test takes h1's
link down (its packets are dropped, its TCP connections hang, as in a real partition). The
supervisors on h1 can no longer heartbeat: when their lease runs out (``zombie_threshold``
less the margin of ``squall/common/lease_terms.py``: 8.75 s of 10 s here) they end their tasks,
and the scheduler's watchdog, seeing no heartbeat for ``zombie_threshold``, retries the
tries, which h2 and h3 run. The link then comes back and the old supervisors' late failure
writes lose their compare-and-set: the rows belong to the second tries.

What the bash task itself records (the filesystem is shared by every namespace) is the
evidence: ``start.TASK.N`` (its pid and bash's ``$EPOCHREALTIME`` when try N starts) and
``end.TASK.N`` (the time its TERM trap ran; a builtin, as the trap's children are killed too).
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

# one xdist process runs the multihost tests, one lab at a time
pytestmark = [pytest.mark.multihost, pytest.mark.integration, pytest.mark.xdist_group("multihost")]

ZOMBIE_THRESHOLD = float(SETTINGS["scheduler"]["zombie_threshold"])  # type: ignore[arg-type]
DETECTION = float(SETTINGS["scheduler"]["zombie_detection_interval"])  # type: ignore[arg-type]
#: from the watchdog's decision to the next try's first line: the retry delay (0.2 s), a
#: scheduler loop, the publish, the worker's start transaction and the task process
SCHEDULING_SLACK = 5.0
#: the tasks whose first tries run on h1 when it is cut off
TASKS = ("long_a", "long_b")
#: the workers that may run the retries (not h1's)
OTHERS = {"w2@h2", "w3@h3"}

COMMAND = r"""
d=DIR; t={{ ti.task_id }}.{{ ti.try_number }}
echo "$$ $EPOCHREALTIME" > $d/start.$t.tmp && mv $d/start.$t.tmp $d/start.$t
trap 'echo $EPOCHREALTIME > $d/end.$t; exit 143' TERM
if [ "{{ ti.try_number }}" -eq 1 ]; then n=600; else n=10; fi
i=0
while [ $i -lt $n ]; do echo $i >> $d/progress.$t; sleep 0.1; i=$((i+1)); done
"""

DAG = '''
from datetime import timedelta

import pendulum
from squall import DAG, BashOperator

with DAG("partition", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
         default_args={"retries": 1, "retry_delay": timedelta(seconds=0.2)}):
    for task_id in TASKS:
        BashOperator(task_id=task_id, queue="work", bash_command=COMMAND)
'''


def _started(marks: Path, task_id: str, try_number: int) -> tuple[int, float] | None:
    path = marks / f"start.{task_id}.{try_number}"
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
        DAG.replace("COMMAND", repr(COMMAND.replace("DIR", str(marks))))
        .replace("TASKS", repr(TASKS)))
    old_worker = multihost.start_worker("h1", "w1", "work")
    cluster.start_scheduler()
    run_id = cluster.trigger("partition")

    wait_until(lambda: all(_started(marks, t, 1) for t in TASKS), 60,
               message="the first tries to start on h1")
    old_pids = {t: _started(marks, t, 1)[0] for t in TASKS}  # type: ignore[index]
    for task_id, ti in cluster.task_instances("partition", run_id).items():
        assert (ti.state, ti.try_number, ti.hostname) == ("running", 1, "w1@h1"), task_id
    multihost.start_worker("h2", "w2", "work")
    multihost.start_worker("h3", "w3", "work")
    assert not any(process_gone(pid) for pid in old_pids.values())

    lab.cut("h1")
    cut_at = time.time()
    # until every second try starts: note when each old task's pid is first seen gone
    old_gone_seen: dict[str, float] = {}
    second: dict[str, float] = {}
    deadline = time.monotonic() + ZOMBIE_THRESHOLD + DETECTION + SCHEDULING_SLACK + 20
    while len(second) < len(TASKS):
        for task_id in TASKS:
            started = _started(marks, task_id, 2)
            if started is not None:
                second.setdefault(task_id, started[1])
            elif task_id not in old_gone_seen and process_gone(old_pids[task_id]):
                old_gone_seen[task_id] = time.time()
        assert time.monotonic() < deadline, (
            f"second tries started: {sorted(second)} ({time.time() - cut_at:.1f} s after "
            f"the cut; old tasks gone: {sorted(old_gone_seen)})\n{cluster.logs()}")
        time.sleep(0.02)

    for task_id in TASKS:
        # no two tries at once: the old task was gone, and its TERM trap had run, before
        # the new try's first line
        assert task_id in old_gone_seen and old_gone_seen[task_id] < second[task_id], (
            f"{task_id} try 1 (pid {old_pids[task_id]}) still ran when try 2 started\n"
            f"{cluster.logs()}")
        old_end = marks / f"end.{task_id}.1"
        assert old_end.exists(), f"{task_id} try 1 was not ended by SIGTERM (no trap)"
        ended = float(old_end.read_text())
        assert ended < second[task_id]
        # ... and it ended by its own supervisor's lease, before the watchdog could act
        assert ended - cut_at < ZOMBIE_THRESHOLD, ended - cut_at
        # the retry came within zombie_threshold + the detection interval (+ scheduling)
        latency = second[task_id] - cut_at
        assert latency <= ZOMBIE_THRESHOLD + DETECTION + SCHEDULING_SLACK, latency
    for task_id, ti in cluster.task_instances("partition", run_id).items():
        assert ti.try_number == 2 and ti.hostname in OTHERS, (task_id, ti.state,
                                                               ti.try_number, ti.hostname)

    lab.restore("h1")
    assert multihost.wait_for_run("partition", run_id, timeout=60) == "success", cluster.logs()
    # the old supervisors, back on the network, wrote their failures late: they lost
    wait_until(lambda: old_worker.log_path.read_bytes().count(b"lost: the row had moved on")
               == len(TASKS), 60, interval=0.2,
               message="the old supervisors' late writes to lose their compare-and-set")
    assert old_worker.log_path.read_text(errors="replace").count(
        "heartbeat lease lost: no database") >= len(TASKS)
    for task_id, ti in cluster.task_instances("partition", run_id).items():
        assert (ti.state, ti.try_number) == ("success", 2), task_id
        assert ti.hostname in OTHERS, (task_id, ti.hostname)
        assert not (marks / f"start.{task_id}.3").exists()
        assert len((marks / f"progress.{task_id}.2").read_text().split()) == 10
