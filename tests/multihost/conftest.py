"""Fixtures of the multihost suite: a :class:`~tests.support.netns.HostLab` of network
namespaces per test, and a Squall cluster whose scheduler runs in the root namespace (on
127.0.0.1) and whose workers run on the lab's hosts, each with its own hostname, reaching
PostgreSQL and Redis through forwarders on the bridge address.

Needs root for ``ip netns``: without it the tests skip with the reason, and fail under
``CI``. The lab is removed at teardown even when the test failed; the teardown fails the
test when anything of it (namespace, veth, bridge, forwarder) is left.
"""

from __future__ import annotations

import os
import signal
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import _pg_clean, in_ci
from tests.support.cluster import Cluster, Proc
from tests.support.faults import settings_env
from tests.support.netns import HostLab, NetnsUnavailable, check_available, sweep_stale
from tests.support.services import RedisServer, wait_until

#: Small settings: lease = 10 - (max(2 x 0.5, 10 / 10) + 0.25) = 8.75 s
#: (squall/common/lease_terms.py)
SETTINGS: dict[str, dict[str, object]] = {
    "scheduler": {
        "job_heartbeat_sec": 0.5,
        "scheduler_heartbeat_sec": 0.5,
        "zombie_threshold": 10,
        "zombie_detection_interval": 1,
        "task_queued_timeout": 60,
        "scheduler_health_check_threshold": 10,
        "min_file_process_interval": 2,
        "dag_dir_list_interval": 2,
    },
    "celery": {"operation_timeout": 1},
}

_labs = count()


@pytest.fixture(scope="session")
def netns_permitted() -> None:
    """Fail under CI (skip elsewhere) when ``ip netns`` cannot be used; remove what earlier,
    crashed runs of this suite left behind."""
    try:
        check_available()
    except NetnsUnavailable as exc:
        if in_ci():
            pytest.fail(f"multihost tests need ip netns: {exc}; CI is set, so this is an "
                        "error, not a skip", pytrace=False)
        pytest.skip(f"multihost tests need ip netns: {exc}")
    sweep_stale()


@pytest.fixture
def lab(netns_permitted: None) -> Iterator[HostLab]:
    """Three hosts h1, h2, h3 on a bridge; removed at teardown, which fails the test when
    anything of it is left."""
    run = f"{os.getpid()}{string.ascii_lowercase[next(_labs) % 26]}"
    the_lab = HostLab(run=run, hosts=3)
    try:
        the_lab.create()
        yield the_lab
    finally:
        the_lab.destroy()  # raises AssertionError naming what is left


@dataclass
class MultiHost:
    """The cluster (scheduler and CLI on 127.0.0.1) and the lab its workers run on."""

    cluster: Cluster
    lab: HostLab
    host_db_url: str
    host_redis: str  # redis://GATEWAY:PORT

    def start_worker(self, host: str, name: str, queues: str, concurrency: int = 2,
                     wait: bool = True) -> Proc:
        """``squall celery worker -q QUEUES -n NAME@%h`` on ``host`` (so its Celery node name,
        recorded as the task instance's hostname, is ``NAME@HOST``)."""
        cluster = self.cluster
        env = cluster.env
        env.update({
            "SQUALL__DATABASE__SQL_ALCHEMY_CONN": self.host_db_url,
            "SQUALL__CELERY__BROKER_URL": f"{self.host_redis}/0",
            "SQUALL__CELERY__RESULT_BACKEND": f"{self.host_redis}/1",
            # SIGABRT makes a process print every thread's stack (see dump_stacks)
            "PYTHONFAULTHANDLER": "1",
        })
        log_path = cluster.home / f"{name}.log"
        argv = [sys.executable, "-m", "squall", "celery", "worker", "-q", queues,
                "-c", str(concurrency), "-n", f"{name}@%h"]
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(self.lab.command(host, argv), env=env,
                                       stdout=log_file, stderr=subprocess.STDOUT,
                                       start_new_session=True, cwd=cluster.home)
        proc = Proc(name, process, log_path)
        cluster.procs.append(proc)
        if wait:
            wait_until(lambda: b"ready" in proc.log_path.read_bytes()
                       or proc.process.poll() is not None, 60,
                       message=f"worker {name} on {host} to be ready")
            assert proc.process.poll() is None, cluster.logs(name)
        return proc


    def dump_stacks(self) -> None:
        """Make every pool process of every worker print its threads' stacks into its
        worker's log (faulthandler on SIGABRT), for a test that found one stuck; the
        processes die of it."""
        for proc in self.cluster.procs:
            if proc.name == "scheduler" or proc.process.poll() is not None:
                continue
            children = subprocess.run(["pgrep", "-P", str(proc.process.pid)],
                                      capture_output=True, text=True, check=False)
            for pid in children.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGABRT)
                except ProcessLookupError:
                    pass
        time.sleep(1)  # let them write; nothing waits on this but the failure report

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        """:meth:`Cluster.wait_for_run`; when it times out, the workers' pool processes
        dump their stacks first (the logs in the failure then show where they were)."""
        try:
            return self.cluster.wait_for_run(dag_id, run_id, timeout=timeout)
        except AssertionError:
            self.dump_stacks()
            raise AssertionError(f"run {dag_id} {run_id} not finished after {timeout} s; "
                                 f"stacks dumped:\n{self.cluster.logs(tail=150)}") from None


def _kill_all(cluster: Cluster) -> None:
    """SIGKILL every process group the cluster started (the hosts' processes included:
    ``ip netns exec`` and ``unshare`` exec the worker, so its pid leads the group)."""
    for proc in cluster.procs:
        proc.stopped = True
        try:
            os.killpg(proc.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for proc in cluster.procs:
        proc.process.wait(10)
    if cluster._factory is not None:
        cluster._factory.kw["bind"].dispose()


@pytest.fixture
def multihost(request: pytest.FixtureRequest, lab: HostLab, tmp_path: Path
              ) -> Iterator[MultiHost]:
    """A cluster on the session's PostgreSQL test database (cleaned) and private Redis
    (flushed), with forwarders from the lab's bridge to both; its processes are killed
    before the lab is removed."""
    redis_server: RedisServer = request.getfixturevalue("redis_server")
    redis_server.flushall()
    engine = request.getfixturevalue("_pg_engine")
    _pg_clean(engine)
    url = make_url(engine.url.render_as_string(hide_password=False))
    pg_forward = lab.forward(url.port or 5432)
    redis_forward = lab.forward(redis_server.port)
    host_db_url = url.set(host=lab.gateway, port=pg_forward.port).render_as_string(
        hide_password=False)
    cluster = Cluster(home=tmp_path / "home", db_url=url.render_as_string(hide_password=False),
                      broker_url=redis_server.db_url(0), result_backend=redis_server.db_url(1),
                      extra_env=settings_env(SETTINGS))
    try:
        yield MultiHost(cluster=cluster, lab=lab, host_db_url=host_db_url,
                        host_redis=f"redis://{lab.gateway}:{redis_forward.port}")
    finally:
        _kill_all(cluster)
