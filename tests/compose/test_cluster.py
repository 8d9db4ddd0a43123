"""docker-compose.yml for real: the image built from deploy/Dockerfile, the project brought
up under Docker with two schedulers, two workers and Flower, DAG runs spread over both
workers, their task logs read through the API from the workers' log servers, and Flower
behind basic auth."""

from __future__ import annotations

import importlib.metadata
import time
from typing import Any

import httpx
import pytest

from tests.compose.conftest import (
    FANOUT_DAG_ID,
    FANOUT_TASKS,
    SCHEDULERS,
    WORKERS,
    Cluster,
    docker,
    exec_in,
    poll,
)

# one xdist process runs them all, so one compose project and one image build serve them
pytestmark = [pytest.mark.compose, pytest.mark.integration, pytest.mark.timeout(900),
              pytest.mark.xdist_group("compose")]

RUN_TIMEOUT = 180.0


def squall_version() -> str:
    return importlib.metadata.version("squall")


def test_the_image_runs_squall_as_a_non_root_user(squall_image: str) -> None:
    proc = docker("run", "--rm", "--entrypoint", "id", squall_image)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("uid=50000(squall)"), proc.stdout
    proc = docker("run", "--rm", squall_image, "version")  # the entrypoint is squall
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == squall_version(), proc.stdout
    proc = docker("image", "inspect", "--format",
                  "{{.Config.User}} {{json .Config.Entrypoint}} {{.Config.Env}}", squall_image)
    assert proc.stdout.startswith('squall ["squall"]'), proc.stdout
    assert "SQUALL_HOME=/opt/squall" in proc.stdout


def test_every_service_is_healthy_and_runs_as_squall(compose_cluster: Cluster) -> None:
    project = compose_cluster.project
    for service in ("scheduler", "worker", "api", "flower"):
        containers = project.service_containers(service)
        expected = {"worker": WORKERS, "scheduler": SCHEDULERS}.get(service, 1)
        assert len(containers) == expected, service
        for c in containers:
            assert c["State"]["Health"]["Status"] == "healthy", (service, c["State"])
            proc = exec_in(c["Id"], ["id", "-un"])
            assert proc.stdout.strip() == "squall", (service, proc.stdout, proc.stderr)
    health = httpx.get(f"{compose_cluster.api_url}/api/v1/health", timeout=10).json()
    assert health["metadatabase"]["status"] == "healthy", health
    assert health["scheduler"]["status"] == "healthy", health


def trigger(client: httpx.Client, dag_id: str) -> str:
    """Unpause the DAG (once the scheduler has parsed it) and trigger a run; its run id."""
    poll(f"{dag_id} listed by the API",
         lambda: client.get(f"/api/v1/dags/{dag_id}").status_code == 200, 120)
    response = client.patch(f"/api/v1/dags/{dag_id}", json={"is_paused": False})
    assert response.status_code == 200, response.text
    response = client.post(f"/api/v1/dags/{dag_id}/dagRuns", json={"conf": {}})
    assert response.status_code == 200, response.text
    return str(response.json()["dag_run_id"])


def finished_run(client: httpx.Client, dag_id: str, run_id: str) -> dict[str, Any]:
    def state() -> dict[str, Any] | None:
        response = client.get(f"/api/v1/dags/{dag_id}/dagRuns/{run_id}")
        response.raise_for_status()
        run = dict(response.json())
        return run if run["state"] in ("success", "failed") else None

    return dict(poll(f"{dag_id} run {run_id} finished", state, RUN_TIMEOUT))


def test_a_dag_run_spreads_over_both_workers_and_its_logs_are_read_through_the_api(
        compose_cluster: Cluster) -> None:
    with compose_cluster.api() as client:
        # an example (SQUALL_LOAD_EXAMPLES=true) and a DAG of the mounted DAG folder
        example_run = trigger(client, "example_bash_operator")
        run_id = trigger(client, FANOUT_DAG_ID)
        assert finished_run(client, "example_bash_operator", example_run)["state"] == "success"
        run = finished_run(client, FANOUT_DAG_ID, run_id)
        response = client.get(f"/api/v1/dags/{FANOUT_DAG_ID}/dagRuns/{run_id}/taskInstances")
        response.raise_for_status()
        tis = response.json()["task_instances"]
        states = {ti["task_id"]: ti["state"] for ti in tis}
        assert run["state"] == "success", states
        assert len(tis) == FANOUT_TASKS + 2
        assert set(states.values()) == {"success"}, states

        # each worker records its node name worker@<container host name>
        hosts = {ti["hostname"].partition("@")[2] for ti in tis}
        worker_hosts = {c["Config"]["Hostname"]
                        for c in compose_cluster.project.service_containers("worker")}
        assert hosts == worker_hosts, (hosts, worker_hosts)

        # the API reads the log from the worker that ran the try, at http://<host>:8793:
        # that host name resolves inside the compose network
        api_container = compose_cluster.project.service_containers("api")[0]["Id"]
        for host in sorted(hosts):
            proc = exec_in(api_container, ["python3", "-c",
                                           "import socket, sys; "
                                           "print(socket.gethostbyname(sys.argv[1]))", host])
            assert proc.returncode == 0, f"{host} does not resolve in the api container: " \
                                         f"{proc.stderr}"
        by_host: dict[str, dict[str, Any]] = {}
        for ti in tis:
            by_host.setdefault(ti["hostname"], ti)
        for hostname, ti in by_host.items():
            url = (f"/api/v1/dags/{FANOUT_DAG_ID}/dagRuns/{run_id}/taskInstances/"
                   f"{ti['task_id']}/logs/{ti['try_number']}")
            response = client.get(url, params={"full_content": "true"})
            assert response.status_code == 200, (hostname, response.text)
            content = response.json()["content"]
            if ti["task_id"].startswith("sleep_"):
                assert f"slept {ti['task_id'].removeprefix('sleep_')} on " \
                       f"{hostname.partition('@')[2]}" in content, content
            # the API has no log folder of its own: it came from the worker's log server
            proc = exec_in(api_container, ["sh", "-c", "ls /opt/squall/logs | wc -l"])
            assert proc.stdout.strip() == "0", proc.stdout


def test_flower_answers_behind_basic_auth(compose_cluster: Cluster) -> None:
    url = f"{compose_cluster.flower_url}/api/workers"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, auth=("flower", "wrong"), timeout=10).status_code == 401

    def workers() -> dict[str, Any] | None:
        response = httpx.get(url, params={"refresh": "true"}, auth=compose_cluster.flower_auth,
                             timeout=30)
        assert response.status_code == 200, response.text
        found = response.json()
        return found if len(found) == WORKERS else None

    found = poll("Flower sees both workers", workers, 60, interval=2)
    assert all(name.startswith("worker@") for name in found), found


def test_squall_init_runs_again_unchanged(compose_cluster: Cluster) -> None:
    """An upgrade re-runs squall-init: the migration is a no-op, the admin user is kept."""
    started = time.monotonic()
    proc = compose_cluster.project.run("run", "--rm", "--no-deps", "squall-init", timeout=180)
    output = proc.stdout + proc.stderr
    assert "user admin exists; left as it is" in output, output
    assert "done" in output, output
    assert time.monotonic() - started < 180
    with compose_cluster.api() as client:
        assert client.get("/api/v1/pools/default_pool").status_code == 200
