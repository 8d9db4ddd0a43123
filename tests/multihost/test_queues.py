"""Workers on three hosts with different queues: each task runs only on a host whose worker
consumes the task's queue. Every host is a network namespace with its own hostname, which
its worker's Celery node name (``NAME@%h``), recorded as the task instance's hostname,
carries."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.multihost.conftest import MultiHost
from tests.support.netns import HostLab, our_links, our_namespaces

# one xdist process runs the multihost tests, one lab at a time
pytestmark = [pytest.mark.multihost, pytest.mark.integration, pytest.mark.xdist_group("multihost")]

#: host -> the queues its worker consumes
QUEUES = {"h1": "alpha", "h2": "beta", "h3": "gamma,alpha"}
#: queue -> the workers (Celery node names) that may run its tasks
CONSUMERS = {"alpha": {"w1@h1", "w3@h3"}, "beta": {"w2@h2"}, "gamma": {"w3@h3"}}

DAG = '''
import socket

import pendulum
from squall import DAG, PythonOperator


def where():
    return socket.gethostname()


with DAG("spread", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
    for queue in ("alpha", "beta", "gamma"):
        for i in range(4):
            PythonOperator(task_id=f"{queue}_{i}", queue=queue, python_callable=where)
'''


def test_each_host_is_a_namespace_with_its_own_hostname(lab: HostLab) -> None:
    """The lab's plumbing: a process on a host sees the host's hostname and reaches the
    bridge address; the lab's names are all there (its teardown checks they are gone)."""
    with socket.socket() as listener:
        listener.bind((lab.gateway, 0))
        listener.listen(4)
        listener.settimeout(30)
        port = listener.getsockname()[1]
        send = (f"import socket; s = socket.create_connection(({lab.gateway!r}, {port}), 5); "
                "s.sendall(socket.gethostname().encode()); s.close()")
        for name in ("h1", "h2", "h3"):
            out = subprocess.run(lab.command(name, [sys.executable, "-c", send]),
                                 capture_output=True, text=True, timeout=30, check=False)
            assert out.returncode == 0, out
            conn, (peer, _) = listener.accept()
            with conn:
                assert conn.recv(100).decode() == name
            assert peer == lab.host(name).address
    assert {lab.host(n).netns for n in ("h1", "h2", "h3")} <= set(our_namespaces())
    assert {lab.bridge, *(lab.host(n).veth for n in ("h1", "h2", "h3"))} <= set(our_links())


def test_tasks_land_only_on_hosts_that_consume_their_queue(multihost: MultiHost) -> None:
    cluster = multihost.cluster
    (cluster.dags_folder / "spread.py").write_text(DAG)
    for index, (host, queues) in enumerate(QUEUES.items(), start=1):
        multihost.start_worker(host, f"w{index}", queues)
    cluster.start_scheduler()
    run_id = cluster.trigger("spread")
    assert multihost.wait_for_run("spread", run_id, timeout=120) == "success", cluster.logs()

    tis = cluster.task_instances("spread", run_id)
    assert len(tis) == 12
    ran_on = {}
    for task_id, ti in tis.items():
        queue = task_id.split("_")[0]
        assert ti.state == "success", (task_id, ti.state)
        assert ti.queue == queue
        assert ti.hostname in CONSUMERS[queue], (task_id, ti.hostname, CONSUMERS[queue])
        ran_on[task_id] = ti.hostname
    assert {ran_on[f"beta_{i}"] for i in range(4)} == {"w2@h2"}
    assert {ran_on[f"gamma_{i}"] for i in range(4)} == {"w3@h3"}
