"""docker-compose.yml for real: the image built from deploy/Dockerfile, the project brought
up under Docker with two schedulers, two workers and Flower, DAG runs spread over both
workers, their task logs read through the API from the log volume (also after the workers
and the API are recreated), and Flower behind basic auth."""

from __future__ import annotations

import importlib.metadata
import time
from typing import Any

import httpx
import pytest

from tests.compose.conftest import (
    FANOUT_DAG_ID,
    FANOUT_TASKS,
    HEALTHY_TIMEOUT,
    SCHEDULERS,
    UP_TIMEOUT,
    WORKERS,
    Cluster,
    docker,
    exec_in,
    poll,
    wait_healthy,
)

# one xdist process runs them all, so one compose project and one image build serve them
pytestmark = [pytest.mark.compose, pytest.mark.integration, pytest.mark.timeout(900),
              pytest.mark.xdist_group("compose")]

RUN_TIMEOUT = 180.0
# run in a container: the status a worker's log server answers to an unsigned request
LOG_SERVER_STATUS = """
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(f"http://{sys.argv[1]}:8793/log/x.log", timeout=10)
    print("200")
except urllib.error.HTTPError as exc:
    print(exc.code)
"""


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
    for service in ("scheduler", "worker", "triggerer", "api", "flower"):
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

        # each worker's log server answers at http://<host>:8793 inside the compose network
        # (for an API without the log volume); unsigned, it refuses
        api_container = compose_cluster.project.service_containers("api")[0]["Id"]
        for host in sorted(hosts):
            proc = exec_in(api_container, ["python3", "-c", LOG_SERVER_STATUS, host])
            assert proc.stdout.strip() == "403", \
                f"the log server of {host} from the api container: {proc.stdout}{proc.stderr}"
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
        # the API reads them in the workers' log volume, which it cannot write
        proc = exec_in(api_container, ["touch", f"/opt/squall/logs/dag_id={FANOUT_DAG_ID}/x"])
        assert proc.returncode != 0 and "Read-only file system" in proc.stderr, proc


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


def test_flower_metrics_ask_for_basic_auth(compose_cluster: Cluster) -> None:
    """Flower alone serves /metrics to anyone; Squall's Flower asks for its login there too."""
    url = f"{compose_cluster.flower_url}/metrics"
    assert httpx.get(url, timeout=10).status_code == 401
    response = httpx.get(url, auth=compose_cluster.flower_auth, timeout=10)
    assert response.status_code == 200 and "flower_" in response.text, response.text[:300]


def test_redis_asks_for_its_password_and_no_command_line_shows_a_secret(
        compose_cluster: Cluster) -> None:
    """Redis refuses clients without the password; the password (and the admin's) is on no
    process's command line in any container (`ps` shows command lines to every user)."""
    project = compose_cluster.project
    (redis,) = project.service_containers("redis")
    refused = exec_in(redis["Id"], ["env", "-u", "REDISCLI_AUTH", "redis-cli", "ping"])
    assert "NOAUTH" in refused.stdout + refused.stderr, refused
    answered = exec_in(redis["Id"], ["redis-cli", "ping"])  # REDISCLI_AUTH is set there
    assert answered.stdout.strip() == "PONG", answered
    secrets_ = [project.env["REDIS_PASSWORD"], compose_cluster.admin[1],
                project.env["POSTGRES_PASSWORD"]]
    for service in ("redis", "scheduler", "worker", "api", "flower"):
        for c in project.service_containers(service):
            top = docker("top", c["Id"], "-o", "pid,args")
            assert top.returncode == 0, top.stderr
            for secret in secrets_:
                assert secret not in top.stdout, f"{service}: a secret on a command line"


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


# last: it replaces the workers (Flower would still list the old ones)
def test_old_logs_are_read_after_the_workers_and_the_api_are_recreated(
        compose_cluster: Cluster) -> None:
    """An upgrade (`docker-compose up -d` with a new image) replaces the containers: the
    recorded workers' host names are gone, their tries' logs are read in the log volume."""
    project = compose_cluster.project
    with compose_cluster.api() as client:
        runs = client.get(f"/api/v1/dags/{FANOUT_DAG_ID}/dagRuns").json()["dag_runs"]
        run_id = next((r["dag_run_id"] for r in runs if r["state"] == "success"), None)
        if run_id is None:
            run_id = trigger(client, FANOUT_DAG_ID)
            assert finished_run(client, FANOUT_DAG_ID, run_id)["state"] == "success"
        base = f"/api/v1/dags/{FANOUT_DAG_ID}/dagRuns/{run_id}/taskInstances"
        tis = client.get(base).json()["task_instances"]
        before = {ti["task_id"]: client.get(f"{base}/{ti['task_id']}/logs/1",
                                            params={"full_content": "true"}).json()["content"]
                  for ti in tis}
        assert all("slept" in before[f"sleep_{i}"] for i in range(FANOUT_TASKS)), before
    old = {c["Id"] for c in project.service_containers("worker")}
    old |= {c["Id"] for c in project.service_containers("api")}
    project.run("up", "--detach", "--no-build", "--no-deps", "--force-recreate",
                "--scale", f"worker={WORKERS}", "worker", "api", timeout=UP_TIMEOUT)
    wait_healthy(project, {"worker": WORKERS, "api": 1}, HEALTHY_TIMEOUT)
    new = {c["Id"] for c in project.service_containers("worker")}
    new |= {c["Id"] for c in project.service_containers("api")}
    assert not old & new, "the containers were not recreated"
    workers = {c["Config"]["Hostname"] for c in project.service_containers("worker")}
    assert not workers & {ti["hostname"].partition("@")[2] for ti in tis}, workers
    with compose_cluster.api() as client:
        for ti in tis:
            response = client.get(f"{base}/{ti['task_id']}/logs/1",
                                  params={"full_content": "true"})
            assert response.status_code == 200, (ti["hostname"], response.text)
            assert response.json()["content"] == before[ti["task_id"]]
